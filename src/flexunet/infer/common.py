"""Shared set-up for commands that run a trained model: build, load weights, wrap in a Predictor."""
from __future__ import annotations

from pathlib import Path


def default_weights(cfg) -> Path:
    return Path(cfg.train.model_dir) / "best.pt"


def resolve_device(device: str) -> str:
    """``[infer] device``: ``auto`` is the GPU where torch sees one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        from ..errors import ConfigError

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        idx = int(device.partition(":")[2] or 0)
        if idx >= n:
            raise ConfigError(f"[infer] device = {device!r}: torch sees {n} CUDA device(s); "
                              "expected auto, cpu or an existing cuda:N")
    return device


def load_predictor(cfg, weights: str | None = None, device: str | None = None, precision: str | None = None):
    """Model from the registry + weights (default ``model_dir/best.pt``) -> :class:`Predictor` on ``device``
    (default: ``[infer] device``)."""
    from ..models import create_model
    from ..train.checkpoint import load_weights_into
    from .predictor import Predictor, set_threads

    set_threads()
    model = create_model(cfg.model)
    load_weights_into(model, weights or default_weights(cfg), cfg)
    prec = precision or cfg.train.precision
    return Predictor(model, device=resolve_device(device or cfg.infer.device), precision=prec,
                     channels_last=cfg.train.channels_last)
