"""``flexunet infer``: every image in [infer] images_dir -> palette PNG mask + overlay.

Images are predicted in batches at the model's size and the probabilities are
resized back to each image's own size.  With [tiledinfer] (or ``--tiled``), an
image larger than the model input is segmented in overlapping tiles blended
with a Gaussian (MONAI sliding window), never squashed.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError, FlexUNetError


def check_unique_stems(paths) -> None:
    """Refuse images whose names differ only in their extension (``a.png`` and ``a.jpg``): both would be
    written as ``a.png``.

    Raises:
        DataError: naming both images.
    """
    seen: dict[str, Path] = {}
    for p in map(Path, paths):
        key = p.stem.lower()
        if key in seen:
            raise DataError(f"{seen[key]} and {p}: both would be written as {p.stem}.png; expected images with "
                            "distinct names (rename one)")
        seen[key] = p


def infer(cfg, weights: str | list[str] | None = None, tiled: bool | None = None, keep_going: bool = False,
          quiet: bool = False) -> dict:
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..data.images import colorize, list_images, load_image, normalize_image, overlay
    from ..io.atomic import safe_child
    from ..io.png import save_png_atomic as _save_png
    from .common import load_predictor, warn_if_nothing_found
    from .predictor import batched

    use_tiles = cfg.tiledinfer.enabled if tiled is None else tiled
    ti = cfg.tiledinfer
    images_dir = (ti.images_dir if use_tiles and ti.images_dir else cfg.infer.images_dir)
    out_dir = Path(ti.output_dir if use_tiles and ti.output_dir else cfg.infer.output_dir)
    ov = (ti.merged_dir if use_tiles else None) or cfg.infer.overlay_dir or cfg.infer.merged_dir
    overlay_dir = Path(ov) if ov else out_dir.with_name(out_dir.name.rstrip("/") + "_overlay")
    paths = list_images(images_dir)
    check_unique_stems(paths)
    for d in (out_dir, overlay_dir):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FlexUNetError(f"{d}: output folder cannot be created ({exc.strerror}); expected a writable folder")
    predictor = load_predictor(cfg, weights)
    size = (cfg.model.image_height, cfg.model.image_width)
    failures: list[tuple[str, str]] = []
    written = 0
    found = 0
    bar = tqdm(total=len(paths), desc="infer", disable=quiet, leave=False)
    for chunk in batched(paths, cfg.infer.batch_size):
        loaded = []
        for p in chunk:
            try:
                raw = load_image(p, cfg, resize=False)
                loaded.append((p, raw))
            except FlexUNetError as exc:
                if not keep_going:
                    raise
                failures.append((str(p), str(exc)))
        if not loaded:
            bar.update(len(chunk))
            continue
        norm = [normalize_image(raw, cfg.model.input_normalize) for _, raw in loaded]
        if use_tiles:
            labels = []
            for im in norm:
                if im.shape[1] > size[0] or im.shape[2] > size[1]:
                    probs = predictor.tiled_probs(torch.as_tensor(im)[None], size, ti.overlapping)
                    labels.append(probs[0].argmax(0).cpu().numpy())
                else:
                    labels.extend(predictor.predict_resized([im], size))
        else:
            labels = predictor.predict_resized(norm, size)
        for (p, raw), lab in zip(loaded, labels):
            name = safe_child(out_dir, p.stem + ".png")
            _save_png(colorize(lab.astype(np.uint8), cfg), name)
            _save_png(overlay(raw, lab, cfg), safe_child(overlay_dir, p.stem + ".png"))
            written += 1
            found += bool(np.any(lab))
        bar.update(len(chunk))
    bar.close()
    if written and not found:
        warn_if_nothing_found(f"all {written} masks written to {out_dir} are background", cfg)
    if not quiet:
        print(f"wrote {written} masks to {out_dir} and overlays to {overlay_dir}")
    return {"written": written, "failures": failures, "output_dir": str(out_dir), "overlay_dir": str(overlay_dir)}
