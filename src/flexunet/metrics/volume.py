"""Volume-level LiTS metrics, in millimetres where it matters.

Conventions
-----------
* **Regions.**  By LiTS convention the *liver* is scored on the whole liver
  *including* tumour: class ``liver`` compares ``pred >= 1`` with
  ``gt >= 1``.  The *tumour* is ``label == 2``.  In general a class whose name
  is ``"liver"`` is evaluated as ``label >= id`` and every other class as
  ``label == id``; ``regions=`` overrides this with explicit label sets.
* **Overlap.**  Dice = 2TP/(2TP+FP+FN), IoU (Jaccard) = TP/(TP+FP+FN),
  VOE = 1 - IoU, RVD = (|P| - |G|)/|G| (signed; LiTS reports it signed).
* **Surface distances** (``assd_mm``, ``hd95_mm``, ``hd_mm``) use the voxel
  spacing: surface voxels are the mask minus its binary erosion (6-connected
  structuring element, outside the array counts as background), distances are
  exact Euclidean distances between surface voxel centres in mm
  (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``, on the
  bounding box of both masks).  ASSD is the mean of both directed distance
  sets pooled (MONAI ``compute_average_surface_distance(symmetric=True)``,
  medpy ``assd``); HD95 is the larger of the two directed 95th percentiles
  (MONAI ``compute_hausdorff_distance(percentile=95)``); ``hd_mm`` is the
  maximum surface distance (the LiTS "MSD").  They agree with MONAI 1.6 when
  it is given the same spacing.
* **Empty masks** (``status`` column):

  ==================  ==========================  ====  ===  ===  ====  =========
  status              meaning                     Dice  IoU  VOE  RVD   distances
  ==================  ==========================  ====  ===  ===  ====  =========
  ``tp``              both non-empty              ...   ...  ...  ...   mm
  ``both_empty``      nothing predicted, nothing  1     1    0    0     0
                      there
  ``false_positive``  truth empty, pred not       0     0    1    NaN   NaN
  ``false_negative``  pred empty, truth not       0     0    1    -1    NaN
  ==================  ==========================  ====  ===  ===  ====  =========

  (``tp`` only says both masks have voxels; they may still not overlap.)
  NaN distances are left out of means (an infinite distance would swamp a
  mean); the status counts say how many cases were left out.
* **Volumetry** per case, for prediction and truth: liver volume in mL
  (``label >= 1``), tumour volume in mL (``label == 2``), tumour burden in %
  of the liver (NaN when the liver is empty) and the number of tumours
  (26-connected components of ``label == 2``).
* **Aggregation** (:func:`aggregate`): per class the mean / median / std
  (population, ``ddof=0``) of per-case Dice over all cases, the *global
  Dice* pooled over all cases (2 sum TP / (2 sum TP + sum FP + sum FN), the
  LiTS "Dice global"), and means of the other metrics ignoring NaN.

File layouts understood by :func:`evaluate_volume_dirs`
-------------------------------------------------------
Ground truth ``gt_dir``: either a canonical case-folder tree
``gt_dir/<case>/label.nii[.gz]`` (if any such folder exists, only those are
used) or flat files ``gt_dir/<case>.nii[.gz]``.
Predictions for a case are looked up as ``pred_dir/<case>.nii[.gz]``,
``pred_dir/<case>_pred.nii[.gz]`` or ``pred_dir/<case>/label.nii[.gz]``;
exactly one must exist.  Prediction files matching no ground-truth case are
listed under ``unmatched_predictions`` and otherwise ignored.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from flexunet.errors import DataError

__all__ = [
    "LITS_CLASSES",
    "case_metrics",
    "aggregate",
    "evaluate_volume_dirs",
    "format_table",
    "surface_distances",
    "CSV_COLUMNS",
]

LITS_CLASSES: dict[int, str] = {1: "liver", 2: "tumour"}
STATUSES = ("tp", "both_empty", "false_positive", "false_negative")
_CONN26 = np.ones((3, 3, 3), dtype=bool)
_NAN = float("nan")

CSV_COLUMNS = (
    "case_id", "class_id", "class_name", "status", "dice", "iou", "voe", "rvd", "assd_mm", "hd95_mm", "hd_mm",
    "tp", "fp", "fn", "pred_voxels", "gt_voxels", "pred_ml", "gt_ml", "pred_components", "gt_components",
    "pred_file", "gt_file",
)
_METRIC_KEYS = ("dice", "iou", "voe", "rvd", "assd_mm", "hd95_mm", "hd_mm")


# --------------------------------------------------------------------------- helpers


def _check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise DataError(f"spacing {spacing!r}: expected {ndim} positive numbers (mm)") from None
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise DataError(f"spacing {tuple(spacing)!r}: expected {ndim} positive finite numbers (mm)")
    return sp


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    sl = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        if len(idx) == 0:
            return None
        sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(sl)


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndi.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndi.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (pred surface -> gt surface, gt surface -> pred surface).

    Both masks must be non-empty.  Computed on the bounding box of both masks
    padded by one background voxel, which gives the same surfaces and
    distances as on the full array.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    sp = _check_spacing(spacing, pred.ndim)
    box = _bbox(pred | gt)
    if box is None or not pred.any() or not gt.any():
        raise ValueError("surface_distances needs two non-empty masks")
    p = np.pad(pred[box], 1)
    g = np.pad(gt[box], 1)
    sp_p, sp_g = _surface(p), _surface(g)
    dt_to_g = ndi.distance_transform_edt(~sp_g, sampling=sp)
    dt_to_p = ndi.distance_transform_edt(~sp_p, sampling=sp)
    return dt_to_g[sp_p], dt_to_p[sp_g]


def _region(label: np.ndarray, class_id: int, name: str, regions: Mapping[int, Sequence[int]] | None) -> np.ndarray:
    if regions is not None and class_id in regions:
        return np.isin(label, np.asarray(list(regions[class_id])))
    if name.lower() == "liver":
        return label >= class_id
    return label == class_id


def _region_text(class_id: int, name: str, regions) -> str:
    if regions is not None and class_id in regions:
        return "label in {" + ",".join(str(v) for v in regions[class_id]) + "}"
    return f"label>={class_id}" if name.lower() == "liver" else f"label=={class_id}"


def _n_components(mask: np.ndarray) -> int:
    box = _bbox(mask)
    if box is None:
        return 0
    _, n = ndi.label(mask[box], structure=np.ones((3,) * mask.ndim, dtype=bool))
    return int(n)


def _nanstat(values: Iterable[float], fn) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(fn(arr)) if arr.size else _NAN


# --------------------------------------------------------------------------- one case


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float, float],
                 classes: Mapping[int, str] = LITS_CLASSES, *,
                 regions: Mapping[int, Sequence[int]] | None = None) -> dict:
    """LiTS metrics of one predicted label volume against its ground truth.

    ``pred`` and ``gt`` are integer label arrays of the same shape (any
    number of dimensions; ``spacing`` has one mm value per dimension).
    Returns ``{"shape", "spacing", "classes": {name: {...}}, "volumetry":
    {"pred": {...}, "gt": {...}}}``; each class entry holds ``class_id``,
    ``region``, ``status``, ``dice``, ``iou``, ``voe``, ``rvd``, ``assd_mm``,
    ``hd95_mm``, ``hd_mm``, ``tp``, ``fp``, ``fn``, ``pred_voxels``,
    ``gt_voxels``, ``pred_ml``, ``gt_ml``, ``pred_components`` and
    ``gt_components`` (26-connected in 3-D).  See the module docstring for the
    region rule (liver includes tumour) and the empty-mask values.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise DataError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}; "
                        "expected equal shapes")
    for what, arr in (("prediction", pred), ("ground truth", gt)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise DataError(f"{what} has dtype {arr.dtype}; expected an integer label array")
    sp = _check_spacing(spacing, pred.ndim)
    voxel_ml = float(np.prod(sp)) / 1000.0
    out: dict = {"shape": [int(s) for s in pred.shape], "spacing": list(sp), "classes": {}}
    for cid, name in classes.items():
        p = _region(pred, int(cid), str(name), regions)
        g = _region(gt, int(cid), str(name), regions)
        tp = int(np.count_nonzero(p & g))
        n_p = int(np.count_nonzero(p))
        n_g = int(np.count_nonzero(g))
        fp, fn = n_p - tp, n_g - tp
        entry: dict = {"class_id": int(cid), "region": _region_text(int(cid), str(name), regions)}
        if n_p and n_g:
            iou = tp / (tp + fp + fn)
            d_pg, d_gp = surface_distances(p, g, sp)
            both = np.concatenate([d_pg, d_gp])
            entry.update(status="tp", dice=2 * tp / (2 * tp + fp + fn), iou=iou, voe=1 - iou, rvd=(n_p - n_g) / n_g,
                         assd_mm=float(both.mean()),
                         hd95_mm=float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))),
                         hd_mm=float(both.max()))
        elif not n_p and not n_g:
            entry.update(status="both_empty", dice=1.0, iou=1.0, voe=0.0, rvd=0.0, assd_mm=0.0, hd95_mm=0.0, hd_mm=0.0)
        elif n_p:
            entry.update(status="false_positive", dice=0.0, iou=0.0, voe=1.0, rvd=_NAN,
                         assd_mm=_NAN, hd95_mm=_NAN, hd_mm=_NAN)
        else:
            entry.update(status="false_negative", dice=0.0, iou=0.0, voe=1.0, rvd=-1.0,
                         assd_mm=_NAN, hd95_mm=_NAN, hd_mm=_NAN)
        entry.update(tp=tp, fp=fp, fn=fn, pred_voxels=n_p, gt_voxels=n_g,
                     pred_ml=n_p * voxel_ml, gt_ml=n_g * voxel_ml,
                     pred_components=_n_components(p), gt_components=_n_components(g))
        for k in _METRIC_KEYS:
            entry[k] = float(entry[k])
        out["classes"][str(name)] = entry
        del p, g
    out["volumetry"] = {"pred": _volumetry(pred, voxel_ml), "gt": _volumetry(gt, voxel_ml)}
    return out


def _volumetry(label: np.ndarray, voxel_ml: float) -> dict:
    liver = label >= 1
    tumour = label == 2
    liver_ml = int(np.count_nonzero(liver)) * voxel_ml
    tumour_ml = int(np.count_nonzero(tumour)) * voxel_ml
    return {
        "liver_ml": liver_ml,
        "tumour_ml": tumour_ml,
        "tumour_pct_of_liver": 100.0 * tumour_ml / liver_ml if liver_ml > 0 else _NAN,
        "n_tumours": _n_components(tumour),
    }


# --------------------------------------------------------------------------- many cases


def aggregate(cases: list[dict], pooled_counts: Mapping[str, Mapping[str, int]] | None = None) -> dict:
    """Summary over cases returned by :func:`case_metrics`.

    Returns ``{<class name>: {...} for each class, "n_cases": N,
    "volumetry": {...}}`` (so ``aggregate(cases)["liver"]["dice_mean"]``).
    Per class: ``n_cases``, ``dice_mean``/``dice_median``/``dice_std`` (per
    case, population std), ``dice_global`` and ``iou_global`` pooled from the
    summed TP/FP/FN (taken from ``pooled_counts[class] = {"tp", "fp", "fn"}``
    when given, e.g. accumulated while streaming, else summed over
    ``cases``), NaN-ignoring means of IoU, VOE, RVD, ASSD, HD95 and HD with
    the number of finite values behind each (``assd_mm_n``...), and
    ``status`` counts.  A pool with no voxel at all has global Dice 1.
    ``volumetry`` holds mean absolute differences prediction - truth of
    liver/tumour volume (mL), tumour burden (% points) and tumour count, plus
    their signed means.  Class names ``n_cases`` and ``volumetry`` are
    reserved.
    """
    names: list[str] = []
    for c in cases:
        for name in c.get("classes", {}):
            if name not in names:
                names.append(name)
    if pooled_counts is not None:
        for name in pooled_counts:
            if name not in names:
                names.append(name)
    reserved = {"n_cases", "volumetry"} & set(names)
    if reserved:
        raise ValueError(f"class names {sorted(reserved)} are reserved in the aggregate")
    result: dict = {"n_cases": len(cases)}
    for name in names:
        entries = [c["classes"][name] for c in cases if name in c.get("classes", {})]
        if pooled_counts is not None and name in pooled_counts:
            tp, fp, fn = (int(pooled_counts[name].get(k, 0)) for k in ("tp", "fp", "fn"))
        else:
            tp = sum(int(e["tp"]) for e in entries)
            fp = sum(int(e["fp"]) for e in entries)
            fn = sum(int(e["fn"]) for e in entries)
        denom = 2 * tp + fp + fn
        dice = np.asarray([e["dice"] for e in entries], dtype=np.float64)
        summary: dict = {
            "n_cases": len(entries),
            "dice_mean": float(dice.mean()) if dice.size else _NAN,
            "dice_median": float(np.median(dice)) if dice.size else _NAN,
            "dice_std": float(dice.std()) if dice.size else _NAN,
            "dice_global": 2 * tp / denom if denom else 1.0,
            "iou_global": tp / (tp + fp + fn) if denom else 1.0,
            "tp": tp, "fp": fp, "fn": fn,
        }
        for k in ("iou", "voe", "rvd", "assd_mm", "hd95_mm", "hd_mm"):
            vals = [e.get(k, _NAN) for e in entries]
            summary[f"{k}_mean"] = _nanstat(vals, np.mean)
            summary[f"{k}_n"] = int(np.count_nonzero(np.isfinite(np.asarray(vals, dtype=np.float64)))) if vals else 0
        summary["status"] = {s: sum(1 for e in entries if e.get("status") == s) for s in STATUSES}
        result[name] = summary
    vol: dict = {}
    pairs = [(c["volumetry"]["pred"], c["volumetry"]["gt"]) for c in cases if "volumetry" in c]
    for key in ("liver_ml", "tumour_ml", "tumour_pct_of_liver", "n_tumours"):
        diffs = [float(p[key]) - float(g[key]) for p, g in pairs]
        vol[f"{key}_abs_diff_mean"] = _nanstat([abs(d) for d in diffs], np.mean)
        vol[f"{key}_diff_mean"] = _nanstat(diffs, np.mean)
    result["volumetry"] = vol
    return result


# --------------------------------------------------------------------------- folders


def _nifti_stem(name: str) -> str | None:
    low = name.lower()
    if low.endswith(".nii.gz"):
        return name[:-7]
    if low.endswith(".nii"):
        return name[:-4]
    return None


def _label_file(folder: Path) -> Path | None:
    for n in ("label.nii.gz", "label.nii"):
        if (folder / n).is_file():
            return folder / n
    return None


def _gt_cases(gt_dir: Path) -> dict[str, Path]:
    if not gt_dir.is_dir():
        raise DataError(f"ground-truth folder {gt_dir} does not exist; expected a folder of label volumes")
    entries = sorted(gt_dir.iterdir(), key=lambda p: p.name)
    tree = {}
    for d in entries:
        if d.is_dir() and not d.name.startswith("."):
            f = _label_file(d)
            if f is not None:
                tree[d.name] = f
    if tree:
        return tree
    flat: dict[str, Path] = {}
    for f in entries:
        stem = _nifti_stem(f.name)
        if stem is None or f.name.startswith(".") or not f.is_file():
            continue
        if stem in flat:
            raise DataError(f"ground truth for case {stem!r} is both {flat[stem]} and {f}; expected one file per case")
        flat[stem] = f
    if not flat:
        raise DataError(f"no ground truth in {gt_dir}; expected <case>/label.nii.gz folders or <case>.nii.gz files")
    return flat


def _pred_candidates(pred_dir: Path, case: str) -> list[Path]:
    return [pred_dir / f"{case}.nii.gz", pred_dir / f"{case}.nii", pred_dir / f"{case}_pred.nii.gz",
            pred_dir / f"{case}_pred.nii", pred_dir / case / "label.nii.gz", pred_dir / case / "label.nii"]


def _pair_cases(pred_dir: Path, gt_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    if not pred_dir.is_dir():
        raise DataError(f"prediction folder {pred_dir} does not exist; expected a folder of label volumes")
    gts = _gt_cases(gt_dir)
    pairs, missing = [], []
    used: set[Path] = set()
    for case, gt_file in gts.items():
        found = [p for p in _pred_candidates(pred_dir, case) if p.is_file()]
        if not found:
            missing.append(case)
            continue
        if len(found) > 1:
            raise DataError(f"case {case!r} has several predictions ({', '.join(str(p) for p in found)}); "
                            "expected exactly one")
        pairs.append((case, found[0], gt_file))
        used.add(found[0].resolve())
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"no prediction in {pred_dir} for {len(missing)} of {len(gts)} cases ({shown}); expected "
                        "<case>.nii.gz, <case>_pred.nii.gz or <case>/label.nii.gz")
    unmatched = []
    for f in sorted(pred_dir.iterdir(), key=lambda p: p.name):
        cand = f if f.is_file() else (_label_file(f) if f.is_dir() else None)
        if cand is None or f.name.startswith(".") or (f.is_file() and _nifti_stem(f.name) is None):
            continue
        if cand.resolve() not in used:
            unmatched.append(str(cand))
    return pairs, unmatched


def _read_label(path: Path):
    """Integer label array and affine of a NIfTI file (thin wrapper over ``flexunet.io.volumes``)."""
    from flexunet.io.volumes import read_nifti

    vol = read_nifti(path, label=True)
    arr = vol.array
    if arr.size and int(arr.min()) < 0:
        raise DataError(f"{path}: label holds negative value {int(arr.min())}; expected labels >= 0")
    return arr, vol.affine


def _check_pair(pred_file: Path, gt_file: Path, p_arr, p_aff, g_arr, g_aff) -> None:
    if p_arr.shape != g_arr.shape:
        raise DataError(f"prediction {pred_file} has shape {tuple(p_arr.shape)} but ground truth {gt_file} has "
                        f"{tuple(g_arr.shape)}; expected equal shapes")
    if not np.allclose(p_aff, g_aff, rtol=0, atol=1e-3):
        diff = np.abs(p_aff - g_aff)
        r, c = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise DataError(f"prediction {pred_file} and ground truth {gt_file} have different affines (element "
                        f"[{r},{c}]: {p_aff[r, c]:.6g} vs {g_aff[r, c]:.6g}); "
                        "expected the same geometry (atol 1e-3 mm)")


def _check_values(path: Path, arr: np.ndarray, allowed: set[int]) -> None:
    """DataError when ``arr`` holds a value outside ``allowed`` (without copying the volume)."""
    if arr.size == 0:
        return
    hi = max(allowed)
    bad: set[int] = set()
    if int(arr.max()) > hi:
        bad |= set(np.unique(arr[arr > hi])[:10].tolist())
    lo = min(allowed)
    if int(arr.min()) < lo:
        bad |= set(np.unique(arr[arr < lo])[:10].tolist())
    for v in range(lo, hi + 1):
        if v not in allowed and np.any(arr == v):
            bad.add(v)
    if bad:
        raise DataError(f"{path}: label values {sorted(bad)[:10]} are not among {sorted(allowed)}; "
                        "expected a label volume with these classes")


def _spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    s = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return tuple(float(v) for v in s)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _fmt_csv(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def _write_text(path: Path, text: str) -> None:
    """Atomic text write (thin wrapper over ``flexunet.io.atomic``)."""
    from flexunet.io.atomic import atomic_save_text

    atomic_save_text(path, text)


def evaluate_volume_dirs(pred_dir, gt_dir, out_dir, classes: Mapping[int, str] = LITS_CLASSES) -> dict:
    """Score every ground-truth case against its prediction; write ``volume_metrics.csv``/``.json`` to ``out_dir``.

    Case pairing is described in the module docstring.  Each pair must have
    equal shapes and affines (atol 1e-3 mm), otherwise :class:`DataError`
    names both files; spacing comes from the ground truth's affine.  Cases
    are loaded one at a time.  The CSV has one row per case and class
    (:data:`CSV_COLUMNS`, NaN written as ``nan``); the JSON holds
    ``{"pred_dir", "gt_dir", "classes", "cases", "aggregate",
    "unmatched_predictions"}`` with NaN written as ``null``.  The same dict
    (with NaN floats) is returned.
    """
    pred_dir, gt_dir, out_dir = Path(pred_dir), Path(gt_dir), Path(out_dir)
    pairs, unmatched = _pair_cases(pred_dir, gt_dir)
    allowed = {0} | {int(c) for c in classes}
    cases = []
    for case, pred_file, gt_file in pairs:
        g_arr, g_aff = _read_label(gt_file)
        p_arr, p_aff = _read_label(pred_file)
        _check_pair(pred_file, gt_file, p_arr, p_aff, g_arr, g_aff)
        _check_values(gt_file, g_arr, allowed)
        _check_values(pred_file, p_arr, allowed)
        res = case_metrics(p_arr, g_arr, _spacing_of(g_aff), classes)
        del p_arr, g_arr
        cases.append({"case_id": case, "pred_file": str(pred_file), "gt_file": str(gt_file), **res})
    result = {
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "classes": {str(int(k)): str(v) for k, v in classes.items()},
        "cases": cases,
        "aggregate": aggregate(cases),
        "unmatched_predictions": unmatched,
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder {out_dir}: {exc.strerror or exc}; "
                        "expected a writable folder") from None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in cases:
        for name, e in c["classes"].items():
            row = {"case_id": c["case_id"], "class_name": name, "pred_file": c["pred_file"],
                   "gt_file": c["gt_file"], **e}
            writer.writerow([_fmt_csv(row.get(k, "")) for k in CSV_COLUMNS])
    _write_text(out_dir / "volume_metrics.csv", buf.getvalue())
    _write_text(out_dir / "volume_metrics.json", json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n")
    return result


# --------------------------------------------------------------------------- printing


def _f(v, fmt: str = "{:.4f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return fmt.format(v)


def format_table(result: dict) -> str:
    """Plain-text table: one line per case (Dice and ASSD per class, volumes), then the per-class summary."""
    cases = result.get("cases", [])
    agg = result.get("aggregate") or aggregate(cases)
    names = [k for k, v in agg.items() if isinstance(v, dict) and "dice_mean" in v]
    lines = []
    if cases:
        head = f"{'case':<24}" + "".join(f"{n + ' Dice':>13}{n + ' ASSD':>13}" for n in names)
        head += f"{'liver mL p/g':>18}{'tumours p/g':>13}"
        lines += [head, "-" * len(head)]
        for c in cases:
            row = f"{str(c.get('case_id', '?'))[:23]:<24}"
            for n in names:
                e = c["classes"].get(n, {})
                row += f"{_f(e.get('dice')):>13}{_f(e.get('assd_mm'), '{:.2f}'):>13}"
            v = c.get("volumetry", {})
            p, g = v.get("pred", {}), v.get("gt", {})
            row += f"{_f(p.get('liver_ml'), '{:.1f}') + '/' + _f(g.get('liver_ml'), '{:.1f}'):>18}"
            row += f"{str(p.get('n_tumours', '-')) + '/' + str(g.get('n_tumours', '-')):>13}"
            lines.append(row)
        lines.append("")
    head = (f"{'class':<10}{'n':>5}{'Dice mean':>11}{'± std':>9}{'median':>9}{'global':>9}{'IoU':>9}{'VOE':>9}"
            f"{'RVD':>9}{'ASSD mm':>9}{'HD95 mm':>9}  empty/FP/FN")
    lines += [head, "-" * len(head)]
    for n in names:
        s = agg[n]
        st = s.get("status", {})
        lines.append(
            f"{n[:9]:<10}{s['n_cases']:>5}{_f(s['dice_mean']):>11}{_f(s['dice_std']):>9}{_f(s['dice_median']):>9}"
            f"{_f(s['dice_global']):>9}{_f(s['iou_mean']):>9}{_f(s['voe_mean']):>9}{_f(s['rvd_mean'], '{:+.4f}'):>9}"
            f"{_f(s['assd_mm_mean'], '{:.2f}'):>9}{_f(s['hd95_mm_mean'], '{:.2f}'):>9}"
            f"  {st.get('both_empty', 0)}/{st.get('false_positive', 0)}/{st.get('false_negative', 0)}"
        )
    vol = agg.get("volumetry", {})
    if vol:
        lines.append("")
        lines.append(
            "volumetry |pred - gt| mean: liver {} mL, tumour {} mL, tumour burden {} %-points, tumour count {}".format(
                _f(vol.get("liver_ml_abs_diff_mean"), "{:.2f}"), _f(vol.get("tumour_ml_abs_diff_mean"), "{:.2f}"),
                _f(vol.get("tumour_pct_of_liver_abs_diff_mean"), "{:.2f}"),
                _f(vol.get("n_tumours_abs_diff_mean"), "{:.2f}")))
    unmatched = result.get("unmatched_predictions") or []
    if unmatched:
        lines.append(f"{len(unmatched)} prediction file(s) without ground truth ignored")
    return "\n".join(lines)
