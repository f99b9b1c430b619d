"""Shared set-up for commands that run a trained model: build, load weights, wrap in a Predictor."""
from __future__ import annotations

from pathlib import Path


def default_weights(cfg) -> Path:
    return Path(cfg.train.model_dir) / "best.pt"


def weight_paths(cfg, weights=None) -> list[Path]:
    """The checkpoints to run: ``weights`` (one path or several, from ``--weights``) if given, else
    ``[infer] weights`` (relative to ``[train] model_dir`` unless absolute), else ``model_dir/best.pt``."""
    if weights:
        return [Path(w) for w in ([weights] if isinstance(weights, (str, Path)) else weights)]
    if cfg.infer.weights:
        model_dir = Path(cfg.train.model_dir)
        return [p if p.is_absolute() else model_dir / p for p in map(Path, cfg.infer.weights)]
    return [default_weights(cfg)]


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


def load_predictor(cfg, weights: str | list[str] | None = None, device: str | None = None, precision: str | None = None):
    """Model from the registry + weights (:func:`weight_paths`) -> :class:`Predictor` on ``device``
    (default: ``[infer] device``).  Several checkpoints make an ensemble: their softmax is averaged."""
    from ..models import create_model
    from ..models.checkpoint import load_weights_into
    from .predictor import Predictor, set_threads

    set_threads()
    models = []
    for path in weight_paths(cfg, weights):
        model = create_model(cfg.model)
        load_weights_into(model, path, cfg.model.model)
        models.append(model)
    prec = precision or cfg.train.precision
    return Predictor(models[0] if len(models) == 1 else models, device=resolve_device(device or cfg.infer.device),
                     precision=prec, channels_last=cfg.train.channels_last)
