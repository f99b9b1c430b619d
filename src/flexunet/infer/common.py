"""Shared set-up for commands that run a trained model: build, load weights, wrap in a Predictor."""
from __future__ import annotations

from pathlib import Path


def default_weights(cfg) -> Path:
    return Path(cfg.train.model_dir) / "best.pt"


def load_predictor(cfg, weights: str | None = None, device: str = "cpu", precision: str | None = None):
    """Model from the registry + weights (default ``model_dir/best.pt``) -> :class:`Predictor`."""
    from ..models import create_model
    from ..train.checkpoint import load_weights_into
    from .predictor import Predictor, set_threads

    set_threads()
    model = create_model(cfg.model)
    load_weights_into(model, weights or default_weights(cfg), cfg)
    prec = precision or cfg.train.precision
    return Predictor(model, device=device, precision=prec, channels_last=cfg.train.channels_last)
