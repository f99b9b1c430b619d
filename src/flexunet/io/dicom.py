"""DICOM series from a folder or a .zip: :func:`read_dicom_series`, :func:`dicom_subfolders`.

``array[i, j, k]`` is column ``i``, row ``j`` of slice ``k`` (the transpose of
pydicom's ``pixel_array[row, col]``), slices ordered by their position along
the slice normal, ``k = 0`` the lowest.  The affine is built in DICOM LPS and
converted to RAS by negating its first two rows: the same result
dcm2niix/nibabel give for the same series.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from flexunet.errors import DataError
from flexunet.io.orientation import Volume, as_label_array, short_error

__all__ = ["read_dicom_series", "dicom_subfolders", "looks_like_dicom_file"]


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
        raise DataError(f"{path}: cannot open as zip ({short_error(exc)}); expected a valid .zip of DICOM files") from None


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
                raise DataError(f"{f}: cannot read ({short_error(exc)}); expected a readable DICOM file") from None
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
                raise DataError(f"{src}::{rel}: cannot extract ({short_error(exc)}); expected an intact zip member") from None
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
            f"{item.name}: cannot decode pixel data, transfer syntax {ts} ({short_error(exc)}); "
            "expected uncompressed DICOM or an installed decoder (pylibjpeg/gdcm)"
        ) from None
    if px.ndim != 2:
        raise DataError(
            f"{item.name}: pixel data has shape {tuple(px.shape)}; expected one 2-D grey-level slice per file"
        )
    return px


def _uid_summary(groups: dict[str, list]) -> str:
    """Each series as ``UID ('description', series N): K slices``, to choose one by its UID."""
    parts = []
    for uid, items in groups.items():
        ds = items[0].ds
        desc = str(ds.get("SeriesDescription", "") or "").strip()
        number = ds.get("SeriesNumber")
        about = ", ".join(x for x in (repr(desc) if desc else "", f"series {number}" if number not in (None, "") else "")
                          if x)
        parts.append(f"{uid or '<no SeriesInstanceUID>'}{f' ({about})' if about else ''}: {len(items)} slices")
    return "; ".join(parts)


def _declared_slices(slices: list[_DicomItem]) -> tuple[int, str] | None:
    """The slice count the series declares, when every slice declares the same one:
    ImagesInAcquisition (0020,1002) for a single acquisition, else NumberOfSlices (0054,0081)."""
    for tag in ("ImagesInAcquisition", "NumberOfSlices"):
        values = {str(it.ds.get(tag, "") or "") for it in slices}
        if len(values) != 1 or "" in values:
            continue
        if tag == "ImagesInAcquisition" and len({str(it.ds.get("AcquisitionNumber", "")) for it in slices}) != 1:
            continue
        try:
            return int(float(values.pop())), tag
        except ValueError:
            continue
    return None


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
            raise DataError(f"{where}: holds {len(groups)} DICOM series ({_uid_summary(groups)}); expected one "
                            "series: choose one with --series UID (Python: series_uid=...)")
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
    declared = None if label else _declared_slices(slices)
    if declared is not None and declared[0] > n_slices:
        raise DataError(f"{where}: holds {n_slices} slices but the series declares {declared[0]} ({declared[1]}); "
                        "expected the whole series: a slice is missing (a first or last one leaves no gap to see)")
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
        out = as_label_array(out, where)
    return Volume(out, aff, slices[order[0]].ds, where)


def _drop_pixels(ds) -> None:
    try:
        del ds.PixelData
    except Exception:
        pass
    for attr in ("_pixel_array", "_pixel_id"):
        ds.__dict__.pop(attr, None)


def looks_like_dicom_file(path: Path) -> bool:
    """True when ``path`` has the 128-byte preamble and the "DICM" marker of a DICOM file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"

