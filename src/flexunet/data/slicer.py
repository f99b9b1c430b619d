"""CT volumes -> 2D slices, the same way for the PNG dataset, on-the-fly training and volume inference.

Orientation (documented, radiological): each volume is first reoriented to
the closest canonical RAS+ orientation (i grows towards the patient's right,
j towards anterior, k towards the head); an axial slice ``k`` is shown as seen
from the feet, with the patient's anterior at the top and the patient's right
on the image's left: ``view = arr[:, :, k].T[::-1, ::-1]``.

Intensity: HU clipped to ``[slice] hu_window`` and mapped to 0..255 (uint8),
exactly what the PNG files hold, so a model trained on PNGs sees the same
numbers in ``infer-volume``.

2.5D: with ``image_channels = 3`` (the CT default) the channels are slices
z-1, z, z+1 (edges repeat the end slice); with 1 channel, slice z alone.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config.rules import context_enabled
from ..errors import DataError
from .planes import normalize_planes, slice_name, to_plane


def hu_to_uint8(hu: np.ndarray, window: tuple[float, float], chunk: int = 16) -> np.ndarray:
    """HU clipped to ``window`` and mapped to 0..255, rounded: uint8 of ``hu``'s shape.

    A volume (3-D or more) is converted ``chunk`` slices of its third axis at a time, so no float copy
    of the whole volume is made (a 512x512x200 CT in float64 would be 420 MB per temporary).
    """
    lo, hi = float(window[0]), float(window[1])
    scale = 255.0 / (hi - lo)
    if hu.ndim < 3:
        return np.rint((np.clip(hu, lo, hi) - lo) * scale).astype(np.uint8)
    out = np.empty(hu.shape, np.uint8)
    for start in range(0, hu.shape[2], chunk):
        part = np.clip(hu[:, :, start:start + chunk], lo, hi) - lo
        part *= scale
        out[:, :, start:start + chunk] = np.rint(part, out=part)
    return out


def to_view(slice_ij: np.ndarray) -> np.ndarray:
    """Canonical RAS (i, j) slice -> radiological display (rows, cols)."""
    return slice_ij.T[::-1, ::-1]


def from_view(view: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_view`."""
    return view[::-1, ::-1].T


def slice_channels(vol_u8: np.ndarray, k: int, channels: int, context: bool) -> np.ndarray:
    """Display-oriented channels for slice ``k`` of a canonical windowed volume.

    Args:
        vol_u8: uint8 (I, J, K) canonical volume, already HU-windowed.
        k: the axial slice.
        channels: ``[model] image_channels`` (1 or 3).
        context: 2.5D context (see :func:`context_enabled`): three channels are
            slices k-1, k, k+1 (the ends repeat); otherwise slice k three times.

    Returns:
        uint8 (channels, rows, cols) in display orientation (:func:`to_view`).
    """
    nz = vol_u8.shape[2]
    if channels == 1:
        ks = [k]
    elif context:
        ks = [max(k - 1, 0), k, min(k + 1, nz - 1)]
    else:
        ks = [k, k, k]
    return np.stack([to_view(vol_u8[:, :, kk]) for kk in ks])


@dataclass
class Case:
    case_id: str
    image: Path
    label: Path | None


def list_cases(cases_dir: str | os.PathLike) -> list[Case]:
    """Canonical case folders: ``<cases_dir>/<case_id>/image.nii.gz`` (+ ``label.nii.gz``)."""
    root = Path(cases_dir)
    if not root.is_dir():
        raise DataError(f"{root}: cases folder not found; expected folders <case_id>/image.nii.gz + label.nii.gz "
                        "(make them with `flexunet import` or `flexunet phantom`)")
    cases = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        img = d / "image.nii.gz"
        if img.exists():
            lab = d / "label.nii.gz"
            cases.append(Case(d.name, img, lab if lab.exists() else None))
    if not cases:
        raise DataError(f"{root}: no case folders with image.nii.gz; expected <case_id>/image.nii.gz + label.nii.gz")
    return cases


def split_cases(case_ids: list[str], cfg) -> dict[str, str]:
    """Patient-wise split: explicit lists when given, else ratios on a seeded shuffle. case_id -> split."""
    s = cfg.slice
    ids = sorted(case_ids)
    if s.train_cases or s.valid_cases or s.test_cases:
        out = {}
        for split, lst in (("train", s.train_cases), ("valid", s.valid_cases), ("test", s.test_cases)):
            for cid in lst:
                cid = str(cid)
                if cid not in ids:
                    raise DataError(f"{cfg.source}: [slice] {split}_cases names {cid!r}, which is not a case in "
                                    f"{s.cases_dir}; expected one of {', '.join(ids[:8])}")
                if cid in out:
                    raise DataError(f"{cfg.source}: [slice] case {cid!r} is listed in both {out[cid]} and {split}; "
                                    "expected each patient in one split")
                out[cid] = split
        return out
    rng = np.random.default_rng(s.seed)
    order = list(rng.permutation(ids))
    n = len(order)
    r_tr, r_va, r_te = s.split_ratios
    n_va = int(round(n * r_va)) if r_va > 0 else 0
    n_te = int(round(n * r_te)) if r_te > 0 else 0
    if n >= 3:
        n_va, n_te = max(n_va, 1 if r_va > 0 else 0), max(n_te, 1 if r_te > 0 else 0)
    n_tr = n - n_va - n_te
    if n_tr < 1:
        raise DataError(f"{s.cases_dir}: {n} cases cannot be split {s.split_ratios} with at least one training "
                        "case; expected more cases or explicit [slice] train_cases/valid_cases/test_cases")
    out = {}
    for i, cid in enumerate(order):
        out[str(cid)] = "train" if i < n_tr else ("valid" if i < n_tr + n_va else "test")
    return out


def load_case_canonical(case: Case, cfg):
    """-> (windowed uint8 canonical volume, canonical label or None)."""
    from ..io.volumes import check_same_geometry, read_volume, to_canonical

    img = read_volume(case.image)
    can, _ = to_canonical(img)
    vol_u8 = hu_to_uint8(can.array, cfg.slice.hu_window)
    lab = None
    if case.label is not None:
        lvol = read_volume(case.label, label=True)
        check_same_geometry(img, lvol, case.case_id)
        lab = np.asarray(to_canonical(lvol)[0].array).astype(np.uint8)
        if lab.max() >= cfg.model.num_classes:
            raise DataError(f"{case.label}: label value {int(lab.max())} >= [model] num_classes "
                            f"{cfg.model.num_classes}; expected class ids 0..{cfg.model.num_classes - 1}")
    return vol_u8, lab


def choose_slices(lab: np.ndarray | None, cfg, rng: np.random.Generator) -> list[int]:
    """The slices of a training or validation case: all, or with ``[slice] foreground_only`` those with
    foreground plus a random ``background_fraction`` of the others (test cases keep all, see
    :func:`slice_cases`).

    Args:
        lab: the case's canonical label volume (I, J, K), or None (then no slice).
        cfg: the config (``[slice] foreground_only``, ``background_fraction``).
        rng: draws the background slices kept.

    Returns:
        Sorted slice indices k.
    """
    nz = lab.shape[2] if lab is not None else 0
    if lab is None or not cfg.slice.foreground_only:
        return list(range(nz))
    fg = lab.reshape(-1, nz).any(0)
    keep = list(np.flatnonzero(fg))
    bg = np.flatnonzero(~fg)
    n_bg = int(round(len(bg) * cfg.slice.background_fraction))
    if n_bg:
        keep += list(rng.choice(bg, n_bg, replace=False))
    return sorted(int(k) for k in keep)


def _resize_pair(img_chw: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]):
    from PIL import Image

    h, w = size
    if img_chw.shape[1:] == (h, w):
        return img_chw, mask
    chans = [np.asarray(Image.fromarray(c).resize((w, h), Image.BILINEAR)) for c in img_chw]
    m = None if mask is None else np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    return np.stack(chans), m


def slice_sample(vol_u8: np.ndarray, lab: np.ndarray | None, k: int, cfg):
    """uint8 image (C, H, W) and uint8 mask (H, W) at the model size, display-oriented."""
    img = slice_channels(vol_u8, k, cfg.model.image_channels,
                         context_enabled(cfg.model.image_channels, cfg.slice.context_slices))
    mask = None if lab is None else to_view(lab[:, :, k]).copy()
    return _resize_pair(img, mask, (cfg.model.image_height, cfg.model.image_width))


def slice_cases(cfg, quiet: bool = False) -> dict:
    """``flexunet slice``: write train/valid/test x images/masks PNGs and ``split.csv``.

    Train and valid patients give the slices :func:`choose_slices` picks; test patients give every
    slice, so ``evaluate`` scores the empty slices a patient has too.
    """
    from PIL import Image
    from tqdm import tqdm

    from ..io.atomic import save_output_text
    from ..io.png import save_png_atomic

    cases = list_cases(cfg.slice.cases_dir)
    unlabelled = [c.case_id for c in cases if c.label is None]
    if unlabelled:
        raise DataError(f"{cfg.slice.cases_dir}: cases without label.nii.gz: {', '.join(unlabelled[:5])}; "
                        "expected a label for every case to slice")
    split = split_cases([c.case_id for c in cases], cfg)
    out = Path(cfg.slice.output_dir)
    colors = np.array(cfg.class_colors, dtype=np.uint8)
    counts: dict[str, int] = {"train": 0, "valid": 0, "test": 0}
    rows = []
    rng = np.random.default_rng(cfg.slice.seed)
    planes = normalize_planes(cfg.slice.planes)
    for case in tqdm([c for c in cases if c.case_id in split], desc="slice", disable=quiet, leave=False):
        sp = split[case.case_id]
        vol_can, lab_can = load_case_canonical(case, cfg)
        idir, mdir = out / sp / "images", out / sp / "masks"
        idir.mkdir(parents=True, exist_ok=True)
        mdir.mkdir(parents=True, exist_ok=True)
        n_case = 0
        for plane in planes:
            vol_u8 = to_plane(vol_can, plane)
            lab = None if lab_can is None else to_plane(lab_can, plane)
            ks = choose_slices(lab, cfg, rng)
            if sp == "test":
                # `evaluate` scores a test patient's every slice, the empty ones included; the slices are
                # still drawn above so the train and valid picks do not depend on who is in the test split
                ks = list(range(vol_u8.shape[2]))
            for k in ks:
                img, mask = slice_sample(vol_u8, lab, k, cfg)
                name = slice_name(case.case_id, plane, k, planes)
                pil = Image.fromarray(img[0]) if img.shape[0] == 1 else Image.fromarray(np.moveaxis(img, 0, -1))
                save_png_atomic(pil, idir / name)
                save_png_atomic(Image.fromarray(colors[mask]), mdir / name)
            n_case += len(ks)
        counts[sp] += n_case
        rows.append((case.case_id, sp, n_case, str(case.image)))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case_id", "split", "slices", "image"])
    w.writerows(sorted(rows, key=lambda r: (r[1], r[0])))
    save_output_text(out / "split.csv", buf.getvalue())
    if not quiet:
        per = {s: sorted(c for c, v in split.items() if v == s) for s in ("train", "valid", "test")}
        for s in ("train", "valid", "test"):
            print(f"{s:5s}: {len(per[s])} patients, {counts[s]} slices ({', '.join(per[s])})")
        print(f"wrote {out} and {out / 'split.csv'}")
    return {"split": split, "counts": counts, "output_dir": str(out)}
