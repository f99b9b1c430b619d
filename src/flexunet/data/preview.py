"""``flexunet augment-preview``: what training sees after augmentation, as a grid PNG."""
from __future__ import annotations

from pathlib import Path


def preview_from_config(cfg, n: int = 16, out_png: str | None = None, seed: int = 0) -> str:
    from .augment import augment_preview
    from .dataset2d import SliceDataset
    from .images import find_pairs

    pairs = find_pairs(cfg.train.images_dir, cfg.train.masks_dir, cfg.mask.mask_file_format)
    ds = SliceDataset(pairs, cfg)
    samples = [ds.load(i % len(ds)) for i in range(min(n, max(len(ds), 1)))]
    out = out_png or str(Path(cfg.train.eval_dir) / "augment_preview.png")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return augment_preview(cfg, samples, n=n, out_png=out, seed=seed)
