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

Reading prediction and ground-truth folders, writing the CSV/JSON report and
printing the table are in :mod:`flexunet.metrics.volume_eval`.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from flexunet.errors import DataError
from flexunet.metrics.volumetry import bounding_box, count_components, volumetry

__all__ = [
    "LITS_CLASSES",
    "case_metrics",
    "aggregate",
    "surface_distances",
]

LITS_CLASSES: dict[int, str] = {1: "liver", 2: "tumour"}
STATUSES = ("tp", "both_empty", "false_positive", "false_negative")
_NAN = float("nan")

_METRIC_KEYS = ("dice", "iou", "voe", "rvd", "assd_mm", "hd95_mm", "hd_mm")

# the command half (folders, CSV/JSON, table) lives in flexunet.metrics.volume_eval; these names stay
# importable from here for existing callers
# --------------------------------------------------------------------------- helpers


def _check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise DataError(f"spacing {spacing!r}: expected {ndim} positive numbers (mm)") from None
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise DataError(f"spacing {tuple(spacing)!r}: expected {ndim} positive finite numbers (mm)")
    return sp


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
    box = bounding_box(pred | gt)
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
                     pred_components=count_components(p), gt_components=count_components(g))
        for k in _METRIC_KEYS:
            entry[k] = float(entry[k])
        out["classes"][str(name)] = entry
        del p, g
    out["volumetry"] = {"pred": _volumetry(pred, voxel_ml), "gt": _volumetry(gt, voxel_ml)}
    return out


def _volumetry(label: np.ndarray, voxel_ml: float) -> dict:
    v = volumetry(label, voxel_ml)
    return {
        "liver_ml": v.liver_ml,
        "tumour_ml": v.tumour_ml,
        "tumour_pct_of_liver": v.burden_pct,
        "n_tumours": v.lesion_count,
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
