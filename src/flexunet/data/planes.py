"""Slicing planes: axial, coronal and sagittal slices of a canonical RAS volume.

A plane is handled as an axis order of the canonical (I=R, J=A, K=S) volume
that puts the plane's normal last; every slicing function then cuts along the
last axis as for axial slices, and :func:`to_view` shows each slice
radiologically:

* axial (normal S): slice (I, J); rows anterior to posterior, columns the
  patient's right to left, as seen from the feet;
* coronal (normal A): slice (I, K); rows head to feet, columns right to left,
  as seen from the front;
* sagittal (normal R): slice (J, K); rows head to feet, columns anterior to
  posterior.

The in-plane size of a coronal or sagittal slice follows the volume's own
grid (e.g. 512 x 129 for 129 axial slices); it is resized to the model's size
like any slice, and the probabilities are resized back.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..config.rules import PLANES
from ..errors import ConfigError

#: plane -> axis order of the canonical volume that puts the plane's normal last
PLANE_AXES: dict[str, tuple[int, int, int]] = {
    "axial": (0, 1, 2),
    "coronal": (0, 2, 1),
    "sagittal": (1, 2, 0),
}
assert tuple(PLANE_AXES) == PLANES


def normalize_planes(planes: str | Iterable[str]) -> tuple[str, ...]:
    """``[slice] planes`` as a tuple of distinct plane names in the order given.

    Raises:
        ConfigError: an unknown plane, or none.
    """
    names = (planes,) if isinstance(planes, str) else tuple(planes)
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        if key not in PLANE_AXES:
            raise ConfigError(f"[slice] planes = {planes!r}: unknown plane {name!r}; expected axial, coronal, "
                              "sagittal or a list of them")
        if key not in out:
            out.append(key)
    if not out:
        raise ConfigError(f"[slice] planes = {planes!r}: expected at least one of axial, coronal, sagittal")
    return tuple(out)


def to_plane(volume: np.ndarray, plane: str) -> np.ndarray:
    """A view of a canonical (I, J, K, ...) array with ``plane``'s normal as axis 2 (extra axes kept)."""
    axes = PLANE_AXES[plane]
    return volume.transpose(*axes, *range(3, volume.ndim))


def from_plane(volume: np.ndarray, plane: str) -> np.ndarray:
    """Inverse of :func:`to_plane`: back to canonical (I, J, K, ...) axis order (a view)."""
    inverse = tuple(int(i) for i in np.argsort(PLANE_AXES[plane]))
    return volume.transpose(*inverse, *range(3, volume.ndim))


def slice_name(case_id: str, plane: str, k: int, planes: tuple[str, ...]) -> str:
    """PNG name of slice ``k``: ``<case>_<k>.png`` for axial-only datasets (the original layout),
    ``<case>_<plane>_<k>.png`` when the dataset holds several planes or a non-axial one."""
    if planes == ("axial",):
        return f"{case_id}_{k:04d}.png"
    return f"{case_id}_{plane}_{k:04d}.png"
