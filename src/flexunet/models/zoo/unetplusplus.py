"""UNet++ (Zhou et al. 2018) from MONAI's BasicUNetPlusPlus: nested dense skip pathways.

``(N, C, H, W) -> (N, K, H, W)`` logits.  MONAI's network has a fixed depth of
five levels (four 2x2 max-pools, so ``H`` and ``W`` must be multiples of 16);
``num_layers`` is therefore ignored.  Level channels are ``base_filters * 2**i``;
blocks use instance norm and the configured activation; deep supervision is
off (one output, the last nested decoder node).
"""
from __future__ import annotations

import torch
from monai.networks.nets import BasicUNetPlusPlus
from torch import nn

from ..registry import register_model
from ._common import check_size, finish, level_filters, monai_act

NAME = "unetplusplus"


class UNetPlusPlus(nn.Module):
    """Wraps :class:`monai.networks.nets.BasicUNetPlusPlus` so ``forward`` returns one tensor, not a list."""

    def __init__(self, in_channels: int, num_classes: int, base_filters: int, activation: str = "relu",
                 dropout: float = 0.0):
        super().__init__()
        feats = (*level_filters(base_filters, 5), base_filters)
        self.net = BasicUNetPlusPlus(spatial_dims=2, in_channels=in_channels, out_channels=num_classes,
                                     features=feats, deep_supervision=False,
                                     act=(monai_act(activation), {}), dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, K, H, W)`` logits."""
        return self.net(x)[0]


@register_model(NAME, aliases=("TensorFlowFlexUNetPlusPlus", "unet++", "unet_plus_plus"))
def build_unetplusplus(cfg) -> UNetPlusPlus:
    """UNet++ (MONAI BasicUNetPlusPlus): nested dense skips, fixed 5 levels, instance norm."""
    check_size(cfg, 16, NAME)
    model = UNetPlusPlus(cfg.image_channels, cfg.num_classes, cfg.base_filters, cfg.activation, cfg.dropout_rate)
    return finish(model, cfg)
