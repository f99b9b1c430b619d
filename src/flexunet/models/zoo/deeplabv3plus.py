"""DeepLabV3+ (Chen et al. 2018), compact: a ResNet-18-like encoder at output stride 16, ASPP, and the
low-level-feature decoder.

``(N, C, H, W) -> (N, K, H, W)`` logits.  Encoder: a stride-2 stem
(``base_filters``), then four stages of two basic residual blocks with
``base_filters * (2, 4, 8, 16)`` channels and strides 2, 2, 2, 1 (the last
dilated by 2 instead of striding, so features are at 1/16).  ASPP on them: a
1x1 branch, 3x3 branches with dilations 6, 12, 18 and an image-pooling branch,
each ``base_filters * 16`` channels, concatenated and projected by a 1x1
convolution (then dropout ``dropout_rate``).  Decoder: the 1/4 features of the
first stage reduced by 1x1 to ``3 * base_filters`` (48 for 16), concatenated
with the ASPP output upsampled to 1/4, two 3x3 convolutions, a 1x1 classifier
and bilinear upsampling to ``H x W``.  ``num_layers`` does not apply; any
``H``, ``W`` works (multiples of 16 keep the grids exact).  BatchNorm follows
``[model] normalization`` (never in the image-pooling branch, which has 1x1
spatial size); the last convolution (or BatchNorm) of each residual branch
starts at zero.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_model
from ._common import act_layer, conv_norm_act, finish, init_weights, resize_to

ASPP_RATES = (6, 12, 18)


class BasicBlock(nn.Module):
    """ResNet basic block: ``(N, cin, H, W) -> (N, cout, H/stride, W/stride)``."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, norm: bool, act: str):
        super().__init__()
        self.conv1 = conv_norm_act(cin, cout, 3, stride=stride, dilation=dilation, norm=norm, act=act)
        self.conv2 = conv_norm_act(cout, cout, 3, dilation=dilation, norm=norm, act=None)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else conv_norm_act(cin, cout, 1, stride=stride, norm=norm, act=None))
        self.act = act_layer(act)

    def zero_init(self) -> None:
        """Start the residual branch at zero (identity block)."""
        nn.init.zeros_(self.conv2[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: ``(N, cin, h, w) -> (N, cout, h, w)``."""

    def __init__(self, cin: int, cout: int, norm: bool, act: str, rates=ASPP_RATES, dropout: float = 0.0):
        super().__init__()
        self.branches = nn.ModuleList([conv_norm_act(cin, cout, 1, norm=norm, act=act)] +
                                      [conv_norm_act(cin, cout, 3, dilation=r, norm=norm, act=act) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_norm_act(cin, cout, 1, norm=False, act=act))
        self.project = nn.Sequential(conv_norm_act(cout * (len(rates) + 2), cout, 1, norm=norm, act=act),
                                     nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [b(x) for b in self.branches]
        parts.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(parts, dim=1))


class DeepLabV3Plus(nn.Module):
    """Compact DeepLabV3+ (see module doc). Shapes: ``(N, C, H, W) -> (N, K, H, W)`` logits."""

    def __init__(self, in_channels: int = 3, num_classes: int = 3, base_filters: int = 16, batchnorm: bool = False,
                 activation: str = "relu", dropout_rate: float = 0.0, blocks_per_stage: int = 2):
        super().__init__()
        bf = base_filters
        norm, act = batchnorm, activation
        self.stem = conv_norm_act(in_channels, bf, 3, stride=2, norm=norm, act=act)
        stages = []
        cin = bf
        for cout, stride, dilation in ((2 * bf, 2, 1), (4 * bf, 2, 1), (8 * bf, 2, 1), (16 * bf, 1, 2)):
            blocks = [BasicBlock(cin, cout, stride, 1 if stride > 1 else dilation, norm, act)]
            blocks += [BasicBlock(cout, cout, 1, dilation, norm, act) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        aspp_ch = 16 * bf
        low_ch = 3 * bf
        self.aspp = ASPP(cin, aspp_ch, norm, act, dropout=dropout_rate)
        self.low = conv_norm_act(2 * bf, low_ch, 1, norm=norm, act=act)
        self.decoder = nn.Sequential(conv_norm_act(aspp_ch + low_ch, aspp_ch, 3, norm=norm, act=act),
                                     conv_norm_act(aspp_ch, aspp_ch, 3, norm=norm, act=act))
        self.head = nn.Conv2d(aspp_ch, num_classes, 1)
        init_weights(self)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                m.zero_init()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, K, H, W)`` logits."""
        size = x.shape[-2:]
        x = self.stem(x)
        low = x = self.stages[0](x)  # 1/4
        for stage in self.stages[1:]:
            x = stage(x)  # 1/16
        low = self.low(low)
        x = torch.cat([resize_to(self.aspp(x), low), low], dim=1)
        return resize_to(self.head(self.decoder(x)), size)


@register_model("TensorFlowFlexDeepLabV3Plus", aliases=("deeplabv3plus", "deeplabv3+", "deeplab"))
def build_deeplabv3plus(cfg) -> DeepLabV3Plus:
    """DeepLabV3+: ResNet-18-like encoder (output stride 16), ASPP 6/12/18, low-level decoder."""
    model = DeepLabV3Plus(in_channels=cfg.image_channels, num_classes=cfg.num_classes, base_filters=cfg.base_filters,
                          batchnorm=cfg.normalization, activation=cfg.activation, dropout_rate=cfg.dropout_rate)
    return finish(model, cfg)
