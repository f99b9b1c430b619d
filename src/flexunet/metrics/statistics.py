"""Statistics of one segmented CT without ground truth: volumes, burden, lesion count, HU in liver and tumour.

What ``flexunet infer-volume --statistics`` writes per case (``<case>.json``, one row of
``statistics.csv``), and :meth:`flexunet.Segmentation.statistics` returns:

* ``liver_ml``: the whole liver, tumours included (``label >= 1``), as ``evaluate-volume``'s
  volumetry; ``tumour_ml`` (``label == 2``); ``burden_pct`` (tumour % of liver, None without liver);
  ``lesion_count`` (26-connected tumour components).
* ``liver_hu_*``: CT values of the liver tissue outside the tumours (``label == 1``);
  ``tumour_hu_*``: of the tumours (``label == 2``).  Each region has ``mean``, ``std``
  (population), ``p5``, ``median`` and ``p95`` (linear interpolation), None when the region is
  empty or no CT is given.
* ``spacing_mm`` (along the array's three axes), ``shape``, ``voxel_ml``.

:func:`flat_row` turns the nested statistics of a case into one CSV row.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from flexunet.metrics.volumetry import volumetry, voxel_volume_ml

#: the HU summaries of a region, in the order of the CSV columns
HU_FIELDS = ("mean", "std", "p5", "median", "p95")

_SIZES = frozenset({"spacing_mm", "shape", "input_size"})


def hu_summary(image: np.ndarray | None, mask: np.ndarray) -> dict[str, float | None]:
    """Mean, spread and percentiles of the CT inside a mask.

    Args:
        image: the CT (X, Y, Z) in HU, or None.
        mask: boolean (X, Y, Z), same shape.

    Returns:
        ``{"mean", "std", "p5", "median", "p95"}`` in HU, each None when the mask is empty or
        ``image`` is None.
    """
    if image is None or not mask.any():
        return {k: None for k in HU_FIELDS}
    values = np.asarray(image)[mask].astype(np.float64, copy=False)
    p5, med, p95 = np.percentile(values, [5, 50, 95])
    return {"mean": round(float(values.mean()), 3), "std": round(float(values.std()), 3),
            "p5": round(float(p5), 3), "median": round(float(med), 3), "p95": round(float(p95), 3)}


def case_statistics(labels: np.ndarray, affine: np.ndarray, image: np.ndarray | None = None) -> dict[str, Any]:
    """The ground-truth-free statistics of one label volume.

    Args:
        labels: uint8 (X, Y, Z): 0 background, 1 liver, 2 tumour.
        affine: 4x4 voxel-to-world (RAS+ mm) matrix.
        image: the CT (X, Y, Z) in HU on the same grid, or None (the HU fields are then None).

    Returns:
        A JSON-ready dict: ``liver_ml``, ``tumour_ml``, ``burden_pct``, ``lesion_count``,
        ``liver_hu`` and ``tumour_hu`` (:func:`hu_summary`), ``spacing_mm``, ``shape``, ``voxel_ml``.
    """
    aff = np.asarray(affine, dtype=np.float64)
    voxel_ml = voxel_volume_ml(aff)
    vol = volumetry(labels, voxel_ml)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(0))
    return {
        "liver_ml": round(vol.liver_ml, 4),
        "tumour_ml": round(vol.tumour_ml, 4),
        "burden_pct": None if math.isnan(vol.burden_pct) else round(vol.burden_pct, 4),
        "lesion_count": vol.lesion_count,
        "liver_hu": hu_summary(image, labels == 1),
        "tumour_hu": hu_summary(image, labels == 2),
        "spacing_mm": [round(float(s), 6) for s in spacing],
        "shape": [int(n) for n in labels.shape],
        "voxel_ml": round(voxel_ml, 9),
    }


def flat_row(stats: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested statistics as one flat CSV row: ``{"liver_hu": {"mean": 1}}`` -> ``{"liver_hu_mean": 1}``.

    Sizes (``spacing_mm``, ``shape``, ``input_size``) become ``x``-joined strings (``"0.7x0.7x1.6"``),
    other lists of plain values ``;``-joined ones; lists of dicts (the lesion table) are left out,
    since they have their own file.

    Args:
        stats: the statistics of one case.
        prefix: put before every key (used for nested keys).

    Returns:
        A flat dict of str, int, float or None values.
    """
    row: dict[str, Any] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            row.update(flat_row(value, f"{name}_"))
        elif isinstance(value, (list, tuple)):
            if all(v is None or isinstance(v, (int, float, str)) for v in value):
                sep = "x" if key in _SIZES else ";"
                row[name] = sep.join("" if v is None else str(v) for v in value)
        else:
            row[name] = value
    return row
