"""Sharp U-Net (Zunair & Ben Hamza 2021): skips sharpened by a fixed depthwise filter before concatenation.

``(N, C, H, W) -> (N, K, H, W)`` logits.  Encoder, decoder and head are
FlexUNet's (per-level kernels, dilations, dropout, optional BatchNorm), so ``H``
and ``W`` must be multiples of ``2**(num_layers-1)``.  Each skip tensor goes
through a non-trainable depthwise 3x3 convolution with the sharpening kernel
``identity - Laplacian`` (centre 9, eight neighbours -1, sum 1: the mean level
is kept, edges are boosted), which narrows the semantic gap between the
encoder's and the decoder's features.  The kernel is a non-persistent buffer:
it is not in the state dict.
"""
from __future__ import annotations

import torch
from torch import nn

from ..flexunet import FlexUNet
from ..registry import register_model
from ._common import finish, flex_unet_forward, flexunet_kwargs

#: 3x3 sharpening kernel: identity minus the 8-neighbour Laplacian
SHARPEN_KERNEL = ((-1.0, -1.0, -1.0), (-1.0, 9.0, -1.0), (-1.0, -1.0, -1.0))


class Sharpen(nn.Module):
    """Fixed depthwise sharpening: ``(N, C, H, W) -> (N, C, H, W)``, zero 'same' padding."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", torch.tensor(SHARPEN_KERNEL).view(1, 1, 3, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        weight = self.kernel.to(dtype=x.dtype).expand(c, 1, 3, 3)
        return nn.functional.conv2d(x, weight, padding=1, groups=c)


class SharpUNet(FlexUNet):
    """FlexUNet whose skip connections are sharpened (see module doc); same arguments as FlexUNet."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sharpen = Sharpen()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, K, H, W)`` logits."""
        return flex_unet_forward(self, x, skip=self.sharpen)


@register_model("TensorFlowFlexSharpUNet", aliases=("sharpunet", "sharp_unet"))
def build_sharpunet(cfg) -> SharpUNet:
    """Sharp U-Net: FlexUNet with skips through a fixed Laplacian sharpening filter."""
    return finish(SharpUNet(**flexunet_kwargs(cfg)), cfg)
