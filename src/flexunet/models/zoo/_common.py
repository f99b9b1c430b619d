"""Helpers shared by the model zoo: layer factories, size checks, init and local pretrained loading.

Conventions of every zoo model: input ``(N, C, H, W)`` float, output logits
``(N, K, H, W)`` with ``K = cfg.num_classes`` (no softmax).  Architectures
written here honour ``[model] normalization`` (BatchNorm on/off) and
``activation``; the MONAI-backed ones keep the normalisation their
architecture is defined with.  Nothing here downloads anything: the only
source of pretrained weights is the local file named by ``[model] pretrained``.
"""
from __future__ import annotations

import os
import warnings
from typing import Iterable

import torch
from torch import nn

from ...errors import CheckpointError, ConfigError
from ..flexunet import ACTIVATIONS

#: ``[model] activation`` -> MONAI ``Act`` factory name
MONAI_ACT = {
    "relu": "relu",
    "elu": "elu",
    "gelu": "gelu",
    "silu": "swish",
    "swish": "swish",
    "leaky_relu": "leakyrelu",
    "mish": "mish",
}


def act_layer(name: str) -> nn.Module:
    """A new activation module for a ``[model] activation`` name."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"[model] activation = {name!r}: expected one of {', '.join(sorted(ACTIVATIONS))}") from None


def monai_act(name: str) -> str:
    """The MONAI ``Act`` name for a ``[model] activation`` name."""
    act_layer(name)  # validates
    return MONAI_ACT[name]


def conv_norm_act(cin: int, cout: int, kernel: int = 3, *, stride: int = 1, dilation: int = 1, norm: bool = True,
                  act: str | None = "relu", groups: int = 1) -> nn.Sequential:
    """``conv(k, 'same' padding for stride 1) -> [BatchNorm] -> [act]``: ``(N, cin, H, W) -> (N, cout, H/s, W/s)``.

    The convolution has a bias only when there is no BatchNorm after it.
    """
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=dilation * (kernel - 1) // 2,
                                         dilation=dilation, groups=groups, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    if act is not None:
        layers.append(act_layer(act))
    return nn.Sequential(*layers)


def level_filters(base_filters: int, num_layers: int) -> list[int]:
    """Channels per encoder level: ``base_filters * 2**i``, ``i = 0 .. num_layers-1``."""
    return [base_filters * 2 ** i for i in range(num_layers)]


def check_size(cfg, multiple: int, model: str) -> None:
    """Raise ConfigError unless ``image_height`` and ``image_width`` are multiples of ``multiple``."""
    for key in ("image_height", "image_width"):
        val = getattr(cfg, key)
        if val % multiple:
            raise ConfigError(f"[model] {key} = {val}: {model} needs a multiple of {multiple}")


def resize_to(x: torch.Tensor, ref: torch.Tensor | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Interpolate ``x (N, C, h, w)`` to the spatial size of ``ref`` (a tensor or ``(H, W)``); no-op when equal."""
    size = tuple(ref.shape[-2:]) if isinstance(ref, torch.Tensor) else tuple(ref)
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "nearest":
        return nn.functional.interpolate(x, size=size, mode=mode)
    return nn.functional.interpolate(x, size=size, mode=mode, align_corners=False)


def init_weights(model: nn.Module) -> nn.Module:
    """He-normal (fan_in) convolutions and linears, zero biases, unit BatchNorm; returns ``model``."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _unwrap_state_dict(obj, path: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded file: a bare state dict, or one under ``state_dict``/``model``."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"[model] pretrained = {path!r}: not a state dict (expected a dict of tensors)")
    # Lightning checkpoints prefix the network's keys with the attribute name
    for prefix in ("model.", "net.", "module."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_pretrained(model: nn.Module, path: str | os.PathLike, submodules: Iterable[str] = ()) -> nn.Module:
    """Load the local state dict at ``path`` into ``model`` (never downloads).

    The file is read with ``torch.load(weights_only=True)``.  Keys are loaded
    non-strictly into ``model`` or, when more keys match there, into one of the
    named ``submodules`` (e.g. ``"encoder"`` for an ImageNet backbone file).
    Tensors whose shape differs (another ``num_classes``) are skipped.
    A warning reports the missing, unexpected and skipped key counts (and the
    submodule) unless the file matched ``model`` exactly.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"[model] pretrained = {path!r}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt file
        raise CheckpointError(f"[model] pretrained = {path!r}: cannot load ({exc.__class__.__name__}: {exc})") from exc
    state = _unwrap_state_dict(obj, path)

    def matches(target: nn.Module) -> int:
        own = target.state_dict()
        return sum(1 for k, v in state.items() if k in own and own[k].shape == v.shape)

    targets = [("", model)] + [(name, model.get_submodule(name)) for name in submodules]
    where, target = max(targets, key=lambda t: matches(t[1]))
    own = target.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    usable = {k: v for k, v in state.items() if k not in mismatched}
    result = target.load_state_dict(usable, strict=False)
    loaded = len(usable) - len(result.unexpected_keys)
    if loaded == 0:
        raise CheckpointError(f"[model] pretrained = {path!r}: no tensor matches {type(model).__name__}")
    into = f" into .{where}" if where else ""
    if where or result.missing_keys or result.unexpected_keys or mismatched:
        warnings.warn(f"[model] pretrained = {path!r}: loaded {loaded} tensors{into}; "
                      f"{len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected, "
                      f"{len(mismatched)} skipped for a shape mismatch", stacklevel=2)
    return model


def finish(model: nn.Module, cfg, submodules: Iterable[str] = ()) -> nn.Module:
    """Load ``cfg.pretrained`` (a local state-dict path) into ``model`` when set; returns ``model``."""
    if cfg.pretrained:
        load_pretrained(model, cfg.pretrained, submodules)
    return model


def flex_unet_forward(net, x: torch.Tensor, skip=None, bridge=None) -> torch.Tensor:
    """FlexUNet's encoder/decoder pass with optional hooks; ``(N, C, H, W) -> (N, K, H, W)``.

    ``net`` has FlexUNet's ``encoders``, ``pool``, ``ups``, ``decoders`` and ``head``;
    ``skip(t)`` transforms each skip tensor before concatenation and ``bridge(t)``
    the bottleneck features ``(N, F, H/2**(L-1), W/2**(L-1))``.
    """
    skips = []
    last = len(net.encoders) - 1
    for i, enc in enumerate(net.encoders):
        x = enc(x)
        if i < last:
            skips.append(x if skip is None else skip(x))
            x = net.pool(x)
    if bridge is not None:
        x = bridge(x)
    for up, dec in zip(net.ups, net.decoders):
        x = up(x)
        x = dec(torch.cat([x, skips.pop()], dim=1))
    return net.head(x)


def flexunet_kwargs(cfg) -> dict:
    """FlexUNet's constructor arguments from a ModelConfig."""
    return dict(in_channels=cfg.image_channels, num_classes=cfg.num_classes, base_filters=cfg.base_filters,
                base_kernels=tuple(cfg.base_kernels), num_layers=cfg.num_layers, dropout_rate=cfg.dropout_rate,
                dilation=tuple(cfg.dilation), batchnorm=cfg.normalization, activation=cfg.activation)
