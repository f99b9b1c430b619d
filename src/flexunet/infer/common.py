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


def load_predictor(cfg, weights: str | list[str] | None = None, device: str | None = None,
                   precision: str | None = None, runtime: str | None = None):
    """Model from the registry + weights (:func:`weight_paths`) -> :class:`Predictor` on ``device``.

    Several checkpoints make an ensemble: their softmax is averaged.  An ``.onnx`` weight (from
    ``flexunet export``) runs in onnxruntime after its contract is checked against ``cfg``.

    Args:
        cfg: the config (``[model]`` builds the network; ``[infer]`` gives device and runtime).
        weights: checkpoint path(s); default ``[infer] weights`` or ``model_dir/best.pt``.
        device: default ``[infer] device``.
        precision: default ``[train] precision``.
        runtime: "eager", "compile" or "onnxruntime" (default ``[infer] runtime``).

    Raises:
        CheckpointError: missing, corrupt or mismatched weights.  ConfigError: bad device, or
            onnxruntime asked for a GPU or not installed.
    """
    from ..errors import ConfigError
    from ..models import create_model
    from ..models.checkpoint import load_weights_into
    from .predictor import Predictor, set_threads

    set_threads()
    runtime = runtime or cfg.infer.runtime
    device = resolve_device(device or cfg.infer.device)
    size, channels = (cfg.model.image_height, cfg.model.image_width), cfg.model.image_channels
    models, uses_onnx = [], False
    for path in weight_paths(cfg, weights):
        if str(path).lower().endswith(".onnx"):
            from .onnx import OnnxModule, check_contract

            if not Path(path).is_file():
                from ..errors import CheckpointError

                raise CheckpointError(f"{path}: ONNX model not found; expected a file written by `flexunet export`")
            check_contract(path, cfg)
            models.append(OnnxModule(path))
            uses_onnx = True
            continue
        model = create_model(cfg.model)
        load_weights_into(model, path, cfg.model.model)
        if runtime == "onnxruntime":
            from .onnx import OnnxModule

            model = OnnxModule.from_torch(model, size, channels)
            uses_onnx = True
        models.append(model)
    if uses_onnx and device != "cpu":
        raise ConfigError(f"[infer] device = {device!r} with an ONNX model: FlexUNet runs onnxruntime on the CPU; "
                          "expected device = cpu (or auto on a machine without a GPU)")
    prec = "32" if uses_onnx else (precision or cfg.train.precision)
    return Predictor(models[0] if len(models) == 1 else models, device=device, precision=prec,
                     channels_last=cfg.train.channels_last, compile=runtime == "compile")


class NothingFoundWarning(UserWarning):
    """A model found no foreground in any output of a run: likely a mismatch of input and model."""


def warn_if_nothing_found(what: str, cfg) -> None:
    """Warn once that a run found nothing, naming the likely causes beside the settings the model expects.

    Args:
        what: what was empty, e.g. "all 18 masks written to out/ are background".
        cfg: the config the model runs with (its input settings are quoted).
    """
    import warnings

    from ..config.rules import context_enabled

    m = cfg.model
    context = "2.5D context (slices k-1, k, k+1)" if m.image_channels == 3 and context_enabled(
        m.image_channels, cfg.slice.context_slices) else f"{m.image_channels} channel(s) without context"
    warnings.warn(f"{what}: the model found nothing. Likely causes: images in another plane than the model was "
                  f"trained on (this config cuts volumes {'/'.join(cfg.slice.planes)}), another intensity window (hu_window {tuple(cfg.slice.hu_window)}), "
                  f"another channel layout ({context}) or image size ({m.image_width}x{m.image_height}); compare them "
                  f"with the config the model was trained with", NothingFoundWarning, stacklevel=2)
