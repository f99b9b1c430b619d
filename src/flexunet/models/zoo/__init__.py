"""Model zoo: the original TensorFlowFlexUNet's other architectures (and UNet++), one module each.

Importing this package registers every architecture with
:mod:`flexunet.models.registry`; the registry imports it lazily.  All models
map ``(N, C, H, W)`` images to ``(N, K, H, W)`` logits.
"""
from . import (  # noqa: F401  (imported for their @register_model side effect)
    attention_unet,
    deeplabv3plus,
    efficient_unet,
    multiresunet,
    sharpunet,
    swin_unet,
    transunet,
    u2net,
    unet3plus,
    unetplusplus,
)
