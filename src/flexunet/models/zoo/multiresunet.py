"""MultiResUNet (Ibtehaz & Rahman 2020): MultiRes blocks and residual skip paths.

``(N, C, H, W) -> (N, K, H, W)`` logits; ``H`` and ``W`` must be multiples of
``2**(num_layers-1)``.  Level ``i`` has ``U = base_filters * 2**i``; its
MultiRes block chains three 3x3 convolutions (``W/6``, ``W/3``, ``W/2``
channels, ``W = 1.67 U``: receptive fields 3, 5, 7), concatenates them and adds
a 1x1 shortcut.  The skip of level ``i`` passes a Res path of
``num_layers - 1 - i`` residual 3x3 units (4, 3, 2, 1 for five levels, as in
the paper).  Upsampling is a 2x2 stride-2 transposed convolution.  BatchNorm
follows ``[model] normalization``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_model
from ._common import act_layer, check_size, conv_norm_act, finish, init_weights, level_filters

ALPHA = 1.67


def _norm(c: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if on else nn.Identity()


class MultiResBlock(nn.Module):
    """``(N, cin, H, W) -> (N, out_channels, H, W)``; ``out_channels`` = W/6 + W/3 + W/2 (rounded down)."""

    def __init__(self, cin: int, u: int, norm: bool, act: str):
        super().__init__()
        w = ALPHA * u
        c1, c2, c3 = (max(1, int(w * f)) for f in (0.167, 0.333, 0.5))
        self.out_channels = c1 + c2 + c3
        self.conv1 = conv_norm_act(cin, c1, 3, norm=norm, act=act)
        self.conv2 = conv_norm_act(c1, c2, 3, norm=norm, act=act)
        self.conv3 = conv_norm_act(c2, c3, 3, norm=norm, act=act)
        self.shortcut = conv_norm_act(cin, self.out_channels, 1, norm=norm, act=None)
        self.norm_cat = _norm(self.out_channels, norm)
        self.act = act_layer(act)
        self.norm_out = _norm(self.out_channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        b = self.conv2(a)
        c = self.conv3(b)
        y = self.norm_cat(torch.cat([a, b, c], dim=1)) + self.shortcut(x)
        return self.norm_out(self.act(y))


class ResPath(nn.Sequential):
    """``length`` residual units (3x3 conv + 1x1 shortcut): ``(N, c, H, W) -> (N, c, H, W)``."""

    class Unit(nn.Module):
        def __init__(self, c: int, norm: bool, act: str):
            super().__init__()
            self.conv = conv_norm_act(c, c, 3, norm=norm, act=act)
            self.shortcut = conv_norm_act(c, c, 1, norm=norm, act=None)
            self.act = act_layer(act)
            self.norm = _norm(c, norm)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.act(self.conv(x) + self.shortcut(x)))

    def __init__(self, c: int, length: int, norm: bool, act: str):
        super().__init__(*(self.Unit(c, norm, act) for _ in range(length)))


class MultiResUNet(nn.Module):
    """MultiResUNet with ``num_layers`` levels (the last is the bridge).

    Shapes: ``(N, C, H, W) -> (N, K, H, W)`` logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 3, base_filters: int = 32, num_layers: int = 5,
                 batchnorm: bool = False, activation: str = "relu"):
        super().__init__()
        us = level_filters(base_filters, num_layers)
        self.encoders = nn.ModuleList()
        self.paths = nn.ModuleList()
        outs = []
        cin = in_channels
        for i, u in enumerate(us):
            block = MultiResBlock(cin, u, batchnorm, activation)
            self.encoders.append(block)
            cin = block.out_channels
            outs.append(cin)
            if i < num_layers - 1:
                self.paths.append(ResPath(cin, num_layers - 1 - i, batchnorm, activation))
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(num_layers - 1)):
            self.ups.append(nn.ConvTranspose2d(cin, us[i], 2, stride=2))
            block = MultiResBlock(us[i] + outs[i], us[i], batchnorm, activation)
            self.decoders.append(block)
            cin = block.out_channels
        self.head = nn.Conv2d(cin, num_classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, K, H, W)`` logits."""
        skips = []
        for i, block in enumerate(self.encoders):
            x = block(x)
            if i < len(self.paths):
                skips.append(self.paths[i](x))
                x = nn.functional.max_pool2d(x, 2)
        for up, block in zip(self.ups, self.decoders):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


@register_model("TensorFlowFlexMultiResUNet", aliases=("multiresunet", "multires_unet"))
def build_multiresunet(cfg) -> MultiResUNet:
    """MultiResUNet: MultiRes blocks (3x3 chains ~ 3/5/7 fields) and residual skip paths."""
    check_size(cfg, 2 ** (cfg.num_layers - 1), "TensorFlowFlexMultiResUNet")
    model = MultiResUNet(in_channels=cfg.image_channels, num_classes=cfg.num_classes, base_filters=cfg.base_filters,
                         num_layers=cfg.num_layers, batchnorm=cfg.normalization, activation=cfg.activation)
    return finish(model, cfg)
