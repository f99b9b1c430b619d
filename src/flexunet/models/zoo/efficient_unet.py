"""EfficientNet-B0 / -B7 U-Nets from MONAI's FlexibleUNet.

``(N, C, H, W) -> (N, K, H, W)`` logits.  The EfficientNet encoder (BatchNorm,
Swish, its own fixed widths) downsamples by 32, so ``H`` and ``W`` must be
multiples of 32; ``num_layers`` and ``normalization`` do not apply.  The
decoder's five stages have ``base_filters * (16, 8, 4, 2, 1)`` channels (MONAI's
default (256, 128, 64, 32, 16) for ``base_filters = 16``) and the configured
activation.  The encoder starts from random weights: ImageNet weights are
never downloaded.  ``[model] pretrained`` may name a local state dict of the
whole model or of the encoder alone (EfficientNet key names as in MONAI's
``EfficientNetBNFeatures``).

BatchNorm momentum is torch's default 0.1 in the encoder too, not EfficientNet's TF-style 0.01
(MONAI's default): with 0.01 the running statistics take hundreds of steps to follow the batch
statistics, and a 2.5-minute CPU training (about 100 steps) scored liver Dice 0 in eval mode while its
training loss fell (``bench/zoo_quality.py``: validation loss rising from the first epoch).
"""
from __future__ import annotations

from monai.networks.nets import FlexibleUNet
from torch import nn

from ..registry import register_model
from ._common import check_size, finish, monai_act

BN_MOMENTUM = 0.1


def build_efficient_unet(cfg, backbone: str, name: str) -> FlexibleUNet:
    """A FlexibleUNet on ``backbone`` (``efficientnet-b0`` .. ``efficientnet-b7``), pretrained=False."""
    check_size(cfg, 32, name)
    bf = cfg.base_filters
    model = FlexibleUNet(in_channels=cfg.image_channels, out_channels=cfg.num_classes, backbone=backbone,
                         pretrained=False, decoder_channels=(16 * bf, 8 * bf, 4 * bf, 2 * bf, bf), spatial_dims=2,
                         act=(monai_act(cfg.activation), {}), dropout=cfg.dropout_rate)
    for m in model.modules():  # torch's BatchNorm momentum, not EfficientNet's TF-style 0.01 (see module doc)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = BN_MOMENTUM
    return finish(model, cfg, submodules=("encoder",))


@register_model("TensorFlowFlexEfficientUNet", aliases=("efficientunet", "efficientnet_b0_unet"), min_size=64)
def build_efficientnet_b0_unet(cfg) -> FlexibleUNet:
    """EfficientNet-B0 encoder U-Net (MONAI FlexibleUNet), random init or local weights."""
    return build_efficient_unet(cfg, "efficientnet-b0", "TensorFlowFlexEfficientUNet")


@register_model("TensorFlowFlexEfficientNetB7UNet", aliases=("efficientnet_b7_unet", "efficientunet_b7"),
                min_size=64)
def build_efficientnet_b7_unet(cfg) -> FlexibleUNet:
    """EfficientNet-B7 encoder U-Net (MONAI FlexibleUNet), random init or local weights."""
    return build_efficient_unet(cfg, "efficientnet-b7", "TensorFlowFlexEfficientNetB7UNet")
