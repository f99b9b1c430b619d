"""Attention U-Net (Oktay et al. 2018) from MONAI: attention gates on the skip connections.

``(N, C, H, W) -> (N, K, H, W)`` logits.  Level ``i`` has ``base_filters * 2**i``
channels, ``num_layers`` levels joined by stride-2 convolutions, so ``H`` and
``W`` must be multiples of ``2**(num_layers-1)``.  MONAI's blocks always use
BatchNorm and ReLU with 3x3 kernels; ``dropout_rate`` is passed to every block.
"""
from __future__ import annotations

from monai.networks.nets import AttentionUnet

from ...errors import ConfigError
from ..registry import register_model
from ._common import check_size, finish, level_filters

NAME = "TensorFlowFlexAttentionUNet"


@register_model(NAME, aliases=("attention_unet", "attentionunet"))
def build_attention_unet(cfg) -> AttentionUnet:
    """Attention U-Net (MONAI): attention-gated skips, BatchNorm, strided-conv downsampling."""
    if cfg.num_layers < 2:
        raise ConfigError(f"[model] num_layers = {cfg.num_layers}: {NAME} needs at least 2")
    check_size(cfg, 2 ** (cfg.num_layers - 1), NAME)
    model = AttentionUnet(spatial_dims=2, in_channels=cfg.image_channels, out_channels=cfg.num_classes,
                          channels=level_filters(cfg.base_filters, cfg.num_layers),
                          strides=[2] * (cfg.num_layers - 1), kernel_size=3, up_kernel_size=3,
                          dropout=cfg.dropout_rate)
    return finish(model, cfg)
