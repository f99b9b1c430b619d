"""Checkpoint format shared by training and inference: weights-only, small, safe to load.

``best.pt`` holds ``{"state_dict": ..., "meta": {...}}`` with only tensors and
plain types, so it loads with ``torch.load(weights_only=True)`` (a pickle that
would run code is refused).  Writes are atomic: temp file, then rename.
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

from ..errors import CheckpointError
from ..io.trace import note_write


def _meta(m) -> dict:
    return {"format": "flexunet-weights-v1", "model": m.model, "image_channels": m.image_channels,
            "num_classes": m.num_classes, "image_height": m.image_height, "image_width": m.image_width,
            "model_config": {k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in dataclasses.asdict(m).items() if isinstance(v, (int, float, str, bool, tuple))}}


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    import torch

    from ..io.atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)
    note_write(path)


def save_weights(path: str | os.PathLike, model, model_config) -> None:
    """Write ``model``'s weights (on CPU) and the ``[model]`` section they were built from to ``path``.

    Args:
        path: the ``.pt`` file; its folder is created; the write is atomic.
        model: the network (``torch.nn.Module``).
        model_config: the ``[model]`` section (:class:`~flexunet.config.schema.ModelConfig`), kept as
            metadata so a loader can check the architecture.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_torch_save({"state_dict": state, "meta": _meta(model_config)}, path)


def _load_problem(exc: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` refused, in a few words."""
    text = str(exc)
    unsafe = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", text)
    if unsafe:
        return (f"refused to load: the file would import and call {unsafe.group(1)} "
                "(unsafe pickle; nothing was run)")
    operand = re.search(r"Unsupported operand \d+", text)
    if operand:
        return ("cannot load checkpoint: not a PyTorch checkpoint, or it holds pickled Python objects "
                f"rather than tensors ({operand.group(0)})")
    if isinstance(exc, (EOFError, OSError)) or "zip archive" in text or "corrupt" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        first = lines[0].split(". ")[0] if lines else exc.__class__.__name__
        return f"cannot load checkpoint: corrupt or truncated file ({first[:150]})"
    lines = [line for line in text.splitlines() if line.strip()]
    return f"cannot load checkpoint safely ({(lines[0] if lines else exc.__class__.__name__)[:200]})"


def load_state_dict(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read weights from ``best.pt`` or a Lightning ``.ckpt``; returns (state_dict, meta)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train first (flexunet train CONFIG) or give --weights")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's "Detected pickle protocol 4" on foreign pickles
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle with code in it
        raise CheckpointError(f"{path}: {_load_problem(exc)}; "
                              "expected a FlexUNet best.pt or last.ckpt loadable with weights_only=True") from None
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise CheckpointError(f"{path}: no 'state_dict' in checkpoint; expected a FlexUNet best.pt or last.ckpt")
    state = obj["state_dict"]
    meta = obj.get("meta") or {}
    if "meta" not in obj and any(k.startswith("model.") for k in state):
        # a Lightning checkpoint of the SegmentationModule: its network sits under ``model.``.  best.pt
        # (which has "meta") holds the network's own keys, which may start with "model." themselves
        # (MONAI's AttentionUnet does), so nothing is stripped there.
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        meta = {"model": (obj.get("flexunet_meta") or {}).get("model")}
    return state, meta


def load_weights_into(model, path: str | os.PathLike, model_name: str) -> None:
    """Load the weights in ``path`` into ``model``.

    Args:
        model: the network (``torch.nn.Module``) built for ``model_name``.
        path: a ``best.pt`` or a Lightning ``last.ckpt``.
        model_name: the architecture the caller built (``[model] model``); aliases are resolved.

    Raises:
        CheckpointError: the file is missing or unsafe, or holds another architecture or shape.
    """
    state, meta = load_state_dict(path)
    want = model_name
    from .registry import resolve_name

    got = meta.get("model")
    if got and resolve_name(got) != resolve_name(want):
        raise CheckpointError(f"{path}: checkpoint is for model {got!r} but the config asks for {want!r}; "
                              "expected a checkpoint trained with this [model] section")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(bad)} mismatched tensors"
                  + (f" (e.g. {bad[0]}: {tuple(state[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})" if bad else
                     f" (e.g. {(missing or unexpected)[0]})"))
        raise CheckpointError(f"{path}: checkpoint does not fit this [model] config: {detail}; "
                              "expected one trained with the same architecture, channels, classes and layers")
    model.load_state_dict(state)
