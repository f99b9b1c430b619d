"""Model registry: architectures registered by name, built by one :func:`create_model`.

Imitates timm's registry: ``@register_model("name", aliases=(...))`` on a
builder ``fn(cfg: ModelConfig) -> nn.Module``.  Listing names is free (no
model is built).  Builders live one per module under ``flexunet.models``; the
modules are imported lazily on first use so ``flexunet --help`` stays fast.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError

#: modules that register models when imported
MODEL_MODULES = [
    "flexunet.models.flexunet",
    "flexunet.models.zoo",
]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    aliases: tuple[str, ...]
    doc: str
    min_size: int = 64


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}
_loaded: set[str] = set()


def register_model(name: str, aliases: tuple[str, ...] = (), min_size: int = 64):
    """Decorator: register ``builder(cfg: ModelConfig) -> nn.Module`` under ``name`` and ``aliases``."""

    def deco(fn):
        entry = ModelEntry(name=name, builder=fn, aliases=tuple(aliases),
                           doc=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "", min_size=min_size)
        _REGISTRY[name] = entry
        for a in (name, *aliases):
            _ALIASES[a.lower()] = name
        return fn

    return deco


def _load(modules) -> None:
    for mod in modules:
        if mod in _loaded:
            continue
        _loaded.add(mod)
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def _load_all() -> None:
    _load(MODEL_MODULES)


def list_models() -> list[ModelEntry]:
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def resolve_name(name: str) -> str:
    """The registered name of ``name`` (or one of its aliases, any case).

    The modules are imported in order only until the name is found: the seed architecture
    (``flexunet.models.flexunet``) does not pull in the zoo and MONAI (2.5 s of imports).

    Raises:
        ConfigError: an unknown architecture, with the known names.
    """
    key = name.lower()
    for mod in MODEL_MODULES:
        if key in _ALIASES:
            break
        _load([mod])
    if key not in _ALIASES:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"[model] model = {name!r}: unknown architecture; expected one of {known}")
    return _ALIASES[key]


def get_entry(name: str) -> ModelEntry:
    return _REGISTRY[resolve_name(name)]


def create_model(cfg):
    """Build the ``torch.nn.Module`` named by ``cfg.model`` (a :class:`~flexunet.config.schema.ModelConfig`)."""
    return get_entry(cfg.model).builder(cfg)
