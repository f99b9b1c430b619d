"""Reading and writing 3-D CT volumes: :func:`read_volume` picks the reader from the path.

The readers live one format per module and share :class:`Volume`:

* :mod:`flexunet.io.nifti`: :func:`read_nifti`, :func:`write_nifti`;
* :mod:`flexunet.io.dicom`: :func:`read_dicom_series`, :func:`dicom_subfolders`;
* :mod:`flexunet.io.mrc`: :func:`read_mrc`;
* :mod:`flexunet.io.orientation`: :class:`Volume`, the checks
  (:func:`check_finite`, :func:`check_same_geometry`), :func:`to_canonical` /
  :class:`Reorientation`, :func:`resample_label_to`, :func:`axcodes_affine`.

Their public names are importable from here too.

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

import os
from pathlib import Path

from flexunet.errors import DataError
from flexunet.io.dicom import dicom_subfolders, looks_like_dicom_file, read_dicom_series
from flexunet.io.mrc import read_mrc
from flexunet.io.nifti import read_nifti, write_nifti
from flexunet.io.orientation import (
    Reorientation,
    Volume,
    axcodes_affine,
    check_finite,
    check_same_geometry,
    resample_label_to,
    short_error,
    to_canonical,
)

__all__ = [
    "Volume",
    "Reorientation",
    "read_nifti",
    "read_dicom_series",
    "is_dicom_input",
    "dicom_subfolders",
    "read_mrc",
    "read_volume",
    "write_nifti",
    "check_same_geometry",
    "check_finite",
    "to_canonical",
    "resample_label_to",
    "axcodes_affine",
]


def is_dicom_input(path: str | os.PathLike) -> bool:
    """True for the inputs :func:`read_volume` reads as a DICOM series: a folder, a ``.zip``, a ``.dcm``
    file, or another file (not NIfTI or MRC by name) with the DICOM preamble."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir() or name.endswith((".zip", ".dcm")):
        return True
    if name.endswith((".nii", ".nii.gz", ".mrc", ".map", ".mrc.gz", ".mrcs")):
        return False
    return p.is_file() and looks_like_dicom_file(p)


def read_volume(path: str | os.PathLike, *, label: bool = False, spacing=None, series_uid: str | None = None) -> Volume:
    """Read a volume, choosing the reader from the path.

    * ``.nii`` / ``.nii.gz`` -> :func:`read_nifti`
    * ``.mrc`` / ``.map`` / ``.mrc.gz`` -> :func:`read_mrc` (``spacing`` as there)
    * ``.zip`` or a folder -> :func:`read_dicom_series`
    * ``.dcm`` file (or any file with a DICOM preamble) -> the series it
      belongs to, read from the files directly in its folder
    Anything else raises DataError.  Images with NaN/Inf voxels raise DataError.
    ``series_uid`` picks one SeriesInstanceUID of a DICOM folder or zip holding several.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: not found; expected a .nii/.nii.gz/.mrc file, a .zip or a folder of DICOM files")
    name = p.name.lower()
    if series_uid is not None and not is_dicom_input(p):
        raise DataError(f"{p}: a series UID ({series_uid}) was given for a file that is not DICOM; expected a DICOM "
                        "folder, .zip or file")
    if p.is_dir():
        vol = read_dicom_series(p, label=label, series_uid=series_uid)
    elif name.endswith(".nii") or name.endswith(".nii.gz"):
        vol = read_nifti(p, label=label)
    elif name.endswith((".mrc", ".map", ".mrc.gz", ".mrcs")):
        vol = read_mrc(p, spacing=spacing, label=label)
    elif name.endswith(".zip"):
        vol = read_dicom_series(p, label=label, series_uid=series_uid)
    elif name.endswith(".dcm") or looks_like_dicom_file(p):
        import pydicom

        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True, force=name.endswith(".dcm"))
        except Exception as exc:
            raise DataError(f"{p}: cannot read as DICOM ({short_error(exc)}); expected a DICOM file") from None
        uid = series_uid or ds.get("SeriesInstanceUID")
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
