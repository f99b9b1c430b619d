"""UNet 3+ (Huang et al. 2020): full-scale skip connections.

``(N, C, H, W) -> (N, K, H, W)`` logits; ``H`` and ``W`` must be multiples of
``2**(num_layers-1)``.  The encoder is FlexUNet's (level ``i``: two convolutions
with ``base_filters * 2**i`` channels, per-level kernels/dilations/dropout, 2x2
max-pool).  Decoder node ``d`` (``d = L-2 .. 0``, ``L = num_layers``; node
``L-1`` is the bridge) gathers ``L`` inputs, each reduced by a 3x3 convolution
to ``base_filters`` channels: the shallower encoder levels ``i < d``
max-pooled by ``2**(d-i)``, encoder level ``d`` as is, and the deeper decoder
nodes (and the bridge) bilinearly upsampled to node ``d``'s size.  The
``L * base_filters`` concatenated channels are fused by a 3x3 convolution;
the head is a 1x1 convolution on node 0.  The paper's deep supervision and
classification-guided module are left out.
"""
from __future__ import annotations

import torch
from torch import nn

from ..flexunet import ConvBlock, level_dilations, level_kernels
from ..registry import register_model
from ._common import conv_norm_act, finish, init_weights, level_filters, resize_to


class UNet3Plus(nn.Module):
    """UNet 3+; arguments as :class:`~flexunet.models.flexunet.FlexUNet`.

    Shapes: ``(N, C, H, W) -> (N, K, H, W)`` logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 3, base_filters: int = 16,
                 base_kernels: tuple[int, int] = (3, 3), num_layers: int = 5, dropout_rate: float = 0.0,
                 dilation: tuple[int, int] = (1, 1), batchnorm: bool = False, activation: str = "relu"):
        super().__init__()
        filters = level_filters(base_filters, num_layers)
        kernels = level_kernels(tuple(base_kernels), num_layers)
        dilations = level_dilations(tuple(dilation), num_layers)
        self.num_layers = num_layers
        self.encoders = nn.ModuleList()
        cin = in_channels
        for i in range(num_layers):
            self.encoders.append(ConvBlock(cin, filters[i], kernels[i], dilations[i], dropout_rate * i,
                                           batchnorm, activation))
            cin = filters[i]
        cat = base_filters
        fused = cat * num_layers
        self.branches = nn.ModuleList()  # branches[d][j]: input j of decoder node d
        self.fuse = nn.ModuleList()
        for d in range(num_layers - 1):
            srcs = [filters[j] if j <= d or j == num_layers - 1 else fused for j in range(num_layers)]
            self.branches.append(nn.ModuleList(
                conv_norm_act(c, cat, 3, norm=batchnorm, act=activation) for c in srcs))
            self.fuse.append(conv_norm_act(fused, fused, 3, norm=batchnorm, act=activation))
        self.head = nn.Conv2d(fused if num_layers > 1 else filters[0], num_classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, K, H, W)`` logits."""
        enc = []
        for i, block in enumerate(self.encoders):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2, ceil_mode=True))
            enc.append(x)
        last = self.num_layers - 1
        nodes = {last: enc[last]}
        for d in reversed(range(last)):
            parts = []
            for j, branch in enumerate(self.branches[d]):
                if j < d:
                    src = nn.functional.max_pool2d(enc[j], 2 ** (d - j), ceil_mode=True)
                elif j == d:
                    src = enc[d]
                else:
                    src = resize_to(nodes[j], enc[d])
                parts.append(branch(src))
            nodes[d] = self.fuse[d](torch.cat(parts, dim=1))
        return self.head(nodes[0])


@register_model("TensorFlowFlexUNet3Plus", aliases=("unet3plus", "unet3+", "unet_3plus"))
def build_unet3plus(cfg) -> UNet3Plus:
    """UNet 3+: full-scale skip connections into every decoder node."""
    model = UNet3Plus(in_channels=cfg.image_channels, num_classes=cfg.num_classes, base_filters=cfg.base_filters,
                      base_kernels=tuple(cfg.base_kernels), num_layers=cfg.num_layers,
                      dropout_rate=cfg.dropout_rate, dilation=tuple(cfg.dilation), batchnorm=cfg.normalization,
                      activation=cfg.activation)
    return finish(model, cfg)
