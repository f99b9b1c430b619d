"""Swin-UNETR (Hatamizadeh et al. 2022) from MONAI in 2D: a Swin-Transformer encoder with a CNN decoder.

``(N, C, H, W) -> (N, K, H, W)`` logits.  The patch embedding (2x2) and four
Swin stages downsample by 32 in all, so ``H`` and ``W`` must be multiples of
32; ``num_layers`` is ignored (the stage count is fixed at (2, 2, 2, 2) blocks
with (3, 6, 12, 24) heads, window 7).  ``feature_size`` (the embedding width,
which MONAI requires to be a multiple of 12) is ``base_filters`` rounded up to
a multiple of 12: 12 for 8, 24 for 16, 36 for 32.  MONAI's transformer blocks
need the ``einops`` package.
"""
from __future__ import annotations

import importlib.util

from ...errors import ConfigError
from ..registry import register_model
from ._common import check_size, finish

NAME = "TensorFlowFlexSwinUNet"


def feature_size(base_filters: int) -> int:
    """``base_filters`` rounded up to a multiple of 12 (MONAI's requirement), at least 12."""
    return max(12, -(-base_filters // 12) * 12)


@register_model(NAME, aliases=("swin_unet", "swinunet", "swin_unetr", "swinunetr"), min_size=64)
def build_swin_unet(cfg):
    """Swin-UNETR (MONAI, 2D): Swin-Transformer encoder, CNN decoder; sizes multiple of 32."""
    if importlib.util.find_spec("einops") is None:
        raise ConfigError(f"[model] model = {NAME!r} needs the einops package (pip install einops)")
    from monai.networks.nets import SwinUNETR

    check_size(cfg, 32, NAME)
    model = SwinUNETR(in_channels=cfg.image_channels, out_channels=cfg.num_classes, spatial_dims=2,
                      feature_size=feature_size(cfg.base_filters), depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24),
                      window_size=7, drop_rate=cfg.dropout_rate, norm_name="instance")
    return finish(model, cfg)
