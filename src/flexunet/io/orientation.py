"""A volume and its geometry: the :class:`Volume` every reader returns, checks on it, reorientation.

Conventions (the same for every reader in :mod:`flexunet.io`)
----------------------------------------------------------------
* :class:`Volume` ``array`` is indexed ``(i, j, k)`` exactly as nibabel indexes
  a NIfTI image, and ``affine`` (4x4 float64) maps a voxel index
  ``(i, j, k, 1)`` to world **RAS+ millimetres**, exactly as a NIfTI
  sform/qform does.  Two volumes with equal shapes and affines line up voxel
  for voxel, whatever file format they came from.
* Image arrays are ``float32`` Hounsfield units; label arrays keep an integer
  dtype (:func:`as_label_array`).

:func:`to_canonical` reorients a volume to the closest canonical RAS+
orientation and returns the :class:`Reorientation` that undoes it;
:func:`resample_label_to` puts a label onto an image's grid by geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nibabel import orientations as nio

from flexunet.errors import DataError

__all__ = [
    "Volume",
    "Reorientation",
    "as_label_array",
    "axcodes_affine",
    "check_finite",
    "check_same_geometry",
    "resample_label_to",
    "short_error",
    "to_canonical",
]


# --------------------------------------------------------------------------- Volume


@dataclass
class Volume:
    """A 3-D array with its voxel-to-world (RAS+ mm) affine.

    ``header`` is format specific: a nibabel NIfTI header, the first slice's
    pydicom dataset (without pixel data), or the MRC header; ``None`` when
    unknown.  ``source`` names where the data came from, for messages.
    """

    array: np.ndarray
    affine: np.ndarray
    header: object | None = None
    source: str = ""

    def __post_init__(self) -> None:
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise DataError(f"{self.source or 'volume'}: affine has shape {aff.shape}; expected 4x4")
        self.affine = aff

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in mm (column norms of the affine)."""
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return tuple(float(v) for v in s)


def short_error(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, for one-line DataError messages."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------- checks


def check_finite(vol: Volume, name: str | None = None) -> Volume:
    """Raise DataError when an image holds NaN or infinite voxels."""
    arr = vol.array
    if np.issubdtype(arr.dtype, np.floating):
        n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if n_bad:
            raise DataError(
                f"{name or vol.source}: holds {n_bad} NaN/Inf voxels; expected finite HU values"
            )
    return vol


def as_label_array(arr: np.ndarray, source: str) -> np.ndarray:
    """Integer label array; floats are accepted only when every value is integral."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{source}: label data type {arr.dtype}; expected integer labels")
    finite = np.isfinite(arr)
    if not finite.all():
        raise DataError(
            f"{source}: label holds {int(arr.size - finite.sum())} NaN/Inf voxels; expected integer labels"
        )
    rounded = np.rint(arr)
    if not np.array_equal(rounded, arr):
        bad = arr[rounded != arr]
        raise DataError(
            f"{source}: label holds {bad.size} non-integer values (e.g. {float(bad[0])!r}); "
            "expected integer labels"
        )
    lo, hi = (float(rounded.min()), float(rounded.max())) if rounded.size else (0.0, 0.0)
    dtype = np.uint8 if lo >= 0 and hi <= 255 else np.int32
    return rounded.astype(dtype)


def check_same_geometry(image: Volume, label: Volume, name: str = "") -> None:
    """Raise DataError unless ``image`` and ``label`` have equal shapes and affines (atol 1e-3)."""
    what = name or f"{image.source} / {label.source}"
    if tuple(image.array.shape[:3]) != tuple(label.array.shape[:3]):
        raise DataError(
            f"{what}: image {image.source or 'image'} has shape {tuple(image.array.shape)} but label "
            f"{label.source or 'label'} has {tuple(label.array.shape)}; expected equal shapes"
        )
    if not np.allclose(image.affine, label.affine, atol=1e-3, rtol=0):
        diff = np.abs(image.affine - label.affine)
        r, c = np.unravel_index(int(np.argmax(diff)), diff.shape)
        img_rows = np.array2string(image.affine[:3], precision=4, separator=",").replace("\n", "")
        lab_rows = np.array2string(label.affine[:3], precision=4, separator=",").replace("\n", "")
        raise DataError(
            f"{what}: affines differ at [{r},{c}] ({image.affine[r, c]:.6g} vs {label.affine[r, c]:.6g}); "
            f"image {img_rows} label {lab_rows}; expected the same geometry (atol 1e-3)"
        )


# --------------------------------------------------------------------------- axis codes


_AXCODE_WORLD = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def axcodes_affine(axcodes: str, sizes, origin=None, where: str = "axcodes") -> np.ndarray:
    """The 4x4 affine of an array whose axes point along ``axcodes`` (e.g. ``"SLP"``: axis 0 towards
    superior, axis 1 towards the patient's left, axis 2 towards posterior), voxel ``sizes`` in mm."""
    codes = str(axcodes).strip().upper()
    worlds = [(_AXCODE_WORLD.get(c) or (None, 0))[0] for c in codes]
    if len(codes) != 3 or None in worlds or sorted(worlds) != [0, 1, 2]:
        raise DataError(f"{where} {axcodes!r}: expected three letters, one of R/L, one of A/P and one of S/I "
                        "(e.g. RAS or SLP)")
    aff = np.eye(4)
    aff[:3, :3] = 0.0
    for i, c in enumerate(codes):
        w, sign = _AXCODE_WORLD[c]
        aff[w, i] = sign * float(sizes[i])
    if origin is not None:
        aff[:3, 3] = origin
    return aff


# --------------------------------------------------------------------------- orientation


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
    """Inverse of a nibabel orientation transform (axis permutation + flips)."""
    ornt = np.asarray(ornt)
    inv = np.empty_like(ornt, dtype=np.float64)
    for i, (ax, flip) in enumerate(ornt):
        inv[int(ax)] = (i, flip)
    return inv


@dataclass
class Reorientation:
    """The axis permutation/flips taking an array to closest-canonical RAS+.

    ``ornt`` (nibabel orientation, original -> canonical) and
    ``inverse_ornt`` (canonical -> original).  Calling the object on an array
    in canonical orientation returns it in the original orientation; extra
    trailing axes (after the three spatial ones) are carried along.
    """

    ornt: np.ndarray
    original_shape: tuple
    original_affine: np.ndarray
    inverse_ornt: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.inverse_ornt = _invert_ornt(self.ornt)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        return nio.apply_orientation(array, self.ornt)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        out = nio.apply_orientation(array, self.inverse_ornt)
        if tuple(out.shape[:3]) != tuple(self.original_shape[:3]):
            raise ValueError(
                f"Reorientation: array of shape {tuple(array.shape)} maps to {tuple(out.shape)}; "
                f"expected spatial shape {tuple(self.original_shape[:3])}"
            )
        return out

    def undo_volume(self, vol: Volume) -> Volume:
        """``vol`` (canonical geometry) back in the original geometry."""
        return Volume(self(vol.array), self.original_affine.copy(), vol.header, vol.source)

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.ornt, [[0, 1], [1, 1], [2, 1]]))


def to_canonical(vol: Volume) -> tuple[Volume, Reorientation]:
    """Reorient ``vol`` to the closest canonical RAS+ orientation (axis flips/permutation only).

    Returns the reoriented volume (array a view where possible, affine
    updated so world positions are unchanged) and a :class:`Reorientation`
    whose call maps a canonical array back to the original orientation.
    """
    try:
        ornt = nio.io_orientation(vol.affine)
    except Exception as exc:
        raise DataError(f"{vol.source}: cannot derive an orientation from the affine ({short_error(exc)}); expected a valid affine") from None
    if np.any(np.isnan(ornt)):
        raise DataError(f"{vol.source}: affine {vol.affine[:3].tolist()} has a degenerate axis; expected a valid affine")
    arr = nio.apply_orientation(vol.array, ornt)
    new_aff = vol.affine @ nio.inv_ornt_aff(ornt, vol.array.shape[:3])
    r = Reorientation(ornt=ornt, original_shape=tuple(vol.array.shape), original_affine=vol.affine.copy())
    return Volume(arr, new_aff, vol.header, vol.source), r


# --------------------------------------------------------------------------- resampling


def resample_label_to(label: Volume, target: Volume, *, atol: float = 1e-3) -> tuple[np.ndarray, str]:
    """Put ``label`` onto ``target``'s voxel grid by geometry (affines), not by index.

    If the two grids differ only by axis flips/permutations (the usual case of
    a mask saved with another axis convention), the array is reoriented with
    nibabel orientations — exact, no interpolation.  Otherwise every target
    voxel takes the label at its world position (nearest neighbour,
    0 outside the label's field of view).  Returns ``(array, note)`` where
    the note says which method was used.
    """
    if np.allclose(label.affine, target.affine, atol=atol, rtol=0) and label.shape[:3] == target.shape[:3]:
        return label.array, "label grid equals image grid"
    try:
        t = nio.ornt_transform(nio.io_orientation(label.affine), nio.io_orientation(target.affine))
        arr = nio.apply_orientation(label.array, t)
        aff = label.affine @ nio.inv_ornt_aff(t, label.array.shape[:3])
        if arr.shape[:3] == target.shape[:3] and np.allclose(aff, target.affine, atol=atol, rtol=0):
            codes = "".join(nio.aff2axcodes(label.affine))
            tcodes = "".join(nio.aff2axcodes(target.affine))
            return arr, f"label reoriented {codes}->{tcodes} by geometry (exact)"
    except Exception:
        pass
    from scipy import ndimage

    m = np.linalg.inv(label.affine) @ target.affine  # target index -> label index
    out = ndimage.affine_transform(
        label.array, m[:3, :3], offset=m[:3, 3], output_shape=tuple(target.shape[:3]),
        order=0, mode="constant", cval=0, prefilter=False,
    )
    return out, "label resampled onto the image grid by geometry (nearest neighbour)"
