"""FlexUNet: the original TensorFlowFlexUNet's parameterisation in PyTorch.

Encoder level ``i = 0 .. num_layers-1`` has two ``same``-padded convolutions
with ``base_filters * 2**i`` filters, kernel ``max(3, base_kernel - 2*i)``,
dilation ``max(1, dilation - i)``, element-wise dropout ``dropout_rate * i`` between them and
optional BatchNorm after each; a 2x2 max-pool follows every level but the last
(the bridge).  The decoder mirrors it with 2x2 stride-2 transposed
convolutions and skip concatenation.  The head is a 1x1 convolution.

``forward`` returns logits ``(N, num_classes, H, W)``; the softmax of the
original's head is applied by the loss and by the predictor, which is the
PyTorch convention and numerically safer.  With the seed config the model has
exactly the original's 124,996,883 parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "mish": nn.Mish,
}


def level_kernels(base_kernels: tuple[int, int], num_layers: int) -> list[tuple[int, int]]:
    """Kernel size per level: 2 smaller per level, never below 3."""
    return [tuple(max(3, k - 2 * i) for k in base_kernels) for i in range(num_layers)]  # type: ignore[misc]


def level_dilations(dilation: tuple[int, int], num_layers: int) -> list[tuple[int, int]]:
    """Dilation per level: 1 smaller per level, never below 1."""
    return [tuple(max(1, d - i) for d in dilation) for i in range(num_layers)]  # type: ignore[misc]


class ConvBlock(nn.Sequential):
    """conv -> [BN] -> act -> dropout -> conv -> [BN] -> act; 'same' padding.

    The dropout zeroes single activations (``nn.Dropout``), as the original's Keras ``Dropout``
    does, not whole feature maps.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], dilation: tuple[int, int],
                 dropout: float, batchnorm: bool, activation: str):
        pad = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(act())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Conv2d(cout, cout, kernel, padding=pad, dilation=dilation))
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(act())
        super().__init__(*layers)


class FlexUNet(nn.Module):
    """Configurable U-Net.

    Args:
        in_channels: input channels C.
        num_classes: output classes K (background included).
        base_filters: filters at level 0, doubled per level.
        base_kernels: (kh, kw) at level 0.
        num_layers: levels including the bridge; H and W must be divisible by 2**(num_layers-1).
        dropout_rate: dropout at level i is dropout_rate * i.
        dilation: (dh, dw) at level 0.
        batchnorm: BatchNorm after each convolution.
        activation: name in :data:`ACTIVATIONS`.

    Shapes: ``(N, C, H, W) -> (N, K, H, W)`` logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 3, base_filters: int = 16,
                 base_kernels: tuple[int, int] = (9, 9), num_layers: int = 8, dropout_rate: float = 0.04,
                 dilation: tuple[int, int] = (1, 1), batchnorm: bool = False, activation: str = "relu"):
        super().__init__()
        kernels = level_kernels(tuple(base_kernels), num_layers)
        dilations = level_dilations(tuple(dilation), num_layers)
        filters = [base_filters * 2 ** i for i in range(num_layers)]
        self.num_layers = num_layers
        self.encoders = nn.ModuleList()
        cin = in_channels
        for i in range(num_layers):
            self.encoders.append(ConvBlock(cin, filters[i], kernels[i], dilations[i], dropout_rate * i,
                                           batchnorm, activation))
            cin = filters[i]
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(num_layers - 1)):
            self.ups.append(nn.ConvTranspose2d(filters[i + 1], filters[i], 2, stride=2))
            self.decoders.append(ConvBlock(2 * filters[i], filters[i], kernels[i], dilations[i], dropout_rate * i,
                                           batchnorm, activation))
        self.head = nn.Conv2d(filters[0], num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")  # he_normal
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x)
            if i < self.num_layers - 1:
                skips.append(x)
                x = self.pool(x)
        for up, dec in zip(self.ups, self.decoders):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


@register_model("TensorFlowFlexUNet", aliases=("flexunet", "unet"))
def build_flexunet(cfg) -> FlexUNet:
    """The original's configurable U-Net (transposed-conv decoder, skip concatenation)."""
    return FlexUNet(in_channels=cfg.image_channels, num_classes=cfg.num_classes, base_filters=cfg.base_filters,
                    base_kernels=tuple(cfg.base_kernels), num_layers=cfg.num_layers, dropout_rate=cfg.dropout_rate,
                    dilation=tuple(cfg.dilation), batchnorm=cfg.normalization, activation=cfg.activation)
