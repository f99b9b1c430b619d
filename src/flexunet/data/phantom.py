"""Synthetic abdominal CT phantoms with liver and liver-tumour labels.

The phantoms stand in for LiTS-like data in tests, smoke runs and demos.  Each
case is a CT volume in Hounsfield units with a label volume (0 background,
1 liver without tumour, 2 tumour) and the anatomy a liver model has to tell
apart from the liver:

* air (-1000 HU) around an elliptical-ish body; a subcutaneous fat ring
  (about -100 HU), an abdominal muscle wall (about +50 HU) and inside it a
  visceral fat / bowel mixture (-95..+35 HU) with a few gas pockets;
* the spine (vertebral body about 300-450 HU inside a 700-1000 HU cortex,
  intervertebral discs, spinal canal, posterior elements), paraspinal and
  psoas muscles, the ribs (bright arcs in the body wall of the upper slices),
  the contrast-filled aorta and inferior vena cava;
* distractor organs near liver intensity: the spleen (liver +-8 HU, on the
  patient's left), both kidneys (medulla +30..40 HU inside a brighter cortex)
  and the stomach (wall, fluid and often an air-fluid level);
* the liver (+52..72 HU with slow heterogeneity and brighter vessels) on the
  patient's right, anterior-lateral: a union of three deformed elliptical
  blobs (right lobe, left lobe, caudate) whose radii and centres change
  smoothly with z; it occupies one contiguous range of slices, never all;
* 0 to 4 hypodense tumours (25-50 HU darker than the liver at their core, some
  with a necrotic centre or a faint rim) of radius 2-3 voxels up to ~18
  voxels, placed inside the liver and kept apart from each other;
* partial-volume blur (Gaussian, sigma ~0.6 voxel in-plane) and spatially
  correlated Gaussian noise of 10-20 HU standard deviation.

Orientation
-----------
Arrays are in nibabel ``(i, j, k)`` index order and the affine is a diagonal
RAS+ affine ``diag(sx, sy, sz)`` whose origin puts the volume's centre at
world (0, 0, 0).  Hence, with nibabel's RAS+ convention:

* ``i`` increases towards the patient's **right** (+x = R),
* ``j`` increases towards **anterior** (+y = A),
* ``k`` increases towards the **head** (feet -> head, +z = S);
  ``k`` indexes the axial slices, each slice is the ``(i, j)`` plane.

The liver therefore lies at high ``i`` (patient's right) and high-ish ``j``,
the spleen at low ``i``, the spine at low ``j``.  To display an axial slice
the radiological way (patient's right on the image's left, anterior at the
top) use ``img[:, :, k].T[::-1, ::-1]`` with ``imshow(origin="upper")``:
rows then run anterior -> posterior and columns patient's right -> left.
(``nib.aff2axcodes(affine) == ("R", "A", "S")``.)

Files
-----
:func:`write_phantoms` writes canonical case folders
``dst/phantom_000/image.nii.gz`` (int16 HU, identical to the float32 array
:func:`generate_phantom` returns, which is already rounded to whole HU) and
``dst/phantom_000/label.nii.gz`` (uint8 0/1/2), plus ``dst/manifest.csv``.
Case ``n`` of ``write_phantoms(seed=s)`` is ``generate_phantom((s, n))``.

Everything is deterministic for a seed (``numpy.random.default_rng``).  On
one core a 256x256x48 case takes about 0.5-1 s to generate (numpy work on
bounding boxes, separable matrix-product upsampling of the random fields, a
single Gaussian pass for blur and noise correlation).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from flexunet.errors import ConfigError, DataError

__all__ = ["generate_phantom", "write_phantoms", "phantom_affine", "MANIFEST_COLUMNS"]

DEFAULT_SHAPE = (256, 256, 48)
DEFAULT_SPACING = (1.5, 1.5, 3.0)
# the same columns as the importers' manifest (flexunet.data.importers.MANIFEST_COLUMNS)
MANIFEST_COLUMNS = ("case_id", "image", "label", "shape", "spacing", "n_liver", "n_tumour", "source", "notes")
_CONN26 = np.ones((3, 3, 3), dtype=bool)

# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #


def _check_geometry(shape, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    try:
        shp = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"phantom shape {shape!r} is not a sequence of 3 integers") from None
    if len(shp) != 3 or any(s != float(v) for s, v in zip(shp, shape)) or min(shp) < 1:
        raise ConfigError(f"phantom shape {tuple(shape)!r} must be 3 positive integers (i, j, k)")
    if shp[0] < 32 or shp[1] < 32 or shp[2] < 4:
        raise ConfigError(f"phantom shape {shp} is too small: need at least 32x32 in-plane and 4 slices")
    try:
        spc = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ConfigError(f"phantom spacing {spacing!r} is not a sequence of 3 numbers") from None
    if len(spc) != 3 or not all(math.isfinite(s) and s > 0 for s in spc):
        raise ConfigError(f"phantom spacing {tuple(spacing)!r} must be 3 positive finite millimetre values")
    return shp, spc  # type: ignore[return-value]


def phantom_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Diagonal RAS+ affine with ``spacing`` on the diagonal, volume centre at world (0, 0, 0)."""
    aff = np.eye(4)
    for ax in range(3):
        aff[ax, ax] = float(spacing[ax])
        aff[ax, 3] = -0.5 * (int(shape[ax]) - 1) * float(spacing[ax])
    return aff


def _interp_matrix(n: int, cells: int) -> np.ndarray:
    """(n, cells) row-normalised Gaussian interpolation weights from a coarse grid onto n samples."""
    pos = np.linspace(0.0, cells - 1.0, n)[:, None]
    w = np.exp(-0.5 * ((pos - np.arange(cells)[None, :]) / 0.65) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], cells: Sequence[int]) -> np.ndarray:
    """Low-frequency random field of ``shape`` with about unit std.

    A coarse grid of ``cells`` standard normals is interpolated separably with
    smooth weights (three small matrix products, much cheaper than
    ``ndimage.zoom``).
    """
    cells = [max(2, int(c)) for c in cells]
    low = rng.standard_normal(cells).astype(np.float32)
    wx, wy, wz = (_interp_matrix(n, c) for n, c in zip(shape, cells))
    out = np.einsum("abc,kc->abk", low, wz)
    out = np.einsum("abk,jb->ajk", out, wy)
    out = np.tensordot(wx, out, axes=(1, 0))
    # expected variance of an interpolated white field: product of the mean squared row norms
    var = float(np.mean((wx ** 2).sum(1)) * np.mean((wy ** 2).sum(1)) * np.mean((wz ** 2).sum(1)))
    return (out / np.float32(math.sqrt(var))).astype(np.float32, copy=False)


def _gauss_norm(sigma: float, truncate: float = 4.0) -> float:
    """L2 norm of scipy's 1-D Gaussian kernel: the std of filtered unit white noise along one axis."""
    if sigma <= 0:
        return 1.0
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float(np.sqrt((k ** 2).sum()))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _z_profile(t: np.ndarray, lo: float, peak: float, hi: float, power: float = 0.5) -> np.ndarray:
    """Radius factor along z: 0 outside (lo, hi), 1 at ``peak``, elliptic-like in between."""
    s = np.where(t >= peak, (t - peak) / max(hi - peak, 1e-6), (peak - t) / max(peak - lo, 1e-6))
    return np.clip(1.0 - s * s, 0.0, None) ** power


def _blob(U, V, cu, cv, a, b, prof, *, angle=0.0, harmonics=()) -> np.ndarray:
    """Boolean mask of a (rotated, harmonically deformed) ellipse per slice.

    ``U``/``V`` are (nx,1,1)/(1,ny,1) coordinates; ``cu``, ``cv``, ``prof`` and
    harmonic phases may be (1,1,nz) arrays so the cross-section changes with z.
    ``harmonics`` is a sequence of (order, amplitude, phase) with phase
    scalar or (1,1,nz).
    """
    du = U - cu
    dv = V - cv
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        du, dv = du * ca + dv * sa, -du * sa + dv * ca
    x = du / a
    y = dv / b
    q = x * x + y * y
    r = prof
    if harmonics:
        rho = np.sqrt(q) + 1e-6
        c, s = x / rho, y / rho
        c2, s2 = c * c - s * s, 2 * c * s
        mod = 1.0
        for order, amp, phase in harmonics:
            if order == 2:
                mod = mod + amp * (c2 * np.cos(2 * phase) + s2 * np.sin(2 * phase))
            elif order == 3:
                c3, s3 = c * c2 - s * s2, s * c2 + c * s2
                mod = mod + amp * (c3 * np.cos(3 * phase) + s3 * np.sin(3 * phase))
            else:  # order 1: shifts the blob a little
                mod = mod + amp * (c * np.cos(phase) + s * np.sin(phase))
        r = prof * mod
    return q < r * r


def _bbox(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax))) for ax in range(mask.ndim)]
    if any(len(i) == 0 for i in idx):
        return None
    return tuple(slice(max(0, int(i[0]) - pad), min(n, int(i[-1]) + 1 + pad)) for i, n in zip(idx, mask.shape))


# --------------------------------------------------------------------------- #
# the phantom
# --------------------------------------------------------------------------- #


def generate_phantom(seed, shape: Sequence[int] = DEFAULT_SHAPE, spacing: Sequence[float] = DEFAULT_SPACING
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic abdominal CT case.

    ``seed`` is anything :func:`numpy.random.default_rng` accepts as a seed
    (an int, or a tuple of ints such as ``(seed, case_index)``).
    Returns ``(image_hu, label, affine)``: ``image_hu`` float32 (whole HU,
    -1024..3071), ``label`` uint8 (0 background, 1 liver without tumour,
    2 tumour), both of ``shape`` in (i, j, k) order, and the 4x4 RAS+ affine
    (see the module docstring for the orientation).
    """
    img, label, affine, _ = _phantom(seed, shape, spacing)
    return img, label, affine


def _phantom(seed, shape, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """:func:`generate_phantom` plus a dict of organ masks and intensities (for tests and debugging).

    The anatomy is drawn organ by organ, each part taking its random numbers
    from ``rng`` in a fixed order (changing the order changes every case).
    """
    shape, spacing = _check_geometry(shape, spacing)
    if isinstance(seed, (np.random.Generator, np.random.BitGenerator)):
        raise ConfigError("phantom seed must be an int or a tuple of ints, not a Generator")
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"phantom seed {seed!r}: {exc}; expected a non-negative int or a tuple of them") from None
    grid = _Grid.of(shape, spacing)
    img = np.full(shape, -1000.0, dtype=np.float32)
    hu = _draw_tissues(rng)
    body = _body(rng, grid, img, hu)
    spine = _spine_axis(rng, body)
    _back_muscles(rng, grid, img, hu, body, spine)
    ribs = _ribs(rng, grid, img, hu, body)
    body.sp = None  # the superellipse "radius" is not needed below
    spine_mask = _vertebrae(rng, grid, img, hu, body, spine)
    excl = spine_mask | ribs | _great_vessels(rng, grid, img, hu, body, spine)
    del spine_mask, ribs
    kidneys = _kidneys(rng, grid, img, hu, body, spine, excl)
    spleen = _spleen(rng, grid, img, hu, body, excl)
    _stomach(rng, grid, img, body, excl)
    liver = _liver_mask(rng, grid, body, spine, excl)
    del excl
    box = _bbox(liver, pad=1)
    tumour = np.zeros(shape, dtype=bool)
    if box is not None:
        _paint_liver(rng, img, liver, box, hu.liver)
        _place_tumours(rng, img, liver, tumour, spacing, hu.liver)
    img = _blur_and_noise(rng, img, hu.noise_sd)

    label = np.zeros(shape, dtype=np.uint8)
    label[liver] = 1
    label[tumour] = 2
    info = {"spleen": spleen & ~liver, "kidneys": kidneys & ~liver, "liver_hu": hu.liver, "spleen_hu": hu.spleen,
            "noise_sd": hu.noise_sd}
    return img, label, phantom_affine(shape, spacing), info


@dataclass(frozen=True)
class _Grid:
    """Normalised coordinates of the voxel grid.

    ``U`` (nx, 1, 1) grows to the patient's right and ``V`` (1, ny, 1) towards
    anterior, both in units of half the in-plane field of view; ``t``
    (1, 1, nz) runs 0 (feet end) to 1 (head end); ``z_mm`` (1, 1, nz) is the
    slice position in mm.
    """

    shape: tuple[int, int, int]
    U: np.ndarray
    V: np.ndarray
    t: np.ndarray
    z_mm: np.ndarray

    @classmethod
    def of(cls, shape, spacing) -> "_Grid":
        nx, ny, nz = shape
        sx, sy, sz = spacing
        R = 0.5 * min(nx * sx, ny * sy)  # mm per normalised unit: half the in-plane field of view
        f32 = np.float32
        U = ((np.arange(nx, dtype=f32) - (nx - 1) / 2) * f32(sx / R))[:, None, None]  # + = patient's right
        V = ((np.arange(ny, dtype=f32) - (ny - 1) / 2) * f32(sy / R))[None, :, None]  # + = anterior
        t = (np.arange(nz, dtype=f32) / f32(max(nz - 1, 1)))[None, None, :]  # 0 = feet end, 1 = head end
        z_mm = (np.arange(nz, dtype=f32) * f32(sz))[None, None, :]
        return cls(tuple(shape), U, V, t, z_mm)

    def blob(self, cu, cv, a, b, prof, *, angle=0.0, harmonics=()) -> np.ndarray:
        """Full-size mask of :func:`_blob`, evaluated only on its bounding box."""
        f32 = np.float32
        shape, U, V = self.shape, self.U, self.V
        nz = shape[2]
        U1, V1 = U[:, 0, 0], V[0, :, 0]
        prof_z = np.broadcast_to(np.asarray(prof, dtype=f32), (1, 1, nz))
        ks = np.flatnonzero(prof_z[0, 0] > 0)
        out = np.zeros(shape, dtype=bool)
        if len(ks) == 0:
            return out
        k0, k1 = int(ks[0]), int(ks[-1]) + 1
        def zs(x):  # the slices k0:k1 of a per-slice (1, 1, nz) parameter; scalars pass through
            return x[..., k0:k1] if isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[-1] == nz else x

        cu_z = np.broadcast_to(np.asarray(cu, f32), (1, 1, nz))[..., k0:k1]
        cv_z = np.broadcast_to(np.asarray(cv, f32), (1, 1, nz))[..., k0:k1]
        # rotation keeps distances; harmonics stretch the radius by at most the sum of their amplitudes
        rmax = max(a, b) * float(prof_z.max()) * (1.0 + sum(abs(h[1]) for h in harmonics)) + 1e-3
        i0 = np.searchsorted(U1, float(cu_z.min()) - rmax)
        i1 = np.searchsorted(U1, float(cu_z.max()) + rmax, "right")
        j0 = np.searchsorted(V1, float(cv_z.min()) - rmax)
        j1 = np.searchsorted(V1, float(cv_z.max()) + rmax, "right")
        if i1 <= i0 or j1 <= j0:
            return out
        harm = tuple((o, amp, zs(ph)) for o, amp, ph in harmonics)
        out[i0:i1, j0:j1, k0:k1] = _blob(U[i0:i1], V[:, j0:j1], zs(cu), zs(cv), a, b, zs(prof),
                                         angle=angle, harmonics=harm)
        return out


@dataclass(frozen=True)
class _Tissues:
    """Intensities (HU) of one case."""

    fat: float
    muscle: float
    liver: float
    spleen: float
    medulla: float
    cortex: float
    aorta: float
    ivc: float
    bone_cort: float
    bone_canc: float
    rib: float
    noise_sd: float


def _draw_tissues(rng) -> _Tissues:
    fat_hu = _u(rng, -112, -88)
    muscle_hu = _u(rng, 42, 58)
    liver_hu = _u(rng, 52, 72)
    spleen_hu = float(np.clip(liver_hu + _u(rng, -8, 8), 48, 75))
    medulla_hu, cortex_hu = _u(rng, 30, 40), _u(rng, 110, 170)
    aorta_hu = _u(rng, 120, 200)
    ivc_hu = _u(rng, 90, 140)
    bone_cort, bone_canc = _u(rng, 700, 1000), _u(rng, 300, 450)
    rib_hu = _u(rng, 450, 850)
    noise_sd = _u(rng, 10, 20)
    return _Tissues(fat_hu, muscle_hu, liver_hu, spleen_hu, medulla_hu, cortex_hu, aorta_hu, ivc_hu,
                    bone_cort, bone_canc, rib_hu, noise_sd)


@dataclass
class _Body:
    """The body outline of one case, in normalised units (see :class:`_Grid`)."""

    cx: float  # centre
    cy: float
    ax0: float  # outline semi-axes
    ay0: float
    acx: float  # abdominal cavity semi-axes
    acy: float
    g: float  # size unit for organs
    pexp: float  # superellipse exponent
    s_fat_in: float  # inner edge of the subcutaneous fat, as a fraction of the outline
    s_cav: float  # inner edge of the muscle wall
    sp: np.ndarray | None  # superellipse "radius" to the power pexp, (nx, ny, nz)
    cavity: np.ndarray  # inside the muscle wall, (nx, ny, nz) bool


def _body(rng, grid: _Grid, img: np.ndarray, hu: _Tissues) -> _Body:
    """Body outline, subcutaneous fat, muscle wall, and the cavity's visceral fat / bowel with gas."""
    U, V, t, shape = grid.U, grid.V, grid.t, grid.shape
    nx, ny, nz = shape
    f32 = np.float32
    cx, cy = _u(rng, -0.03, 0.03), _u(rng, -0.02, 0.06)
    ax0, ay0 = _u(rng, 0.76, 0.88), _u(rng, 0.56, 0.68)
    ax0 = min(ax0, 0.93 - abs(cx))
    ay0 = min(ay0, 0.93 - abs(cy))
    ph1, ph2 = _u(rng, 0, 2 * np.pi), _u(rng, 0, 2 * np.pi)
    ax_t = ax0 * (1 + 0.035 * np.sin(2 * np.pi * 0.7 * t + ph1) + 0.04 * (t - 0.5))
    ay_t = ay0 * (1 + 0.03 * np.sin(2 * np.pi * 0.6 * t + ph2))
    ax_t = np.minimum(ax_t, 0.95 - abs(cx))
    ay_t = np.minimum(ay_t, 0.95 - abs(cy))
    pexp = _u(rng, 2.2, 2.7)  # superellipse exponent: a slightly boxy abdomen
    fat_rel = _u(rng, 0.05, 0.16)
    mus_rel = _u(rng, 0.035, 0.06)
    s_fat_in = 1.0 - fat_rel
    s_cav = s_fat_in - mus_rel
    # superellipse "radius" to the power p; the costly powers only touch 1-D arrays
    sp = (np.abs(U - cx) ** pexp) / (ax_t ** pexp) + (np.abs(V - cy) ** pexp) / (ay_t ** pexp)
    img[sp < 1.0] = hu.fat
    img[sp < s_fat_in ** pexp] = hu.muscle
    cavity = sp < s_cav ** pexp
    acx, acy = ax0 * s_cav, ay0 * s_cav  # cavity semi-axes (normalised units)
    g = math.sqrt(acx * acy)  # size unit for organs

    # visceral fat / bowel mixture and a few gas pockets
    cells = (max(4, nx // 14), max(4, ny // 14), max(3, nz // 3))
    fld = _smooth_field(rng, shape, cells)
    mix = 1.0 / (1.0 + np.exp(-2.5 * (fld + _u(rng, -0.4, 0.4))))
    visceral = f32(-95.0) + f32(130.0) * mix
    img[cavity] = visceral[cavity]
    gas = cavity & (fld > _u(rng, 2.1, 2.6))  # gas in the middle of the odd bowel loop
    img[gas] = -850.0
    return _Body(cx, cy, ax0, ay0, acx, acy, g, pexp, s_fat_in, s_cav, sp, cavity)


@dataclass(frozen=True)
class _Spine:
    """Where the vertebral bodies and the spinal canal sit (normalised units)."""

    vb_u: float  # vertebral body centre
    vb_v: float
    rv: float  # vertebral body radius
    canal_r: float
    canal_v: float


def _spine_axis(rng, body: _Body) -> _Spine:
    g = body.g
    rv = g * _u(rng, 0.17, 0.2)
    vb_u, vb_v = body.cx + _u(rng, -0.01, 0.01), body.cy - body.acy + rv + g * _u(rng, 0.15, 0.22)
    canal_r = g * 0.075
    canal_v = vb_v - rv - canal_r - g * 0.02
    return _Spine(vb_u, vb_v, rv, canal_r, canal_v)


def _back_muscles(rng, grid: _Grid, img: np.ndarray, hu: _Tissues, body: _Body, spine: _Spine) -> None:
    """Paraspinal muscles beside the spine and the psoas muscles, which grow towards the feet."""
    g, vb_u, vb_v, rv = body.g, spine.vb_u, spine.vb_v, spine.rv
    para_a, para_b = g * _u(rng, 0.2, 0.26), g * _u(rng, 0.15, 0.19)
    para_v = spine.canal_v - g * 0.05
    under_fat = body.sp < body.s_fat_in ** body.pexp
    for side in (-1, 1):
        img[grid.blob(vb_u + side * g * 0.26, para_v, para_a, para_b, 1.0) & under_fat] = hu.muscle
    del under_fat
    psoas_prof = np.clip(1.0 - 1.6 * grid.t, 0, None) ** 0.5  # psoas grows towards the feet
    if psoas_prof.max() > 0:
        for side in (-1, 1):
            img[grid.blob(vb_u + side * (rv + g * 0.1), vb_v + g * 0.03, g * 0.12, g * 0.1, psoas_prof)] = hu.muscle


def _ribs(rng, grid: _Grid, img: np.ndarray, hu: _Tissues, body: _Body) -> np.ndarray:
    """Ribs: arcs in the wall of the upper slices, oblique so the arcs move with z; returns their mask."""
    U, V, t, sp, pexp, s_cav = grid.U, grid.V, grid.t, body.sp, body.pexp, body.s_cav
    theta = np.arctan2((V - body.cy) / body.ay0, (U - body.cx) / body.ax0)  # (nx, ny, 1)
    period = _u(rng, 24.0, 34.0)
    slope = _u(rng, 25.0, 40.0)  # mm of z per radian: ribs run obliquely, so each slice cuts short arcs
    rib_phase = _u(rng, 0, period)
    rib_lo = _u(rng, 0.25, 0.45)
    ok_angle = (np.abs(theta + np.pi / 2) > 0.55) & (np.abs(theta - np.pi / 2) > 0.3)
    band = (sp > (s_cav - 0.03) ** pexp) & (sp < (s_cav + 0.025) ** pexp) & ok_angle & (t > rib_lo)
    bi, bj, bk = np.nonzero(band)
    frac = np.mod((grid.z_mm[0, 0, bk] + slope * np.abs(theta[bi, bj, 0] - np.pi / 2) + rib_phase) / period, 1.0)
    keep = frac < 0.3
    ribs = np.zeros(grid.shape, dtype=bool)
    ribs[bi[keep], bj[keep], bk[keep]] = True
    img[ribs] = hu.rib
    return ribs


def _vertebrae(rng, grid: _Grid, img: np.ndarray, hu: _Tissues, body: _Body, spine: _Spine) -> np.ndarray:
    """Vertebrae: cancellous body with cortex, discs every ~30 mm, canal, posterior elements; returns the
    mask of the spine."""
    g, V, blob = body.g, grid.V, grid.blob
    vb_u, vb_v, rv, canal_r, canal_v = spine.vb_u, spine.vb_v, spine.rv, spine.canal_r, spine.canal_v
    bone_cort = hu.bone_cort
    vert_period = _u(rng, 28.0, 34.0)
    vert_phase = _u(rng, 0, vert_period)
    disc = (np.mod((grid.z_mm + vert_phase) / vert_period, 1.0) < 0.2)  # (1,1,nz)
    vbody = blob(vb_u, vb_v, rv, rv * 0.9, 1.0)
    vcanc = blob(vb_u, vb_v, rv - g * 0.03, rv * 0.9 - g * 0.03, 1.0)
    img[vbody & ~disc] = bone_cort
    img[vcanc & ~disc] = hu.bone_canc
    img[vbody & disc] = 85.0
    post = blob(vb_u, canal_v, canal_r + g * 0.045, canal_r + g * 0.045, 1.0) & (V < vb_v - rv * 0.6)
    spinous = blob(vb_u, canal_v - canal_r - g * 0.1, g * 0.035, g * 0.12, 1.0)
    transverse = blob(vb_u, canal_v + g * 0.02, g * 0.3, g * 0.04, 1.0) & ~disc
    bone_post = (post | spinous | transverse) & ~vbody
    img[bone_post] = bone_cort * 0.8
    canal = blob(vb_u, canal_v, canal_r, canal_r, 1.0)
    img[canal] = 25.0
    return vbody | bone_post | canal


def _great_vessels(rng, grid: _Grid, img: np.ndarray, hu: _Tissues, body: _Body, spine: _Spine) -> np.ndarray:
    """Aorta and inferior vena cava in front of the spine; returns their mask."""
    g, vb_u, vb_v, rv = body.g, spine.vb_u, spine.vb_v, spine.rv
    ao_r = g * _u(rng, 0.09, 0.12)
    aorta = grid.blob(vb_u - g * _u(rng, 0.05, 0.15), vb_v + rv + ao_r + g * 0.02, ao_r, ao_r, 1.0)
    ivc = grid.blob(vb_u + g * _u(rng, 0.22, 0.32), vb_v + rv + g * 0.1, g * 0.12, g * 0.08, 1.0)
    img[aorta] = hu.aorta
    img[ivc] = hu.ivc
    return aorta | ivc


def _kidneys(rng, grid: _Grid, img: np.ndarray, hu: _Tissues, body: _Body, spine: _Spine,
             excl: np.ndarray) -> np.ndarray:
    """Kidneys in the lower slices, the right lower than the left; adds them to ``excl``, returns their mask."""
    g, vb_u, vb_v, rv, blob = body.g, spine.vb_u, spine.vb_v, spine.rv, grid.blob
    kidneys = np.zeros(grid.shape, dtype=bool)
    k_hi_r = _u(rng, 0.42, 0.58)
    for side in (1, -1):  # +1 = patient's right
        hi = k_hi_r + (_u(rng, 0.04, 0.12) if side < 0 else 0.0)
        lo = hi - _u(rng, 0.55, 0.8)
        prof = _z_profile(grid.t, lo, 0.5 * (lo + hi), hi)
        if prof.max() <= 0:
            continue
        ku = vb_u + side * (rv + g * _u(rng, 0.2, 0.3))
        kv = vb_v + g * _u(rng, -0.02, 0.08)
        ka, kb = g * _u(rng, 0.15, 0.19), g * _u(rng, 0.22, 0.27)
        ang = side * _u(rng, 0.3, 0.6)
        kid = blob(ku, kv, ka, kb, prof, angle=ang)
        med = blob(ku, kv, ka * 0.72, kb * 0.72, prof, angle=ang)
        sinus = blob(ku - side * ka * 0.45, kv + g * 0.02, ka * 0.4, kb * 0.3, prof, angle=ang)
        img[kid] = hu.cortex
        img[med] = hu.medulla
        img[sinus & kid] = -40.0
        excl |= kid
        kidneys |= kid
        del kid, med, sinus
    return kidneys


def _spleen(rng, grid: _Grid, img: np.ndarray, hu: _Tissues, body: _Body, excl: np.ndarray) -> np.ndarray:
    """Spleen on the patient's left, posterolateral; adds it to ``excl``, returns its mask."""
    g, t, cx, cy, acx, acy = body.g, grid.t, body.cx, body.cy, body.acx, body.acy
    sp_lo, sp_hi = _u(rng, 0.35, 0.55), _u(rng, 0.85, 1.1)
    prof = _z_profile(t, sp_lo, 0.5 * (sp_lo + sp_hi) + _u(rng, -0.05, 0.1), sp_hi)
    spu = cx - acx * _u(rng, 0.62, 0.74)
    spv = cy - acy * _u(rng, 0.2, 0.4)
    spa, spb = g * _u(rng, 0.16, 0.22), g * _u(rng, 0.3, 0.4)
    sp_ang = _u(rng, -0.9, -0.4)
    spleen = grid.blob(spu, spv, spa, spb, prof, angle=sp_ang,
                       harmonics=((2, _u(rng, 0, 0.08), _u(rng, 0, np.pi) + 1.5 * t),))
    hilum = grid.blob(spu + spa * 0.9, spv + spb * 0.2, spa * 0.6, spb * 0.6, prof, angle=sp_ang)
    spleen &= body.cavity & ~hilum & ~excl
    del hilum
    img[spleen] = hu.spleen
    excl |= spleen
    return spleen


def _stomach(rng, grid: _Grid, img: np.ndarray, body: _Body, excl: np.ndarray) -> None:
    """Stomach, left anterior in the upper slices: wall, fluid and often an air-fluid level."""
    g, t, cx, cy, acx, acy = body.g, grid.t, body.cx, body.cy, body.acx, body.acy
    st_lo, st_hi = _u(rng, 0.4, 0.6), _u(rng, 0.9, 1.15)
    prof = _z_profile(t, st_lo, 0.5 * (st_lo + st_hi), st_hi)
    stu, stv = cx - acx * _u(rng, 0.25, 0.45), cy + acy * _u(rng, 0.0, 0.3)
    sta, stb = g * _u(rng, 0.22, 0.32), g * _u(rng, 0.18, 0.26)
    stomach = grid.blob(stu, stv, sta, stb, prof) & body.cavity & ~excl
    lumen = grid.blob(stu, stv, sta - g * 0.04, stb - g * 0.04, prof) & stomach
    img[stomach] = 45.0
    img[lumen] = _u(rng, 0, 20)
    if rng.uniform() < 0.7:
        level = stv + stb * _u(rng, -0.2, 0.6)
        img[lumen & (grid.V > level)] = -1000.0


def _liver_mask(rng, grid: _Grid, body: _Body, spine: _Spine, excl: np.ndarray) -> np.ndarray:
    """Liver: right lobe + left lobe + caudate, shapes varying with z; the largest 26-connected piece, so
    the liver is one organ over contiguous slices."""
    g, t, cx, cy, acx, acy, blob = body.g, grid.t, body.cx, body.cy, body.acx, body.acy, grid.blob
    t_lo, t_hi = _u(rng, 0.06, 0.3), _u(rng, 0.8, 0.97)
    t_pk = t_lo + (t_hi - t_lo) * _u(rng, 0.5, 0.75)

    def harm():
        return ((2, _u(rng, 0.0, 0.1), _u(rng, 0, np.pi) + _u(rng, -1.5, 1.5) * t),
                (3, _u(rng, 0.0, 0.07), _u(rng, 0, np.pi) + _u(rng, -1.5, 1.5) * t))

    # right lobe: its centre drifts laterally/anteriorly towards the inferior tip
    ru = cx + acx * _u(rng, 0.4, 0.58) + acx * _u(rng, -0.1, 0.1) * (t - t_pk)
    rvv = cy + acy * _u(rng, -0.15, 0.15) + acy * _u(rng, 0.0, 0.4) * (t_pk - t)
    ra, rb = acx * _u(rng, 0.42, 0.55), acy * _u(rng, 0.6, 0.85)
    liver = blob(ru, rvv, ra, rb, _z_profile(t, t_lo, t_pk, t_hi, power=_u(rng, 0.4, 0.7)),
                 angle=_u(rng, -0.3, 0.3), harmonics=harm())
    # left lobe: anterior, crossing the midline, upper part of the liver range
    l_lo = t_lo + (t_pk - t_lo) * _u(rng, 0.2, 0.7)
    l_hi = t_hi - _u(rng, 0.0, 0.06)
    lu = cx + acx * _u(rng, 0.0, 0.2)
    lv = cy + acy * _u(rng, 0.35, 0.55)
    liver |= blob(lu, lv, acx * _u(rng, 0.38, 0.5), acy * _u(rng, 0.2, 0.3),
                  _z_profile(t, l_lo, 0.5 * (l_lo + l_hi), l_hi), angle=_u(rng, -0.4, 0.1), harmonics=harm())
    # caudate lobe: small, next to the IVC
    c_lo = t_lo + (t_pk - t_lo) * _u(rng, 0.3, 0.7)
    c_hi = t_pk + (t_hi - t_pk) * _u(rng, 0.2, 0.7)
    liver |= blob(spine.vb_u + g * _u(rng, 0.15, 0.3), spine.vb_v + spine.rv + g * _u(rng, 0.25, 0.35),
                  g * 0.15, g * 0.12, _z_profile(t, c_lo, 0.5 * (c_lo + c_hi), c_hi))
    liver &= body.cavity & ~excl
    box = _bbox(liver, pad=1)
    if box is not None:
        lab, n = ndi.label(liver[box], structure=_CONN26)
        if n > 1:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            sub = lab == int(np.argmax(sizes))
            liver[box] = sub
    return liver


def _blur_and_noise(rng, img: np.ndarray, noise_sd: float) -> np.ndarray:
    """Partial-volume blur + correlated noise, rounded to whole HU in -1024..3071.

    White noise is added before the blur: one filter pass gives partial volume
    and noise correlated like a reconstruction kernel; it is scaled so the
    final noise std is ``noise_sd``.
    """
    f32 = np.float32
    sigma = (0.6, 0.6, 0.35)
    norm = _gauss_norm(sigma[0]) * _gauss_norm(sigma[1]) * _gauss_norm(sigma[2])
    noise = rng.standard_normal(img.shape, dtype=f32)
    noise *= f32(noise_sd / norm)
    img += noise
    del noise
    img = ndi.gaussian_filter(img, sigma=sigma, mode="nearest")
    np.clip(img, -1024, 3071, out=img)
    np.rint(img, out=img)
    return img


def _paint_liver(rng, img, liver, box, liver_hu) -> None:
    """Liver parenchyma with slow heterogeneity and brighter tubular vessels, on the liver's bounding box."""
    sub_shape = tuple(s.stop - s.start for s in box)
    m = liver[box]
    cells = (max(3, sub_shape[0] // 12), max(3, sub_shape[1] // 12), max(3, sub_shape[2] // 3))
    het = _smooth_field(rng, sub_shape, cells)
    vessel_cells = (max(3, sub_shape[0] // 20), max(3, sub_shape[1] // 20), max(3, sub_shape[2] // 5))
    fa = _smooth_field(rng, sub_shape, vessel_cells)
    fb = _smooth_field(rng, sub_shape, vessel_cells)
    amp = _u(rng, 3.0, 8.0)
    vessel = (np.abs(fa) < 0.12) & (np.abs(fb) < 0.25)
    vals = liver_hu + amp * het + np.where(vessel, _u(rng, 20.0, 45.0), 0.0).astype(np.float32)
    view = img[box]
    view[m] = vals[m]


def _place_tumours(rng, img, liver, tumour, spacing, liver_hu) -> int:
    """Up to 4 hypodense ellipsoidal tumours inside ``liver``; returns how many were placed."""
    n_target = int(rng.integers(0, 5))
    if n_target == 0:
        return 0
    sx, sy, sz = spacing
    inplane = min(sx, sy)
    cand = np.flatnonzero(liver)
    placed = 0
    gap_mm = 2.0 * max(sx, sy, sz)
    for _ in range(n_target):
        kind = rng.uniform()
        if kind < 0.35:
            r_vox = _u(rng, 2.0, 3.0)
        elif kind < 0.75:
            r_vox = _u(rng, 4.0, 8.0)
        else:
            r_vox = _u(rng, 9.0, 18.0)
        r_mm = r_vox * inplane
        semi = np.array([r_mm * _u(rng, 0.8, 1.2), r_mm * _u(rng, 0.8, 1.2), r_mm * _u(rng, 0.75, 1.2)])
        ang = _u(rng, 0, np.pi)
        dirs = rng.standard_normal((2, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lob = rng.uniform(-0.12, 0.12, size=2)
        contrast = _u(rng, 25.0, 50.0)
        necrosis = _u(rng, 0.0, 12.0) if rng.uniform() < 0.5 else 0.0
        rim = _u(rng, 5.0, 12.0) if rng.uniform() < 0.3 else 0.0
        ok = False
        for attempt in range(40):
            if attempt and attempt % 10 == 0:
                semi *= 0.8
            c = np.unravel_index(int(cand[int(rng.integers(len(cand)))]), liver.shape)
            rad_vox = np.ceil((semi.max() * 1.3 + gap_mm) / np.array(spacing)).astype(int)
            box = tuple(slice(max(0, ci - r), min(n, ci + r + 1)) for ci, r, n in zip(c, rad_vox, liver.shape))
            gi, gj, gk = np.ogrid[box[0], box[1], box[2]]
            x = ((gi - c[0]) * sx).astype(np.float32)
            y = ((gj - c[1]) * sy).astype(np.float32)
            z = ((gk - c[2]) * sz).astype(np.float32)
            ca, sa = math.cos(ang), math.sin(ang)
            xr, yr = x * ca + y * sa, -x * sa + y * ca
            q = np.sqrt((xr / semi[0]) ** 2 + (yr / semi[1]) ** 2 + (z / semi[2]) ** 2)
            nrm = np.sqrt(xr * xr + yr * yr + z * z) + 1e-6
            shape_mod = 1.0
            for d, a in zip(dirs, lob):
                shape_mod = shape_mod + a * ((xr * d[0] + yr * d[1] + z * d[2]) / nrm) ** 2
            qq = q / shape_mod
            ell = qq < 1.0
            if ell.sum() == 0:
                continue
            lv = liver[box]
            if (ell & lv).sum() < 0.85 * ell.sum():
                continue
            grown = q < 1.0 + gap_mm / float(semi.min())
            if (grown & tumour[box]).any():
                continue
            m = ell & lv
            base = liver_hu - contrast + necrosis * (qq - 1.0) + rim * (qq > 0.8)
            view = img[box]
            view[m] = (base + 0.3 * (view - liver_hu))[m].astype(np.float32)  # keep a bit of texture
            tumour[box] |= m
            ok = True
            break
        placed += int(ok)
    return placed


# --------------------------------------------------------------------------- #
# writing
# --------------------------------------------------------------------------- #


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Atomic NIfTI write (thin wrapper so the writer can be swapped in one place)."""
    from flexunet.io.volumes import write_nifti

    write_nifti(array, path, affine=affine)


def _write_text(path: Path, text: str) -> None:
    from flexunet.io.atomic import atomic_save_text

    atomic_save_text(path, text)


def write_phantoms(dst, cases: int = 8, seed: int = 0, shape: Sequence[int] = DEFAULT_SHAPE,
                   spacing: Sequence[float] = DEFAULT_SPACING) -> Path:
    """Write ``cases`` phantoms as canonical case folders under ``dst`` and return ``dst/manifest.csv``.

    Layout: ``dst/phantom_000/image.nii.gz`` (int16 HU) and
    ``dst/phantom_000/label.nii.gz`` (uint8 0/1/2), RAS+ affine with
    ``spacing`` on its diagonal.  Case ``n`` uses seed ``(seed, n)``.
    ``manifest.csv`` columns: case_id, image, label (paths relative to
    ``dst``), shape (``256x256x48``), spacing (``1.5x1.5x3``), n_liver (voxels
    of label 1, liver without tumour), n_tumour (voxels of label 2), n_tumours
    (26-connected tumour components).  Existing files of the same cases are
    replaced; other files in ``dst`` are left alone.
    """
    shape, spacing = _check_geometry(shape, spacing)
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
        raise ConfigError(f"phantom cases={cases!r} must be a positive integer")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"phantom seed={seed!r} must be a non-negative integer")
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise DataError(f"phantom destination {dst} exists and is not a folder; expected a folder path")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create phantom folder {dst}: {exc.strerror or exc}; "
                        "expected a writable path") from None
    width = max(3, len(str(cases - 1)))
    rows = []
    for n in range(int(cases)):
        case_id = f"phantom_{n:0{width}d}"
        image, label, affine = generate_phantom((int(seed), n), shape, spacing)
        case_dir = dst / case_id
        try:
            case_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create case folder {case_dir}: {exc.strerror or exc}; "
                            "expected a writable folder") from None
        _write_nifti(case_dir / "image.nii.gz", image.astype(np.int16), affine)
        _write_nifti(case_dir / "label.nii.gz", label, affine)
        _, n_comp = ndi.label(label == 2, structure=_CONN26)
        rows.append({
            "case_id": case_id,
            "image": f"{case_id}/image.nii.gz",
            "label": f"{case_id}/label.nii.gz",
            "shape": "x".join(str(s) for s in shape),
            "spacing": "x".join(f"{s:.4g}" for s in spacing),
            "n_liver": int(np.count_nonzero(label == 1)),
            "n_tumour": int(np.count_nonzero(label == 2)),
            "source": f"phantom seed=({int(seed)}, {n})",
            "notes": f"{int(n_comp)} tumour components",
        })
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest = dst / "manifest.csv"
    _write_text(manifest, buf.getvalue())
    return manifest
