"""U²-Net (Qin et al. 2020): a U-Net of RSU blocks (residual U-blocks), side outputs fused into one.

``(N, C, H, W) -> (N, K, H, W)`` logits.  The outer U has ``L = num_layers``
stages; stage ``i`` is an RSU of height ``L + 1 - i`` for ``i < L - 2`` and
the dilated RSU-4F for the last two (``L = 6``: RSU-7, 6, 5, 4, 4F, 4F, the
paper's layout; the default benchmark's ``L = 5`` gives the reduced RSU-6, 5,
4, 4F, 4F).  Stage widths are ``base_filters * 2**min(i, 3)``, mid widths and
decoder widths follow the paper's ratios, so ``num_layers = 6`` with
``base_filters = 64`` is the full U²-Net (K side outputs instead of 1).  Every
decoder stage and the last encoder stage emit a 3x3-conv side output, upsampled
to ``H x W``; a 1x1 convolution fuses them into the returned logits.  Use
:meth:`U2Net.forward_with_sides` for deep supervision.  All convolutions are
3x3 with optional BatchNorm and the configured activation; RSUs upsample
bilinearly to the skip's size, so any ``H``, ``W`` works.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_model
from ._common import conv_norm_act, finish, init_weights, resize_to


class RSU(nn.Module):
    """Residual U-block RSU-``height``: ``(N, cin, H, W) -> (N, cout, H, W)``.

    An input convolution to ``cout``, then a small U-Net of ``height - 1``
    encoder convolutions with ``mid`` channels (2x2 max-pool between them; with
    ``dilated`` no pooling but dilations 1, 2, 4, ...), a dilated bottom
    convolution and ``height - 1`` decoder convolutions on the concatenated
    skips; the U's output is added to the input convolution's.
    """

    def __init__(self, height: int, cin: int, mid: int, cout: int, norm: bool, act: str, dilated: bool = False):
        super().__init__()
        self.dilated = dilated
        dil = [2 ** i if dilated else 1 for i in range(height - 1)]

        def cna(a, b, d):
            return conv_norm_act(a, b, 3, dilation=d, norm=norm, act=act)

        self.conv_in = cna(cin, cout, 1)
        self.enc = nn.ModuleList([cna(cout, mid, dil[0])] + [cna(mid, mid, d) for d in dil[1:]])
        self.bottom = cna(mid, mid, 2 ** (height - 1) if dilated else 2)
        self.dec = nn.ModuleList([cna(2 * mid, mid, d) for d in reversed(dil[1:])] + [cna(2 * mid, cout, dil[0])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xin = self.conv_in(x)
        feats = []
        h = xin
        for i, conv in enumerate(self.enc):
            if i > 0 and not self.dilated:
                h = nn.functional.max_pool2d(h, 2, ceil_mode=True)
            h = conv(h)
            feats.append(h)
        h = self.bottom(h)
        for conv in self.dec:
            skip = feats.pop()
            h = conv(torch.cat([resize_to(h, skip), skip], dim=1))
        return h + xin


class U2Net(nn.Module):
    """U²-Net with ``num_layers`` outer stages (see module doc).

    Shapes: ``(N, C, H, W) -> (N, K, H, W)`` fused logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 3, base_filters: int = 16, num_layers: int = 5,
                 batchnorm: bool = False, activation: str = "relu"):
        super().__init__()
        n = num_layers
        outs = [base_filters * 2 ** min(i, 3) for i in range(n)]
        heights = [n + 1 - i if i < n - 2 else 4 for i in range(n)]
        dilated = [i >= n - 2 for i in range(n)]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for i in range(n):
            mid = outs[i] // (2 if i == 0 or dilated[i] else 4)
            self.encoders.append(RSU(heights[i], cin, max(1, mid), outs[i], batchnorm, activation, dilated[i]))
            cin = outs[i]
        self.decoders = nn.ModuleList()  # decoders[i] is the stage at level i, i = 0 .. n-2
        dec_outs = [outs[max(i - 1, 0)] for i in range(n - 1)]
        for i in range(n - 1):
            below = dec_outs[i + 1] if i + 1 < n - 1 else outs[n - 1]
            mid = dec_outs[i] // (4 if i == 0 else 2)
            self.decoders.append(RSU(heights[i], below + outs[i], max(1, mid), dec_outs[i], batchnorm, activation,
                                     dilated[i]))
        side_in = dec_outs + [outs[n - 1]]
        self.sides = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=1) for c in side_in)
        self.fuse = nn.Conv2d(n * num_classes, num_classes, 1)
        init_weights(self)

    def forward_with_sides(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(N, C, H, W) ->`` (fused ``(N, K, H, W)``, ``num_layers`` side logits ``(N, K, H, W)``, shallow first)."""
        size = x.shape[-2:]
        enc = []
        for i, stage in enumerate(self.encoders):
            x = stage(x if i == 0 else nn.functional.max_pool2d(x, 2, ceil_mode=True))
            enc.append(x)
        feats = [enc[-1]]
        h = enc[-1]
        for i in reversed(range(len(self.decoders))):
            h = self.decoders[i](torch.cat([resize_to(h, enc[i]), enc[i]], dim=1))
            feats.insert(0, h)
        sides = [resize_to(conv(f), size) for conv, f in zip(self.sides, feats)]
        return self.fuse(torch.cat(sides, dim=1)), sides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, K, H, W)`` fused logits."""
        return self.forward_with_sides(x)[0]


@register_model("TensorFlowFlexU2Net", aliases=("u2net", "u2_net", "u^2net"))
def build_u2net(cfg) -> U2Net:
    """U²-Net: RSU blocks in an outer U, side outputs fused by a 1x1 convolution."""
    model = U2Net(in_channels=cfg.image_channels, num_classes=cfg.num_classes, base_filters=cfg.base_filters,
                  num_layers=cfg.num_layers, batchnorm=cfg.normalization, activation=cfg.activation)
    return finish(model, cfg)
