"""``evaluate-volume``: pair prediction and ground-truth label volumes, score them, write the report.

The metrics themselves are in :mod:`flexunet.metrics.volume` (its docstring
states the conventions); this module finds the files, reads and checks them,
writes ``volume_metrics.csv`` / ``volume_metrics.json`` and prints the table.

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
from typing import Mapping

import numpy as np

from flexunet.errors import DataError
from flexunet.io.atomic import atomic_save_text
from flexunet.metrics.volume import LITS_CLASSES, aggregate, case_metrics

__all__ = ["evaluate_volume_dirs", "format_table", "CSV_COLUMNS"]

CSV_COLUMNS = (
    "case_id", "class_id", "class_name", "status", "dice", "iou", "voe", "rvd", "assd_mm", "hd95_mm", "hd_mm",
    "tp", "fp", "fn", "pred_voxels", "gt_voxels", "pred_ml", "gt_ml", "pred_components", "gt_components",
    "pred_file", "gt_file",
)


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
    """Integer label array and affine of a NIfTI file."""
    from flexunet.io.nifti import read_nifti

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
    atomic_save_text(out_dir / "volume_metrics.csv", buf.getvalue())
    atomic_save_text(out_dir / "volume_metrics.json", json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n")
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
