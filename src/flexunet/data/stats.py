"""Dataset statistics for a ``DATASET_DIR/{train,valid,test}/{images,masks}`` folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DataError
from ..io.atomic import atomic_save_figure
from .images import decode_mask, find_pairs

SPLITS = ("train", "valid", "test")


def _default_cfg(dataset_dir: Path):
    from ..config import default_config

    return default_config(base_dir=dataset_dir)  # rgb_map {(0,0,0):0, (0,0,255):1, (255,0,0):2}


def dataset_stats(dataset_dir: str | os.PathLike, cfg=None) -> dict[str, Any]:
    """Count images and class pixels per split.

    Returns ``{"dataset_dir", "num_classes", "class_colors", "splits": {split: {...}}}`` where each
    present split has ``images`` (number of image/mask pairs), ``pixels`` (mask pixels in all, at
    native resolution), ``class_pixels`` (per class id), ``pixel_fraction`` (per class id) and
    ``slices_with_class`` (number of masks holding at least one pixel of each class).  Splits whose
    folder is absent are left out; none present is a :class:`DataError`.  Masks are decoded like
    training does (:func:`~flexunet.data.images.decode_mask`), with images and masks paired by stem.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} not found; expected DATASET_DIR/{{train,valid,test}}/{{images,masks}}")
    if cfg is None:
        cfg = _default_cfg(root)
    n = cfg.model.num_classes
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        sdir = root / split
        if not sdir.is_dir():
            continue
        pairs = find_pairs(sdir / "images", sdir / "masks", cfg.mask.mask_file_format)
        class_pixels = np.zeros(n, dtype=np.int64)
        slices_with = np.zeros(n, dtype=np.int64)
        for _, mask_path in pairs:
            counts = np.bincount(decode_mask(mask_path, cfg, resize=False).ravel(), minlength=n)[:n]
            class_pixels += counts
            slices_with += counts > 0
        total = int(class_pixels.sum())
        splits[split] = {
            "images": len(pairs),
            "pixels": total,
            "class_pixels": [int(v) for v in class_pixels],
            "pixel_fraction": [float(v) / total if total else 0.0 for v in class_pixels],
            "slices_with_class": [int(v) for v in slices_with],
        }
    if not splits:
        raise DataError(f"dataset folder {root} has none of the split folders {', '.join(SPLITS)}; "
                        "expected DATASET_DIR/{train,valid,test}/{images,masks}")
    return {
        "dataset_dir": str(root),
        "num_classes": n,
        "class_colors": [list(c) for c in cfg.class_colors],
        "splits": splits,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table: one row per split with its image count, class pixel % and slices per class."""
    n = stats["num_classes"]
    head = ["split", "images"] + [f"px% c{i}" for i in range(n)] + [f"slices c{i}" for i in range(n)]
    rows = [head]
    for split, s in stats["splits"].items():
        rows.append([split, str(s["images"])]
                    + [f"{100.0 * f:.3f}" for f in s["pixel_fraction"]]
                    + [str(v) for v in s["slices_with_class"]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"dataset {stats['dataset_dir']} ({n} classes)"]
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_stats_chart(stats: dict[str, Any], out_png: str | os.PathLike) -> Path:
    """Bar chart of the images per split, written atomically to ``out_png``; returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is slow to import
    from matplotlib.figure import Figure

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(stats["splits"])
    counts = [stats["splits"][s]["images"] for s in names]
    fig = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot: the global backend is left alone
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(names, counts, color=["tab:blue", "tab:orange", "tab:green"][: len(names)])
    ax.bar_label(bars)
    ax.set_ylabel("images")
    ax.set_title(f"Images per split: {Path(stats['dataset_dir']).name}")
    ax.margins(y=0.15)
    fig.tight_layout()
    atomic_save_figure(fig, out, "png")
    return out


def run_stats(dataset_dir: str | os.PathLike, cfg, out_png: Optional[str | os.PathLike]) -> dict[str, Any]:
    """Compute, print and chart the stats of ``dataset_dir``; returns the stats dict.

    ``out_png=None`` skips the chart.
    """
    stats = dataset_stats(dataset_dir, cfg)
    print(format_stats(stats))
    if out_png is not None:
        path = write_stats_chart(stats, out_png)
        print(f"chart: {path}")
    return stats
