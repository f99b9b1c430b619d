"""Volumetry of a liver/tumour label volume: organ and tumour volumes, burden and lesion count.

Needs no ground truth: :func:`volumetry` describes one label volume, so it serves both the
prediction of a new patient (:func:`flexunet.segment`) and each side of ``evaluate-volume``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Volumetry:
    """Volumes of one label volume (labels 0 background, 1 liver, 2 tumour).

    Attributes:
        liver_ml: the whole liver, tumours included (label >= 1), in mL.
        tumour_ml: tumour (label 2), in mL.
        burden_pct: tumour volume as a percentage of the whole liver (NaN when there is no liver).
        lesion_count: connected tumour components (26-connectivity).
    """

    liver_ml: float
    tumour_ml: float
    burden_pct: float
    lesion_count: int

    def as_dict(self) -> dict:
        """The fields as a plain dict (for JSON and CSV)."""
        return asdict(self)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every true voxel of ``mask`` (any number of dimensions), or None if empty."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def count_components(mask: np.ndarray) -> int:
    """Connected components of a boolean array (full connectivity: 26 in 3-D, 8 in 2-D)."""
    from scipy import ndimage as ndi

    box = bounding_box(mask)
    if box is None:
        return 0
    _, n = ndi.label(mask[box], structure=np.ones((3,) * mask.ndim, dtype=bool))
    return int(n)


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL from a 4x4 voxel-to-world (mm) affine."""
    return abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def volumetry(labels: np.ndarray, voxel_ml: float) -> Volumetry:
    """Volumetry of a label volume.

    Args:
        labels: integer labels, any shape (usually (X, Y, Z)); 1 = liver, 2 = tumour.
        voxel_ml: volume of one voxel in mL (:func:`voxel_volume_ml`).

    Returns:
        :class:`Volumetry`.
    """
    liver_ml = int(np.count_nonzero(labels >= 1)) * voxel_ml
    tumour = labels == 2
    tumour_ml = int(np.count_nonzero(tumour)) * voxel_ml
    return Volumetry(liver_ml=liver_ml, tumour_ml=tumour_ml,
                     burden_pct=100.0 * tumour_ml / liver_ml if liver_ml > 0 else math.nan,
                     lesion_count=count_components(tumour))
