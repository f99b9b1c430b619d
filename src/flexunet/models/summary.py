"""Model size and cost: parameter counts, GFLOPs, and a table over every registered architecture.

GFLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` for one
forward pass of a ``1 x C x H x W`` input; it counts a multiply-add as 2 FLOPs
(so they are twice the "GMACs" that some papers quote) and counts only
convolutions, matrix products and attention (not activations, norms, pooling
or interpolation).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import create_model, get_entry, list_models


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def gflops(model: nn.Module, in_shape: Sequence[int]) -> float:
    """GFLOPs (``flops / 1e9``, multiply-add = 2) of one eval-mode forward of a zero tensor of ``in_shape``.

    ``in_shape`` is ``(N, C, H, W)`` (usually ``N = 1``) or ``(C, H, W)``, taken as ``N = 1``.
    The model's train/eval mode is restored afterwards.  PyTorch's fused
    transformer fast path (an op the counter does not see) is turned off
    while counting, so transformer layers are counted like their parts.
    """
    shape = tuple(in_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    param = next(model.parameters(), None)
    x = torch.zeros(shape, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def models_table(cfg_model, size: int = 512, names: Iterable[str] | None = None,
                 measure: Callable[[nn.Module, object], dict] | None = None, flops: bool = True) -> list[dict]:
    """One row per registered model (or per name in ``names``), built from ``cfg_model`` at ``size x size``.

    ``cfg_model`` is a :class:`~flexunet.config.schema.ModelConfig`; its ``model``,
    ``image_width`` and ``image_height`` are replaced per row.  Each row is
    ``{"name", "aliases", "params", "gflops", "error"}`` plus what
    ``measure(model, cfg)`` returns (e.g. a latency).  A model that cannot be
    built or run at this size keeps ``None`` values and the one-line reason in
    ``error`` (``None`` otherwise); the table goes on.  ``flops=False`` skips the
    GFLOPs count (a forward pass per model).
    """
    entries = list_models() if names is None else [get_entry(n) for n in names]
    rows = []
    for entry in entries:
        row = {"name": entry.name, "aliases": tuple(entry.aliases), "params": None, "gflops": None, "error": None}
        try:
            if size < entry.min_size:
                raise ValueError(f"needs at least {entry.min_size}x{entry.min_size}")
            cfg = dataclasses.replace(cfg_model, model=entry.name, image_width=size, image_height=size)
            torch.manual_seed(0)
            model = create_model(cfg)
            row["params"] = count_parameters(model)
            if flops:
                row["gflops"] = gflops(model, (1, cfg.image_channels, size, size))
            if measure is not None:
                row.update(measure(model, cfg))
            del model
        except Exception as exc:  # reported in the row
            row["error"] = error_line(exc)
        rows.append(row)
    return rows


def error_line(exc: BaseException) -> str:
    """``ExceptionName: first line of the message``."""
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0]}" if text else exc.__class__.__name__


def format_models_table(rows: list[dict], extra: Sequence[str] = ()) -> str:
    """Rows of :func:`models_table` as an aligned text table.

    ``extra`` names more row keys shown as right-aligned columns (floats with one
    decimal, two below 10).  A row's error follows its cells as ``error: ...``.
    """
    headers = ["model", "aliases", "params", "GFLOPs", *extra]
    body, notes = [], []
    for r in rows:
        ok = not r.get("error")
        body.append([r["name"], ", ".join(r["aliases"]),
                     f"{r['params']:,}" if ok else "-",
                     f"{r['gflops']:.2f}" if ok and r.get("gflops") is not None else "-",
                     *(_fmt(r.get(k)) if ok else "-" for k in extra)])
        notes.append("" if ok else f"error: {r['error']}")
    widths = [max(len(c[i]) for c in [headers, *body]) for i in range(len(headers))]

    def line(cells, note=""):
        text = "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return f"{text}  {note}".rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(c, n) for c, n in zip(body, notes))])


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
