"""TransUNet (Chen et al. 2021), compact: FlexUNet's CNN encoder, transformer layers on the bottleneck tokens,
FlexUNet's decoder.

``(N, C, H, W) -> (N, K, H, W)`` logits; ``H`` and ``W`` must be multiples of
``2**(num_layers-1)``.  The bridge features ``(N, D, h, w)`` with
``D = base_filters * 2**(num_layers-1)`` and ``h = H / 2**(num_layers-1)`` get a
learned position embedding (sized for ``image_height x image_width``, bilinearly
resized for other inputs) and pass as ``h*w`` tokens of width ``D`` through a
pre-norm :class:`torch.nn.TransformerEncoder` (4 layers of width
``d = min(D, 512)``, 1x1 convolutions in and out when ``D > 512``, GELU MLP of
``4*d``, heads of at least 16 channels, at most 8).  The original uses a ResNet-50 +
ViT-B/16 (12 layers); this keeps the idea at U-Net cost.
"""
from __future__ import annotations

import torch
from torch import nn

from ..flexunet import FlexUNet
from ..registry import register_model
from ._common import finish, flex_unet_forward, flexunet_kwargs, resize_to

DEPTH = 4
MAX_WIDTH = 512


def num_heads(dim: int) -> int:
    """Most heads (of 8, 6, 4, 3, 2) that divide ``dim`` with at least 16 channels each; else 1."""
    return next((h for h in (8, 6, 4, 3, 2) if dim % h == 0 and dim // h >= 16), 1)


class BottleneckTransformer(nn.Module):
    """``(N, D, h, w) -> (N, D, h, w)``: position embedding + transformer encoder over the ``h*w`` tokens.

    The tokens have width ``min(D, max_width)``; 1x1 convolutions project in and out when it is smaller.
    """

    def __init__(self, dim: int, grid: tuple[int, int], depth: int = DEPTH, dropout: float = 0.0,
                 max_width: int = MAX_WIDTH):
        super().__init__()
        width = min(dim, max_width)
        self.proj_in = nn.Conv2d(dim, width, 1) if width != dim else nn.Identity()
        self.proj_out = nn.Conv2d(width, dim, 1) if width != dim else nn.Identity()
        self.pos = nn.Parameter(torch.zeros(1, width, *grid))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(width, num_heads(width), 4 * width, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(width), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(x)
        n, d, h, w = x.shape
        tokens = (x + resize_to(self.pos, (h, w))).flatten(2).transpose(1, 2)  # (N, h*w, d)
        tokens = self.encoder(tokens)
        return self.proj_out(tokens.transpose(1, 2).reshape(n, d, h, w))


class TransUNet(FlexUNet):
    """FlexUNet with a :class:`BottleneckTransformer` after the bridge.

    Args: FlexUNet's, plus ``grid`` = bridge size ``(H, W) / 2**(num_layers-1)``
    at the configured image size and ``depth`` transformer layers.
    """

    def __init__(self, grid: tuple[int, int], depth: int = DEPTH, **kwargs):
        super().__init__(**kwargs)
        dim = kwargs.get("base_filters", 16) * 2 ** (self.num_layers - 1)
        self.transformer = BottleneckTransformer(dim, grid, depth, kwargs.get("dropout_rate", 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, K, H, W)`` logits."""
        return flex_unet_forward(self, x, bridge=self.transformer)


@register_model("TensorFlowFlexTransUNet", aliases=("transunet", "trans_unet"))
def build_transunet(cfg) -> TransUNet:
    """TransUNet: CNN encoder, transformer on the bottleneck tokens, U-Net decoder."""
    div = 2 ** (cfg.num_layers - 1)
    grid = (max(1, cfg.image_height // div), max(1, cfg.image_width // div))
    return finish(TransUNet(grid=grid, **flexunet_kwargs(cfg)), cfg)
