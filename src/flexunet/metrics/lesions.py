"""Lesion table: one row per tumour component of a label volume, measured as RECIST and LI-RADS do.

Needs no ground truth.  Every measurement is in physical millimetres on the input's own voxel
grid, through its affine (oblique, permuted and anisotropic grids included):

* **Components** are the 26-connected components of ``label == 2`` (the same count as
  :func:`flexunet.metrics.volumetry.volumetry`'s ``lesion_count``).
* **Order and ids.**  Lesions are sorted by volume, largest first; equal volumes keep the order
  of their first voxel in a C-order scan of the array.  Ids are 1, 2, ... in that order, so the
  same labels always give the same ids.
* **Axial slices** are the slices across the array axis whose direction is closest to the
  patient's head-foot axis (world S); for a DICOM axial series that is the slice index.
* **Long axis** (``long_axis_mm``): the longest diameter of the lesion's outline in any one
  axial slice.  The outline of a slice runs through the midpoints between each lesion pixel and
  its 4-neighbours outside the lesion (the contour marching squares traces at level 0.5), so a
  diameter is measured edge to edge, not between pixel centres; a one-pixel lesion measures
  one pixel.  The slice with the longest diameter is the measurement ``slice`` (the first such
  slice on ties).
* **Short axis** (``short_axis_mm``): in that slice, the longest extent of the outline
  perpendicular to the long axis, over strips one pixel wide across the long axis.
* **Centroid** (``centroid_mm``): the mean voxel position mapped through the affine, in RAS+ mm
  (NIfTI's world) or in DICOM's LPS patient coordinates (``coordinates="LPS"``: x and y negated).
* **Mean HU** of the lesion's voxels in the CT, when the CT is given.
* **Distance to the liver surface** (``liver_surface_mm``): the shortest gap between the
  lesion and the outside of the liver (``label == 0``), from voxel edge to voxel edge (centre
  distance minus the voxel's extent along the line between them); 0 for a lesion that reaches
  the surface.  The border of the scan does not count as a surface (a liver cut by the scan
  range continues beyond it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from flexunet.errors import DataError
from flexunet.metrics.volumetry import bounding_box, voxel_volume_ml

#: world axes a lesion's centroid can be given in
COORDINATE_SYSTEMS = ("RAS", "LPS")

Point3 = tuple[float, float, float]


@dataclass(frozen=True)
class Lesion:
    """One tumour component of a label volume.

    Attributes:
        id: 1 for the largest lesion, 2 for the next, ... (stable for a given label volume).
        voxels: number of voxels.
        volume_ml: volume in mL.
        long_axis_mm: longest axial diameter (mm).
        short_axis_mm: longest diameter perpendicular to it in the same slice (mm).
        slice: index of the measurement slice along ``slice_axis`` of the input array.
        slice_axis: the array axis (0, 1 or 2) across which axial slices are taken.
        centroid_mm: centre of mass in world mm, in ``coordinates``.
        coordinates: "RAS" (RAS+, NIfTI) or "LPS" (DICOM patient coordinates).
        mean_hu: mean CT value of the lesion (NaN without a CT).
        liver_surface_mm: gap between the lesion and the outside of the liver (mm; 0 when it
            reaches the surface; NaN when the liver has no outside within the scan).
        long_axis_voxels: the long axis' two end points as (i, j, k) voxel coordinates (floats).
        short_axis_voxels: the short axis' two end points as (i, j, k) voxel coordinates.
    """

    id: int
    voxels: int
    volume_ml: float
    long_axis_mm: float
    short_axis_mm: float
    slice: int
    slice_axis: int
    centroid_mm: Point3
    coordinates: str
    mean_hu: float
    liver_surface_mm: float
    long_axis_voxels: tuple[Point3, Point3]
    short_axis_voxels: tuple[Point3, Point3]

    def as_dict(self) -> dict:
        """The fields as plain JSON types (NaN becomes None)."""
        out = {}
        for key in self.__dataclass_fields__:
            out[key] = _plain(getattr(self, key))
        return out

    def row(self) -> dict:
        """The fields of the lesion table's CSV row (end points left out, centroid in three columns)."""
        x, y, z = self.centroid_mm
        c = self.coordinates.lower()
        return {"id": self.id, "volume_ml": _plain(self.volume_ml), "voxels": self.voxels,
                "long_axis_mm": _plain(self.long_axis_mm), "short_axis_mm": _plain(self.short_axis_mm),
                "slice": self.slice, f"centroid_{c[0]}_mm": _plain(x), f"centroid_{c[1]}_mm": _plain(y),
                f"centroid_{c[2]}_mm": _plain(z), "mean_hu": _plain(self.mean_hu),
                "liver_surface_mm": _plain(self.liver_surface_mm)}


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    return value


def axial_axis(affine: np.ndarray) -> int:
    """The array axis whose direction is closest to the world's head-foot (S) axis.

    Args:
        affine: 4x4 voxel-to-world (RAS+ mm) matrix.

    Returns:
        0, 1 or 2.
    """
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    cos_s = np.abs(cols[2]) / np.linalg.norm(cols, axis=0)
    return int(np.argmax(cos_s))


def _plane_basis(affine: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """2x2 upper-triangular R with |R (a, b)| = the world distance (mm) of the in-plane index step (a, b)."""
    cols = np.asarray(affine, dtype=np.float64)[:3, list(axes)]
    _, r = np.linalg.qr(cols)
    return r


def _outline_points(mask2d: np.ndarray) -> np.ndarray:
    """(N, 2) index coordinates of the midpoints between mask pixels and their 4-neighbours outside it."""
    m = np.pad(mask2d, 1)
    pts = []
    for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        outside = ~np.roll(m, (-da, -db), axis=(0, 1))
        a, b = np.nonzero(m & outside)
        pts.append(np.stack([a - 1 + da / 2.0, b - 1 + db / 2.0], axis=1))
    return np.concatenate(pts)


def _hull(points: np.ndarray) -> np.ndarray:
    """Indices of the convex hull's vertices (all points when Qhull cannot build a hull)."""
    if len(points) < 4:
        return np.arange(len(points))
    from scipy.spatial import ConvexHull, QhullError

    try:
        return ConvexHull(points).vertices
    except (QhullError, ValueError):
        return np.arange(len(points))


def _diameter(points_mm: np.ndarray) -> tuple[float, int, int]:
    """Longest distance between two of the points, and the two points' indices."""
    idx = _hull(points_mm)
    h = points_mm[idx]
    d2 = ((h[:, None, :] - h[None, :, :]) ** 2).sum(-1)
    flat = int(np.argmax(d2))
    i, j = divmod(flat, len(h))
    return math.sqrt(float(d2[i, j])), int(idx[i]), int(idx[j])


def _short_axis(points_mm: np.ndarray, p: np.ndarray, q: np.ndarray, strip_mm: float
                ) -> tuple[float, np.ndarray, np.ndarray]:
    """Longest extent of the outline perpendicular to p->q, over strips ``strip_mm`` wide across it.

    Returns:
        (length mm, end point 1, end point 2) in the same 2-D mm coordinates as the points.
    """
    u = (q - p) / max(float(np.linalg.norm(q - p)), 1e-12)
    v = np.array([-u[1], u[0]])
    tu, tv = points_mm @ u, points_mm @ v
    order = np.argsort(tu, kind="stable")
    tu, tv = tu[order], tv[order]
    best, best_t, lo, hi = -1.0, 0.0, 0.0, 0.0
    for t in np.arange(tu[0], tu[-1] + strip_mm / 4, strip_mm / 4):
        a, b = np.searchsorted(tu, t - strip_mm / 2), np.searchsorted(tu, t + strip_mm / 2, side="right")
        if b - a < 2:
            continue
        seg = tv[a:b]
        ext = float(seg.max() - seg.min())
        if ext > best + 1e-9:
            best, best_t, lo, hi = ext, float(t), float(seg.min()), float(seg.max())
    if best < 0:
        return 0.0, p.copy(), p.copy()
    return best, best_t * u + lo * v, best_t * u + hi * v


def _axial_measurement(comp: np.ndarray, origin: np.ndarray, affine: np.ndarray, axis: int):
    """Long and short axis of one component (a boolean box whose corner is voxel ``origin``).

    Returns:
        (long mm, short mm, slice index, long end points (2, 3), short end points (2, 3)) in voxels.
    """
    plane = tuple(a for a in range(3) if a != axis)
    r = _plane_basis(affine, plane)
    best = (-1.0, 0, None, 0, 0)
    for s in range(comp.shape[axis]):
        m = np.take(comp, s, axis=axis)
        if not m.any():
            continue
        pts = _outline_points(m)
        mm = pts @ r.T
        d, i, j = _diameter(mm)
        if d > best[0] + 1e-9:
            best = (d, s, pts, i, j)
    long_mm, s, pts, i, j = best
    mm = pts @ r.T
    spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, list(plane)] ** 2).sum(0))
    short_mm, e1, e2 = _short_axis(mm, mm[i], mm[j], float(spacing.max()))
    rinv = np.linalg.inv(r)

    def voxel(ab: np.ndarray) -> np.ndarray:
        out = np.empty(3)
        out[axis] = s
        out[list(plane)] = ab
        return out + origin

    long_ends = np.stack([voxel(pts[i]), voxel(pts[j])])
    short_ends = np.stack([voxel(rinv @ e1), voxel(rinv @ e2)])
    return long_mm, short_mm, int(s + origin[axis]), long_ends, short_ends


class _SurfaceDistance:
    """Gap (mm) from a lesion to the outside of the liver, by distance transforms of boxes around it.

    The box starts 10 mm wider than the lesion on each side and doubles until the gap found in it is
    shorter than the distance to any voxel outside the box (or the box is the whole scan), so the
    answer is the same as on the whole scan.  Voxels beyond the scan count as liver: the border of the
    scan is no surface.
    """

    def __init__(self, liver: np.ndarray, spacing: np.ndarray):
        self.liver = liver
        self.spacing = spacing

    def _touches(self, voxels: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
        """True when a voxel outside the liver is one of the lesion's 26 neighbours (a gap of 0)."""
        from scipy import ndimage as ndi

        blo, bhi = np.maximum(lo - 1, 0), np.minimum(hi + 1, np.array(self.liver.shape))
        box = tuple(slice(a, b) for a, b in zip(blo, bhi))
        mask = np.zeros(tuple(bhi - blo), bool)
        mask[tuple((voxels - blo).T)] = True
        grown = ndi.binary_dilation(mask, structure=np.ones((3, 3, 3), bool))
        return bool((grown & ~self.liver[box]).any())

    def gap(self, voxels: np.ndarray) -> float:
        """Smallest edge-to-edge gap (mm) from the voxels (N, 3) to a voxel outside the liver (NaN: none)."""
        from scipy import ndimage as ndi

        shape = np.array(self.liver.shape)
        lo, hi = voxels.min(0), voxels.max(0) + 1
        if self._touches(voxels, lo, hi):
            return 0.0
        reach = float(np.linalg.norm(self.spacing))  # the most a voxel's extent takes off a gap
        margin = 10.0
        while True:
            m = np.ceil(margin / self.spacing).astype(int)
            blo, bhi = np.maximum(lo - m, 0), np.minimum(hi + m, shape)
            whole = bool(np.all(blo == 0) and np.all(bhi == shape))
            sub = self.liver[tuple(slice(a, b) for a, b in zip(blo, bhi))]
            if sub.all():
                if whole:
                    return math.nan
                margin *= 2
                continue
            dist, nearest = ndi.distance_transform_edt(sub, sampling=self.spacing, return_indices=True)
            local = voxels - blo
            idx = tuple(local.T)
            centre = dist[idx]
            outside = np.stack([n[idx] for n in nearest], axis=1)
            unit = (outside - local) * self.spacing / np.maximum(centre, 1e-12)[:, None]
            extent = (np.abs(unit) * self.spacing).sum(1)  # one voxel's half extent at each end of the line
            found = float(max(0.0, np.min(centre - extent)))
            # a voxel outside the box is at least margin away from every lesion voxel centre
            if whole or found <= margin - reach:
                return found
            margin *= 2


def lesion_table(labels: np.ndarray, affine: np.ndarray, image: np.ndarray | None = None, *,
                 coordinates: str = "RAS") -> list[Lesion]:
    """Measure every tumour component of a label volume.

    Args:
        labels: integer labels (X, Y, Z): 0 background, 1 liver, 2 tumour.
        affine: 4x4 voxel-to-world (RAS+ mm) matrix of the labels' grid.
        image: the CT (X, Y, Z) in HU on the same grid, for ``mean_hu``; None leaves it NaN.
        coordinates: "RAS" or "LPS": the world axes of ``centroid_mm``.

    Returns:
        The lesions, largest first (see the module's conventions); empty without tumour.

    Raises:
        DataError: not a 3-D volume, an image of another shape, a singular affine or an unknown
            coordinate system.
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    aff = np.asarray(affine, dtype=np.float64)
    if labels.ndim != 3:
        raise DataError(f"labels of shape {labels.shape}: expected a 3-D label volume (X, Y, Z)")
    if image is not None and tuple(image.shape) != labels.shape:
        raise DataError(f"image of shape {tuple(image.shape)} and labels of shape {labels.shape}; "
                        "expected the CT on the labels' grid")
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise DataError(f"affine {aff.tolist()}: expected a finite, invertible 4x4 voxel-to-world matrix")
    if coordinates not in COORDINATE_SYSTEMS:
        raise DataError(f"coordinates={coordinates!r}: expected one of {', '.join(COORDINATE_SYSTEMS)}")
    tumour = labels == 2
    box = bounding_box(tumour)
    if box is None:
        return []
    offset = np.array([b.start for b in box])
    comps, n = ndi.label(tumour[box], structure=np.ones((3, 3, 3), dtype=bool))
    counts = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    objects = ndi.find_objects(comps)
    order = sorted(range(n), key=lambda c: (-int(counts[c]), c))  # labels number components in scan order
    axis = axial_axis(aff)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(0))
    voxel_ml = voxel_volume_ml(aff)
    surface = _SurfaceDistance(labels >= 1, spacing)
    flip = np.array([-1.0, -1.0, 1.0]) if coordinates == "LPS" else np.ones(3)
    out = []
    for rank, c in enumerate(order, start=1):
        sl = objects[c]
        comp = comps[sl] == c + 1
        origin = offset + np.array([s.start for s in sl])
        vox = np.argwhere(comp) + origin
        centroid = (aff[:3, :3] @ vox.mean(0) + aff[:3, 3]) * flip
        long_mm, short_mm, sidx, long_ends, short_ends = _axial_measurement(comp, origin, aff, axis)
        mean_hu = math.nan
        if image is not None:
            mean_hu = float(np.asarray(image[tuple(slice(a, a + m) for a, m in zip(origin, comp.shape))])[comp]
                            .astype(np.float64).mean())
        out.append(Lesion(
            id=rank, voxels=int(counts[c]), volume_ml=int(counts[c]) * voxel_ml, long_axis_mm=long_mm,
            short_axis_mm=short_mm, slice=sidx, slice_axis=axis,
            centroid_mm=tuple(float(v) + 0.0 for v in centroid), coordinates=coordinates, mean_hu=mean_hu,
            liver_surface_mm=surface.gap(vox),
            long_axis_voxels=tuple(tuple(float(v) for v in p) for p in long_ends),
            short_axis_voxels=tuple(tuple(float(v) for v in p) for p in short_ends)))
    return out


def lesion_rows(lesions: Sequence[Lesion]) -> list[dict]:
    """The CSV rows of a lesion table (:meth:`Lesion.row`)."""
    return [les.row() for les in lesions]
