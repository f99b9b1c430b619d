"""NIfTI-1/2 volumes: read (:func:`read_nifti`) and write atomically (:func:`write_nifti`).

The array and affine follow the :mod:`flexunet.io.orientation` conventions:
nibabel's ``(i, j, k)`` index order and its RAS+ affine.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from flexunet.errors import DataError
from flexunet.io.atomic import atomic_temp_path
from flexunet.io.orientation import Volume, as_label_array, short_error

__all__ = ["GeometryWarning", "read_nifti", "write_nifti"]


def _squeeze_to_3d(arr: np.ndarray, source: str) -> np.ndarray:
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataError(f"{source}: array has shape {tuple(arr.shape)}; expected a 3-D volume")
    return arr


class GeometryWarning(UserWarning):
    """A volume's orientation or voxel size was assumed, not read."""


def _raw_header(p: Path):
    """The header as stored in the file, without nibabel's repairs; None when it is not a readable
    NIfTI-1/2 header (then nibabel's own reading reports the problem)."""
    import gzip

    try:
        with (gzip.open if p.name.lower().endswith(".gz") else open)(p, "rb") as fh:
            head = fh.read(4)
            fh.seek(0)
            for cls in (nib.Nifti1Header, nib.Nifti2Header):
                if int.from_bytes(head, "little") == cls.sizeof_hdr or int.from_bytes(head, "big") == cls.sizeof_hdr:
                    return cls.from_fileobj(fh, check=False)
    except (OSError, EOFError, ValueError):
        return None
    return None


def _check_claimed_size(p: Path, header, label: bool) -> None:
    """Refuse a header whose voxel data cannot be in the file or in memory, before anything is allocated.

    Raises:
        DataError: with the claimed shape and size, and what the file or the memory holds.
    """
    shape = tuple(int(v) for v in header.get_data_shape())
    dtype = header.get_data_dtype()
    n = 1
    for v in shape:
        n *= v
    claimed = n * dtype.itemsize
    if not p.name.lower().endswith(".gz"):
        offset = int(float(header["vox_offset"])) or len(header.binaryblock) + 4
        held = max(0, p.stat().st_size - offset)
        if claimed > held:
            raise DataError(f"{p}: header claims {'x'.join(map(str, shape))} {dtype} voxels ({claimed:,} bytes) but "
                            f"the file holds {held:,} bytes of data; expected a complete NIfTI file")
        return
    import psutil

    needed = claimed + (0 if label else n * 4)  # the stored values, then their float32 copy
    available = psutil.virtual_memory().available
    if needed > available:
        raise DataError(f"{p}: header claims {'x'.join(map(str, shape))} {dtype} voxels, {needed / 2**30:.1f} GiB to "
                        f"read, but {available / 2**30:.1f} GiB of memory is available; expected a volume that fits")


def _check_geometry_codes(p: Path, hdr) -> None:
    """A NIfTI with neither qform nor sform: refuse it without a valid voxel size, else warn once which
    orientation is assumed.

    Raises:
        DataError: pixdim[1:4] zero, negative or not finite.
    """
    import warnings

    if int(hdr["qform_code"]) or int(hdr["sform_code"]):
        return
    pix = [round(float(v), 6) for v in hdr["pixdim"][1:4]]
    if not all(np.isfinite(pix)) or any(v <= 0 for v in pix):
        raise DataError(f"{p}: has no geometry: qform_code and sform_code are 0 and pixdim[1:4] = {pix}; expected "
                        "a qform or sform, or positive voxel sizes in pixdim")
    codes = "".join(nib.aff2axcodes(hdr.get_best_affine()))
    warnings.warn(f"{p}: qform_code and sform_code are 0: orientation assumed {codes} (NIfTI's default for "
                  f"such files), voxel size {tuple(pix)} mm from pixdim; check the labels' orientation",
                  GeometryWarning, stacklevel=3)


def read_nifti(path: str | os.PathLike, *, label: bool = False) -> Volume:
    """Read a .nii/.nii.gz file.

    Images come back as float32 with the header's scl_slope/scl_inter applied;
    labels (``label=True``) keep an integer dtype.  The nibabel header is kept
    in ``Volume.header``.  Trailing singleton dimensions are dropped.
    """
    p = Path(path)
    raw_header = _raw_header(p)  # as stored: nibabel's own header has zero pixdims set to 1 already
    if raw_header is not None:
        _check_claimed_size(p, raw_header, label)
        _check_geometry_codes(p, raw_header)
    try:
        img = nib.load(str(p))
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; expected a NIfTI volume") from None
    except Exception as exc:  # nibabel raises many kinds for corrupt files
        raise DataError(f"{p}: cannot read as NIfTI ({short_error(exc)}); expected a valid .nii/.nii.gz file") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{p}: is a {type(img).__name__}; expected a NIfTI-1/2 image")

    try:
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{p}: cannot read the voxel data ({short_error(exc)}); expected a complete NIfTI file") from None
    raw = _squeeze_to_3d(raw, str(p))
    if label:
        arr = as_label_array(raw, str(p))
    else:
        arr = raw.astype(np.float32, copy=False)
    aff = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise DataError(f"{p}: affine {aff[:3].tolist()} is singular or not finite; expected a valid voxel-to-world matrix")
    return Volume(np.asarray(arr), aff, img.header, str(p))


def write_nifti(volume_or_array, path: str | os.PathLike, affine=None, header=None, dtype=None) -> Path:
    """Write a NIfTI-1 file atomically (temp file ``.<name>.tmp-XXXX.nii.gz`` then ``os.replace``).

    ``volume_or_array`` is a :class:`Volume` (its affine and header are used
    unless ``affine``/``header`` are given) or an array (``affine`` required).
    A nibabel header is copied and its qform/sform set from the affine (codes
    kept when non-zero, else 1 = scanner).  ``dtype`` casts the data (floats
    are rounded for integer dtypes; out-of-range values raise DataError);
    without it the data's own dtype is written (bool -> uint8, int64 -> int32).
    No intensity scaling is applied on write.
    """
    p = Path(path)
    name = p.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise DataError(f"{p}: output name must end in .nii or .nii.gz")
    if isinstance(volume_or_array, Volume):
        data = volume_or_array.array
        affine = volume_or_array.affine if affine is None else affine
        header = volume_or_array.header if header is None else header
    else:
        data = volume_or_array
        if affine is None:
            raise ValueError("write_nifti: affine is required when writing a bare array")
    data = np.asanyarray(data)
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise ValueError(f"write_nifti: affine has shape {aff.shape}; expected 4x4")

    if dtype is not None:
        dt = np.dtype(dtype)
        if np.issubdtype(dt, np.integer) and not np.issubdtype(data.dtype, np.integer) and data.dtype != bool:
            if not np.all(np.isfinite(data)):
                raise DataError(f"{p}: data holds NaN/Inf; cannot write as {dt}")
            data = np.rint(data)
        if np.issubdtype(dt, np.integer) and data.size:
            info = np.iinfo(dt)
            lo, hi = data.min(), data.max()
            if lo < info.min or hi > info.max:
                raise DataError(f"{p}: values {lo}..{hi} do not fit {dt}; expected {info.min}..{info.max}")
        data = data.astype(dt, copy=False)
    elif data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype in (np.dtype(np.int64), np.dtype(np.uint64)):
        data = data.astype(np.int32 if (data.size == 0 or (data.min() >= -2**31 and data.max() < 2**31)) else np.float64)

    if isinstance(header, nib.nifti1.Nifti1Header):
        hdr = nib.Nifti1Header.from_header(header)
    elif header is not None and hasattr(header, "get_data_shape") and hasattr(header, "get_zooms"):
        hdr = nib.Nifti1Header.from_header(header)
    else:
        hdr = nib.Nifti1Header()
    qcode = int(hdr["qform_code"]) or 1
    scode = int(hdr["sform_code"]) or 1
    img = nib.Nifti1Image(data, aff, header=hdr)
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(None, None)
    img.set_qform(aff, code=qcode)
    img.set_sform(aff, code=scode)
    img.header.set_xyzt_units("mm", img.header.get_xyzt_units()[1] or "sec")
    img.header["cal_min"] = 0.0  # display window of the source no longer applies
    img.header["cal_max"] = 0.0
    with atomic_temp_path(p) as tmp:
        nib.save(img, str(tmp))
    return p
