"""``flexunet augment-preview``: what training sees after augmentation, as a grid PNG."""
from __future__ import annotations

import math
import os
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .augment import build_augmenter

__all__ = ["augment_preview", "preview_from_config"]


def _as_pairs(samples: Any, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``n`` (image CHW, mask HW) numpy pairs from a list/dataset of pairs or dicts."""
    try:
        total = len(samples)
    except TypeError:
        samples = list(samples)
        total = len(samples)
    if total == 0:
        raise DataError("augment-preview: no samples to preview; expected at least one (image, mask) pair")
    out = []
    for i in range(min(n, total)):
        item = samples[i]
        if isinstance(item, dict):
            item = (item["image"], item["mask"])
        img, msk = (np.asarray(v) for v in item[:2])
        if img.ndim == 2:
            img = img[None]
        if msk.ndim == 3:  # one-hot (K,H,W) or (1,H,W)
            msk = msk[0] if msk.shape[0] == 1 else msk.argmax(axis=0)
        out.append((img.astype(np.float32), msk.astype(np.int64)))
    return out


def _overlay(image: np.ndarray, mask: np.ndarray, colors: Sequence[tuple[int, int, int]],
             alpha: float = 0.45) -> np.ndarray:
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    rgb = np.clip(rgb.transpose(1, 2, 0), 0, 1).copy()
    lut = np.zeros((max(len(colors), int(mask.max()) + 1), 3), dtype=np.float32)
    lut[:len(colors)] = np.asarray(colors, dtype=np.float32) / 255.0
    fg = mask > 0
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * lut[mask[fg]]
    return rgb


def augment_preview(cfg: Any, samples: Any, n: int = 16, out_png: str | os.PathLike = "augment_preview.png",
                    seed: int = 0) -> str:
    """Write a grid PNG of ``n`` augmented samples (image with the mask overlaid in ``[mask] rgb_map`` colours).

    ``samples``: a list (or dataset) of ``(image_chw01, mask_hw)`` pairs, cycled when shorter than ``n``.
    The ``[model] generator`` flag is ignored here so the configured augmentation can be previewed
    before turning it on; each panel's title lists the transforms applied.  Written atomically.
    Returns the path written.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io.atomic import atomic_save_figure

    if n < 1:
        raise ConfigError(f"augment-preview: n = {n}: expected at least 1")
    aug = build_augmenter(replace(cfg, model=replace(cfg.model, generator=True)))
    pairs = _as_pairs(samples, n)
    rng = np.random.default_rng(seed)
    try:
        colors = cfg.class_colors
    except Exception:  # no / odd rgb_map: fall back to matplotlib's palette
        colors = [(0, 0, 0)] + [tuple(int(255 * v) for v in matplotlib.colors.to_rgb(f"C{i}")) for i in range(9)]

    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols, 3.0 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i in range(n):
        img, msk = pairs[i % len(pairs)]
        applied: tuple[str, ...] = ()
        if aug is not None:
            img, msk, applied = aug.apply(img, msk, rng)
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(_overlay(img, msk, colors), interpolation="nearest")
        ax.set_axis_off()
        title = textwrap.fill(", ".join(applied), 44) if applied else "(none)"
        ax.set_title(title, fontsize=5.5)
    note = "" if aug is not None else " - no transform enabled in [augmentor]"
    fig.suptitle(f"augmentation preview (seed {seed}){note}", fontsize=9)
    fig.tight_layout()

    out_png = os.fspath(out_png)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    atomic_save_figure(fig, out_png, "png")
    return out_png


def preview_from_config(cfg, n: int = 16, out_png: str | None = None, seed: int = 0) -> str:
    from .dataset2d import SliceDataset
    from .images import find_pairs

    pairs = find_pairs(cfg.train.images_dir, cfg.train.masks_dir, cfg.mask.mask_file_format)
    ds = SliceDataset(pairs, cfg)
    samples = [ds.load(i % len(ds)) for i in range(min(n, max(len(ds), 1)))]
    out = out_png or str(Path(cfg.train.eval_dir) / "augment_preview.png")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return augment_preview(cfg, samples, n=n, out_png=out, seed=seed)
