"""Reading and writing 3-D CT volumes: NIfTI, DICOM series, MRC.

Conventions (the same for every reader)
---------------------------------------
* :class:`Volume` ``array`` is indexed ``(i, j, k)`` exactly as nibabel indexes
  a NIfTI image, and ``affine`` (4x4 float64) maps a voxel index
  ``(i, j, k, 1)`` to world **RAS+ millimetres**, exactly as a NIfTI
  sform/qform does.  Two volumes with equal shapes and affines line up voxel
  for voxel, whatever file format they came from.
* Image arrays are ``float32`` Hounsfield units; label arrays keep an integer
  dtype (readers are told which with ``label=True``).
* DICOM: ``array[i, j, k]`` is column ``i``, row ``j`` of slice ``k``
  (the transpose of pydicom's ``pixel_array[row, col]``), slices ordered by
  their position along the slice normal, ``k = 0`` the lowest.  The affine is
  built in DICOM LPS and converted to RAS by negating its first two rows —
  the same result dcm2niix/nibabel give for the same series.
* MRC: mrcfile stores ``data[z, y, x]``; the volume is ``array[x, y, z]``.

Every failure caused by the input raises :class:`~flexunet.errors.DataError`
with a one-line message naming the file, the value and what was expected.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from flexunet.errors import DataError
from flexunet.io.atomic import atomic_temp_path

__all__ = [
    "Volume",
    "Reorientation",
    "read_nifti",
    "read_dicom_series",
    "dicom_subfolders",
    "read_mrc",
    "read_volume",
    "write_nifti",
    "check_same_geometry",
    "check_finite",
    "to_canonical",
    "resample_label_to",
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


def _short(exc: BaseException) -> str:
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


def _as_label_array(arr: np.ndarray, source: str) -> np.ndarray:
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


# --------------------------------------------------------------------------- NIfTI


def _squeeze_to_3d(arr: np.ndarray, source: str) -> np.ndarray:
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataError(f"{source}: array has shape {tuple(arr.shape)}; expected a 3-D volume")
    return arr


def read_nifti(path: str | os.PathLike, *, label: bool = False) -> Volume:
    """Read a .nii/.nii.gz file.

    Images come back as float32 with the header's scl_slope/scl_inter applied;
    labels (``label=True``) keep an integer dtype.  The nibabel header is kept
    in ``Volume.header``.  Trailing singleton dimensions are dropped.
    """
    p = Path(path)
    try:
        img = nib.load(str(p))
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; expected a NIfTI volume") from None
    except Exception as exc:  # nibabel raises many kinds for corrupt files
        raise DataError(f"{p}: cannot read as NIfTI ({_short(exc)}); expected a valid .nii/.nii.gz file") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{p}: is a {type(img).__name__}; expected a NIfTI-1/2 image")
    try:
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{p}: cannot read the voxel data ({_short(exc)}); expected a complete NIfTI file") from None
    raw = _squeeze_to_3d(raw, str(p))
    if label:
        arr = _as_label_array(raw, str(p))
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


# --------------------------------------------------------------------------- DICOM


@dataclass
class _DicomItem:
    name: str
    ds: object  # pydicom.Dataset


_SKIP_NAMES = {"DICOMDIR", ".DS_Store", "Thumbs.db"}


def _skip_member(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    if not parts:
        return True
    if any(part == "__MACOSX" for part in parts):
        return True
    base = parts[-1]
    return base.startswith("._") or base in _SKIP_NAMES


def _norm_within(within: str | None) -> str | None:
    if within is None:
        return None
    w = str(within).replace("\\", "/").strip("/")
    return w or None


def _is_under(rel: str, within: str | None) -> bool:
    return within is None or rel.startswith(within + "/")


# Files with these endings are never parsed without the DICOM preamble.
_NOT_DICOM_SUFFIXES = (
    ".txt", ".md", ".csv", ".json", ".xml", ".html", ".htm", ".pdf", ".py", ".ini", ".config", ".log",
    ".nii", ".gz", ".zip", ".tar", ".bz2", ".xz", ".mrc", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff",
    ".vtk", ".stl", ".obj", ".npy", ".npz", ".pt", ".pth", ".ckpt",
)


def _dcmread_bytes(fileobj, name: str):
    """A pydicom dataset, or None when the file is not DICOM.

    Files with the "DICM" preamble are read normally; files without it are
    tried with ``force=True`` (old ACR-NEMA style) unless their name ends in a
    known non-DICOM extension, and kept only if they hold an image.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(fileobj)
    except InvalidDicomError:
        if name.lower().endswith(_NOT_DICOM_SUFFIXES):
            return None
    except Exception:
        return None
    # No "DICM" preamble: accept only if it parses as an image dataset.
    try:
        fileobj.seek(0)
        ds = pydicom.dcmread(fileobj, force=True)
        if "PixelData" in ds and "Rows" in ds:
            return ds
    except Exception:
        return None
    return None


def _zip_or_die(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected a .zip of DICOM files") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: cannot open as zip ({_short(exc)}); expected a valid .zip of DICOM files") from None


def _load_dicom_items(src: Path, within: str | None, recursive: bool) -> tuple[list[_DicomItem], int]:
    """Parse every DICOM file under ``src`` (folder or .zip). Returns (items, n_skipped)."""
    items: list[_DicomItem] = []
    skipped = 0
    if src.is_dir():
        base = src / within if within else src
        if not base.is_dir():
            raise DataError(f"{src}: has no sub-folder {within!r}; expected a folder of DICOM files there")
        files = base.rglob("*") if recursive else base.iterdir()
        for f in sorted(files):
            if not f.is_file():
                continue
            rel = f.relative_to(src).as_posix()
            if _skip_member(rel):
                continue
            try:
                with open(f, "rb") as fh:
                    ds = _dcmread_bytes(fh, str(f))
            except OSError as exc:
                raise DataError(f"{f}: cannot read ({_short(exc)}); expected a readable DICOM file") from None
            if ds is None:
                skipped += 1
                continue
            items.append(_DicomItem(str(f), ds))
        return items, skipped
    zf = _zip_or_die(src)
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            rel = info.filename.replace("\\", "/")
            if _skip_member(rel) or not _is_under(rel, within):
                continue
            if not recursive:
                parent = str(PurePosixPath(rel).parent)
                if parent != (within or "."):
                    continue
            try:
                data = zf.read(info)
            except Exception as exc:
                raise DataError(f"{src}::{rel}: cannot extract ({_short(exc)}); expected an intact zip member") from None
            ds = _dcmread_bytes(io.BytesIO(data), rel)
            if ds is None:
                skipped += 1
                continue
            items.append(_DicomItem(f"{src}::{rel}", ds))
    return items, skipped


def dicom_subfolders(folder_or_zip: str | os.PathLike) -> dict[str, int]:
    """Map each sub-folder (relative POSIX path) holding files to its file count.

    Files are not parsed; this lists the layout of e.g. IRCADb ``MASKS_DICOM``
    (one series folder per structure).  Files directly in the root are listed
    under ``"."``.
    """
    src = Path(folder_or_zip)
    counts: dict[str, int] = {}
    if src.is_dir():
        for f in src.rglob("*"):
            if f.is_file():
                rel = f.relative_to(src).as_posix()
                if not _skip_member(rel):
                    parent = str(PurePosixPath(rel).parent)
                    counts[parent] = counts.get(parent, 0) + 1
    elif src.is_file() and zipfile.is_zipfile(src):
        with _zip_or_die(src) as zf:
            for info in zf.infolist():
                rel = info.filename.replace("\\", "/")
                if info.is_dir() or _skip_member(rel):
                    continue
                parent = str(PurePosixPath(rel).parent)
                counts[parent] = counts.get(parent, 0) + 1
    else:
        raise DataError(f"{src}: not a folder or .zip; expected DICOM files")
    return dict(sorted(counts.items()))


_TAG_IDS = {
    "ImagePositionPatient": "(0020,0032)",
    "ImageOrientationPatient": "(0020,0037)",
    "PixelSpacing": "(0028,0030)",
    "Rows": "(0028,0010)",
    "Columns": "(0028,0011)",
    "PixelData": "(7FE0,0010)",
    "SeriesInstanceUID": "(0020,000E)",
}


def _require(item: _DicomItem, tag: str):
    ds = item.ds
    value = ds.get(tag) if tag != "PixelData" else (ds.PixelData if "PixelData" in ds else None)
    if value is None or (not isinstance(value, (int, float, bytes)) and len(value) == 0):
        raise DataError(
            f"{item.name}: lacks DICOM tag {tag} {_TAG_IDS.get(tag, '')}; expected it in every slice of an image series"
        )
    return value


def _floats(item: _DicomItem, tag: str, n: int) -> np.ndarray:
    value = _require(item, tag)
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{item.name}: {tag} = {value!r}; expected {n} numbers") from None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DataError(f"{item.name}: {tag} = {list(value)!r}; expected {n} finite numbers")
    return arr


def _pixels(item: _DicomItem) -> np.ndarray:
    ds = item.ds
    _require(item, "PixelData")
    try:
        px = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataError(
            f"{item.name}: cannot decode pixel data, transfer syntax {ts} ({_short(exc)}); "
            "expected uncompressed DICOM or an installed decoder (pylibjpeg/gdcm)"
        ) from None
    if px.ndim != 2:
        raise DataError(
            f"{item.name}: pixel data has shape {tuple(px.shape)}; expected one 2-D grey-level slice per file"
        )
    return px


def _uid_summary(groups: dict[str, list]) -> str:
    return ", ".join(f"{uid or '<no SeriesInstanceUID>'}: {len(v)} files" for uid, v in groups.items())


def read_dicom_series(
    folder_or_zip: str | os.PathLike,
    *,
    label: bool = False,
    within: str | None = None,
    series_uid: str | None = None,
    recursive: bool = True,
) -> Volume:
    """Read one DICOM series from a folder (searched recursively) or a .zip.

    Files may have any names; non-DICOM files, ``._*`` and ``__MACOSX`` are
    ignored.  ``within`` restricts reading to a sub-folder (relative path
    inside the folder/zip), ``series_uid`` to one SeriesInstanceUID;
    otherwise more than one series raises DataError.

    Slices are ordered by the projection of ImagePositionPatient on the slice
    normal (row cosine x column cosine), never by file name.  Duplicate
    positions and gaps larger than 1.5x the median spacing raise DataError.
    Images get ``RescaleSlope``/``RescaleIntercept`` applied (float32 HU);
    with ``label=True`` the stored integer values are returned unchanged.
    ``Volume.header`` is the first slice's dataset without its pixel data.
    """
    src = Path(folder_or_zip)
    if not src.exists():
        raise DataError(f"{src}: not found; expected a folder or .zip of DICOM files")
    if src.is_file() and not zipfile.is_zipfile(src):
        raise DataError(f"{src}: is a file but not a .zip; expected a folder or .zip of DICOM files")
    within = _norm_within(within)
    where = f"{src}::{within}" if within else str(src)
    items, skipped = _load_dicom_items(src, within, recursive)
    if not items:
        raise DataError(
            f"{where}: holds no DICOM image files ({skipped} other files skipped); expected one DICOM series"
        )
    groups: dict[str, list[_DicomItem]] = {}
    for it in items:
        uid = str(it.ds.get("SeriesInstanceUID", "") or "")
        groups.setdefault(uid, []).append(it)
    if series_uid is not None:
        if series_uid not in groups:
            raise DataError(f"{where}: has no series {series_uid} (found {_uid_summary(groups)}); expected that series")
        slices = groups[series_uid]
    else:
        if len(groups) > 1:
            raise DataError(f"{where}: holds {len(groups)} DICOM series ({_uid_summary(groups)}); expected one series")
        slices = next(iter(groups.values()))
    return _slices_to_volume(slices, where, label)


def _slices_to_volume(slices: list[_DicomItem], where: str, label: bool) -> Volume:
    first = slices[0]
    iop0 = _floats(first, "ImageOrientationPatient", 6)
    ps0 = _floats(first, "PixelSpacing", 2)
    rows0, cols0 = int(_require(first, "Rows")), int(_require(first, "Columns"))
    row_cos, col_cos = iop0[:3], iop0[3:]
    if np.linalg.norm(row_cos) < 1e-6 or np.linalg.norm(col_cos) < 1e-6:
        raise DataError(f"{first.name}: ImageOrientationPatient {iop0.tolist()} has a zero vector; expected two unit vectors")
    row_cos = row_cos / np.linalg.norm(row_cos)
    col_cos = col_cos / np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)
    if np.linalg.norm(normal) < 1e-3:
        raise DataError(f"{first.name}: ImageOrientationPatient {iop0.tolist()} has parallel row/column vectors; expected orthogonal ones")
    normal /= np.linalg.norm(normal)
    if np.any(ps0 <= 0):
        raise DataError(f"{first.name}: PixelSpacing {ps0.tolist()}; expected positive values")

    positions = np.empty((len(slices), 3))
    for n, it in enumerate(slices):
        iop = _floats(it, "ImageOrientationPatient", 6)
        if not np.allclose(iop, iop0, atol=1e-4):
            raise DataError(
                f"{where}: slice {it.name} has ImageOrientationPatient {iop.tolist()} but {first.name} has "
                f"{iop0.tolist()}; expected one orientation for the whole series"
            )
        ps = _floats(it, "PixelSpacing", 2)
        if not np.allclose(ps, ps0, atol=1e-4):
            raise DataError(
                f"{where}: slice {it.name} has PixelSpacing {ps.tolist()} but {first.name} has {ps0.tolist()}; "
                "expected one pixel spacing for the whole series"
            )
        r, c = int(_require(it, "Rows")), int(_require(it, "Columns"))
        if (r, c) != (rows0, cols0):
            raise DataError(
                f"{where}: slice {it.name} is {r}x{c} but {first.name} is {rows0}x{cols0}; expected equal slice sizes"
            )
        positions[n] = _floats(it, "ImagePositionPatient", 3)

    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist_sorted = dist[order]
    n_slices = len(slices)
    if n_slices > 1:
        diffs = np.diff(dist_sorted)
        dup = np.nonzero(diffs < 1e-3)[0]
        if dup.size:
            a, b = slices[order[dup[0]]].name, slices[order[dup[0] + 1]].name
            raise DataError(
                f"{where}: {a} and {b} share position {dist_sorted[dup[0]]:.3f} mm along the slice normal "
                f"({dup.size} duplicate positions); expected one slice per position"
            )
        median = float(np.median(diffs))
        gaps = np.nonzero(diffs > 1.5 * median)[0]
        if gaps.size:
            g = gaps[0]
            raise DataError(
                f"{where}: gap of {diffs[g]:.3f} mm between slice positions {dist_sorted[g]:.3f} and "
                f"{dist_sorted[g + 1]:.3f} mm along the normal (median spacing {median:.3f} mm, "
                f"{gaps.size} gap(s)); expected contiguous slices — a slice is missing"
            )
        step = (positions[order[-1]] - positions[order[0]]) / (n_slices - 1)
    else:
        ds = first.ds
        thick = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0
        try:
            thick = float(thick)
        except (TypeError, ValueError):
            thick = 1.0
        step = normal * (thick if thick > 0 else 1.0)

    # LPS affine: i = column (along the row cosine, spaced PixelSpacing[1]),
    # j = row (along the column cosine, spaced PixelSpacing[0]), k = slice.
    aff = np.eye(4)
    aff[:3, 0] = row_cos * ps0[1]
    aff[:3, 1] = col_cos * ps0[0]
    aff[:3, 2] = step
    aff[:3, 3] = positions[order[0]]
    aff[:2, :] *= -1.0  # LPS -> RAS
    aff += 0.0  # no negative zeros

    out = None
    for k, idx in enumerate(order):
        it = slices[idx]
        px = _pixels(it)
        if label:
            if out is None:
                out = np.empty((n_slices, rows0, cols0), dtype=px.dtype)
            out[k] = px
        else:
            if out is None:
                out = np.empty((n_slices, rows0, cols0), dtype=np.float32)
            slope = it.ds.get("RescaleSlope", 1)
            inter = it.ds.get("RescaleIntercept", 0)
            try:
                slope = float(slope) if slope is not None else 1.0
                inter = float(inter) if inter is not None else 0.0
            except (TypeError, ValueError):
                raise DataError(
                    f"{it.name}: RescaleSlope/RescaleIntercept = {slope!r}/{inter!r}; expected numbers"
                ) from None
            if not (math.isfinite(slope) and math.isfinite(inter)) or slope == 0:
                raise DataError(f"{it.name}: RescaleSlope {slope} / RescaleIntercept {inter}; expected a finite non-zero slope")
            sl = out[k]
            sl[...] = px
            if slope != 1.0:
                sl *= np.float32(slope)
            if inter != 0.0:
                sl += np.float32(inter)
        # Drop the raw and decoded pixel buffers as we go (large series);
        # the first slice's dataset, minus its pixels, becomes the header.
        _drop_pixels(it.ds)
        if k > 0:
            it.ds = None
    # (slice, row, col) C-order  ->  (col, row, slice) view, which is
    # Fortran-contiguous: the NIfTI on-disk order, so writing needs no copy.
    out = out.transpose(2, 1, 0)
    if label:
        out = _as_label_array(out, where)
    return Volume(out, aff, slices[order[0]].ds, where)


def _drop_pixels(ds) -> None:
    try:
        del ds.PixelData
    except Exception:
        pass
    for attr in ("_pixel_array", "_pixel_id"):
        ds.__dict__.pop(attr, None)


# --------------------------------------------------------------------------- MRC


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


def read_mrc(path: str | os.PathLike, spacing=None, *, label: bool = False, axcodes: str | None = None) -> Volume:
    """Read an MRC/CCP4 map (also .mrc.gz) with mrcfile.

    mrcfile returns ``data[section, row, column]`` = ``(z, y, x)`` for the
    standard axis mapping; the volume is indexed ``(x, y, z)`` (MAPC/MAPR/MAPS
    are honoured if they differ from 1/2/3).  Voxel size per axis: the
    header's ``voxel_size`` when non-zero, else ``spacing`` (a number or a
    3-sequence in mm), else 1 mm.  The header's numbers are taken as
    millimetres (MRC nominally uses ångström; CT tools that write MRC, such as
    the LiTS-117 package, store mm or nothing).  MRC has no patient
    orientation: the affine is diagonal (axis directions taken as RAS) with the
    header ``origin`` as translation, unless ``axcodes`` names where the
    (x, y, z) axes point, e.g. ``"SLP"`` for the LiTS-117 crop.
    """
    import mrcfile

    p = Path(path)
    try:
        with mrcfile.open(str(p), mode="r", permissive=True) as mrc:
            if mrc.data is None:
                raise DataError(f"{p}: holds no data block; expected an MRC volume")
            data = np.array(mrc.data)
            hdr = mrc.header.copy()
            vs = mrc.voxel_size
            voxel = np.array([float(vs.x), float(vs.y), float(vs.z)])
            origin = np.array([float(hdr.origin.x), float(hdr.origin.y), float(hdr.origin.z)])
            axmap = (int(hdr.mapc), int(hdr.mapr), int(hdr.maps))
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; expected an MRC volume") from None
    except Exception as exc:
        raise DataError(f"{p}: cannot read as MRC ({_short(exc)}); expected a valid .mrc file") from None
    if data.ndim != 3:
        raise DataError(f"{p}: data has shape {tuple(data.shape)}; expected a 3-D volume")
    arr = data.transpose(2, 1, 0)  # (col, row, section)
    if sorted(axmap) == [1, 2, 3] and axmap != (1, 2, 3):
        perm = np.argsort(axmap)  # data axis holding X, then Y, then Z
        arr = arr.transpose(tuple(int(a) for a in perm))
    arr = np.ascontiguousarray(arr)
    if spacing is None:
        fallback = np.ones(3)
    else:
        fallback = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
        if np.any(~np.isfinite(fallback)) or np.any(fallback <= 0):
            raise DataError(f"{p}: spacing {spacing!r}; expected positive voxel sizes in mm")
    good = np.isfinite(voxel) & (voxel > 0)
    sizes = np.where(good, voxel, fallback)
    aff = axcodes_affine(axcodes or "RAS", sizes, origin if np.all(np.isfinite(origin)) else None,
                         where=f"{p}: axcodes")
    if label:
        arr = _as_label_array(arr, str(p))
    else:
        arr = arr.astype(np.float32, copy=False)
    return Volume(arr, aff, hdr, str(p))


# --------------------------------------------------------------------------- dispatch


def _looks_like_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_volume(path: str | os.PathLike, *, label: bool = False, spacing=None) -> Volume:
    """Read a volume, choosing the reader from the path.

    * ``.nii`` / ``.nii.gz`` -> :func:`read_nifti`
    * ``.mrc`` / ``.map`` / ``.mrc.gz`` -> :func:`read_mrc` (``spacing`` as there)
    * ``.zip`` or a folder -> :func:`read_dicom_series`
    * ``.dcm`` file (or any file with a DICOM preamble) -> the series it
      belongs to, read from the files directly in its folder
    Anything else raises DataError.  Images with NaN/Inf voxels raise DataError.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: not found; expected a .nii/.nii.gz/.mrc file, a .zip or a folder of DICOM files")
    name = p.name.lower()
    if p.is_dir():
        vol = read_dicom_series(p, label=label)
    elif name.endswith(".nii") or name.endswith(".nii.gz"):
        vol = read_nifti(p, label=label)
    elif name.endswith((".mrc", ".map", ".mrc.gz", ".mrcs")):
        vol = read_mrc(p, spacing=spacing, label=label)
    elif name.endswith(".zip"):
        vol = read_dicom_series(p, label=label)
    elif name.endswith(".dcm") or _looks_like_dicom_file(p):
        import pydicom

        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True, force=name.endswith(".dcm"))
        except Exception as exc:
            raise DataError(f"{p}: cannot read as DICOM ({_short(exc)}); expected a DICOM file") from None
        uid = ds.get("SeriesInstanceUID")
        if not uid:
            raise DataError(f"{p}: lacks DICOM tag SeriesInstanceUID (0020,000E); expected it to find the series")
        vol = read_dicom_series(p.parent, label=label, series_uid=str(uid), recursive=False)
    else:
        raise DataError(
            f"{p}: unknown volume format; expected .nii, .nii.gz, .mrc, .zip (DICOM), a .dcm file or a DICOM folder"
        )
    if not label:
        check_finite(vol, str(p))
    return vol


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
        raise DataError(f"{vol.source}: cannot derive an orientation from the affine ({_short(exc)}); expected a valid affine") from None
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
