"""``flexunet infer-volume``: CT volumes (NIfTI, DICOM folder/zip, MRC) -> label NIfTI with the input's geometry.

Pipeline per volume: read -> canonical RAS -> HU window to uint8 (as the PNGs)
-> slices in batches with 2.5D context -> model at its input size -> probabilities
resized back to the slice size -> argmax -> optional postprocessing -> back to
the input's own orientation -> NIfTI with the input's affine and header.

Memory stays bounded: a loader thread reads the next volume while the current
one is predicted, through a queue of size 1 (imitating nnU-Net's data
iterators), and only uint8 copies of the volume are kept (512x512x600 is
157 MB per copy).  When the loader fails, an abort event stops the run with
the loader's message.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import DataError, FlexUNetError

# tumour_grow leaves lesions alone that are less than this much darker than the liver around them
GROW_MIN_CONTRAST_HU = 10.0


def case_name(path: str | Path) -> str:
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".mrc", ".zip"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    if name in ("image.nii.gz",):
        return p.parent.name
    return name


def _output_name(path: str | Path) -> str:
    p = Path(path)
    if p.name.lower() in ("image.nii.gz", "image.nii"):
        return p.parent.name  # canonical case folder
    return case_name(p)


def predict_volume(predictor, vol_u8_can: np.ndarray, cfg, batch_size: int = 8) -> np.ndarray:
    """Labels (uint8, canonical orientation) for a canonical windowed uint8 volume."""
    import torch
    import torch.nn.functional as F

    from ..data.images import normalize_image
    from ..data.slicer import from_view, slice_channels

    nx, ny, nz = vol_u8_can.shape
    out = np.zeros((nx, ny, nz), np.uint8)
    size = (cfg.model.image_height, cfg.model.image_width)
    for start in range(0, nz, batch_size):
        ks = range(start, min(start + batch_size, nz))
        imgs = [normalize_image(slice_channels(vol_u8_can, k, cfg).astype(np.float32) / 255.0, cfg) for k in ks]
        x = torch.from_numpy(np.stack(imgs))
        native = x.shape[2:]
        if tuple(native) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        probs = predictor.probs(x)
        if cfg.infer.tta_context_flip:  # the same slices with z-1 and z+1 swapped, averaged
            probs = (probs + predictor.probs(x.flip(1))) / 2
        if tuple(native) != size:
            probs = F.interpolate(probs, size=native, mode="bilinear", align_corners=False)
        labels = probs.argmax(1).to(torch.uint8).cpu().numpy()
        for k, lab in zip(ks, labels):
            out[:, :, k] = from_view(lab)
    return out


def _loader(paths, cfg, q: queue.Queue, abort: threading.Event, keep_going: bool):
    from ..data.slicer import hu_to_uint8
    from ..io.volumes import read_volume, to_canonical

    for path in paths:
        if abort.is_set():
            return
        try:
            t0 = time.perf_counter()
            vol = read_volume(path)
            can, undo = to_canonical(vol)
            u8 = hu_to_uint8(can.array, cfg.slice.hu_window)
            item = (path, vol.affine, vol.header, vol.array.shape, u8, can.spacing, undo, None,
                    time.perf_counter() - t0)
            del vol, can
        except FlexUNetError as exc:
            item = (path, None, None, None, None, None, None, str(exc), 0.0)
            if not keep_going:
                q.put(item)
                return
        except Exception as exc:  # unexpected reader failure: report, do not hang the consumer
            item = (path, None, None, None, None, None, None, f"{path}: {exc.__class__.__name__}: {exc}", 0.0)
            if not keep_going:
                q.put(item)
                return
        while not abort.is_set():
            try:
                q.put(item, timeout=0.5)
                break
            except queue.Full:
                continue
    q.put(None)


def infer_volumes(cfg, inputs: list[str], output: str, weights: str | list[str] | None = None, postprocess: bool = True,
                  keep_going: bool = False, quiet: bool = False, predictor=None) -> dict:
    from ..io.atomic import safe_child
    from ..io.volumes import write_nifti
    from .common import load_predictor
    from .postprocess import grow_tumours, postprocess_liver_tumour

    out_dir = Path(output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out_dir}: output folder cannot be created ({exc.strerror}); expected a writable folder")
    for p in inputs:
        if not Path(p).exists():
            if not keep_going:
                raise DataError(f"{p}: input volume not found; expected a .nii/.nii.gz file, a DICOM folder or .zip, "
                                "or an .mrc file")
    predictor = predictor or load_predictor(cfg, weights)
    q: queue.Queue = queue.Queue(maxsize=1)
    abort = threading.Event()
    existing = [p for p in inputs if Path(p).exists()]
    failures = [(p, f"{p}: input volume not found") for p in inputs if not Path(p).exists()]
    loader = threading.Thread(target=_loader, args=(existing, cfg, q, abort, keep_going), daemon=True)
    loader.start()
    written, timings = [], []
    try:
        while True:
            item = q.get()
            if item is None:
                break
            path, affine, header, shape, u8, spacing, undo, err, t_read = item
            if err:
                if not keep_going:
                    raise DataError(err)
                failures.append((str(path), err))
                continue
            t0 = time.perf_counter()
            labels = predict_volume(predictor, u8, cfg)
            t_pred = time.perf_counter() - t0
            if postprocess and cfg.model.num_classes == 3:
                voxel_mm3 = abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) or 1.0
                labels = postprocess_liver_tumour(
                    labels, min_tumour_voxels=int(np.ceil(cfg.infer.min_tumour_mm3 / voxel_mm3)),
                    tumour_liver_contact=cfg.infer.tumour_liver_contact, fill_holes=cfg.infer.fill_holes)
                if cfg.infer.tumour_grow > 0:
                    lo, hi = cfg.slice.hu_window  # u8 is the window mapped to 0..255: contrast in its units
                    labels = grow_tumours(labels, u8, spacing, cfg.infer.tumour_grow,
                                          min_contrast=GROW_MIN_CONTRAST_HU * 255.0 / (hi - lo),
                                          beyond=cfg.infer.tumour_grow_beyond)
            elif postprocess and cfg.model.num_classes == 2:
                from .postprocess import largest_component

                labels = largest_component(labels >= 1).astype(np.uint8)
            labels = np.ascontiguousarray(undo(labels)).astype(np.uint8)
            if labels.shape != tuple(shape):
                raise FlexUNetError(f"{path}: internal orientation error: {labels.shape} vs {shape}")
            dst = safe_child(out_dir, _output_name(path) + ".nii.gz")
            t1 = time.perf_counter()
            write_nifti(labels, dst, affine=affine, header=header, dtype=np.uint8)
            t_write = time.perf_counter() - t1
            written.append(str(dst))
            timings.append({"case": _output_name(path), "read_s": t_read, "predict_s": t_pred, "write_s": t_write,
                            "slices": int(shape[2])})
            if not quiet:
                print(f"{path} -> {dst} ({shape[2]} slices, read {t_read:.1f} s, predict {t_pred:.1f} s)")
    finally:
        abort.set()
        loader.join(timeout=5)
    return {"written": written, "failures": failures, "timings": timings}
