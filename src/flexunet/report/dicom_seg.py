"""DICOM Segmentation objects (DICOM-SEG) for labels predicted on a DICOM CT series.

:func:`write_dicom_seg` writes one SEG instance (highdicom) that references every slice of the
source series by its SOP Instance UID and lies on the source geometry: frame ``k`` of a segment
is the source slice at position ``k`` along the slice normal, whatever the order of the files.
Two BINARY segments, which do not overlap:

====  ==========================  ==============================================  ======================
 no.  label                        segmented property category / type (SNOMED CT)  anatomic region
====  ==========================  ==============================================  ======================
 1    Liver (tissue outside the    Anatomical Structure 91723000 / Liver 10200004   --
      tumours: label 1)
 2    Liver tumour (label 2)       Morphologically Abnormal Structure 49755003 /    Liver 10200004
                                   Neoplasm 108369006
====  ==========================  ==============================================  ======================

The tumour is coded as DICOM's lesion segmentation types do (CID 7159: *Neoplasm* with the
anatomic region *Liver*), which is what the finding "neoplasm of liver" means; the whole liver is
the union of both segments.  Frames without any voxel of a segment are left out (highdicom's
default).  A source series without a Frame of Reference UID (IRCADb's, for one) gets one derived
from its Series Instance UID, with a warning: viewers still place the SEG by its references to
the source instances.

:func:`read_dicom_seg` reads a SEG back into labels (X, Y, Z) on the source series' grid with
pydicom alone, by each frame's referenced source instance.
"""
from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from flexunet.errors import DataError

#: (segment number, label value, segment label, category code, type code, anatomic region code or None)
SEGMENTS = (
    (1, 1, "Liver", ("91723000", "SCT", "Anatomical Structure"), ("10200004", "SCT", "Liver"), None),
    (2, 2, "Liver tumour", ("49755003", "SCT", "Morphologically Abnormal Structure"),
     ("108369006", "SCT", "Neoplasm"), ("10200004", "SCT", "Liver")),
)

_SKIP = {"DICOMDIR", ".DS_Store", "Thumbs.db"}
_NOT_DICOM = (".txt", ".md", ".csv", ".json", ".xml", ".html", ".pdf", ".nii", ".gz", ".zip", ".png", ".jpg",
              ".mrc", ".npy", ".npz", ".pt", ".ckpt")


def _read_header(fileobj, name: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(fileobj, stop_before_pixels=True)
    except InvalidDicomError:
        if name.lower().endswith(_NOT_DICOM):
            return None
    except Exception:
        return None
    try:  # no preamble: keep it only when it parses as an image
        fileobj.seek(0)
        ds = pydicom.dcmread(fileobj, stop_before_pixels=True, force=True)
        return ds if "Rows" in ds and "SOPInstanceUID" in ds else None
    except Exception:
        return None


def _headers(source: Path) -> list:
    """Every DICOM header (no pixels) of a folder (recursive), a .zip, or a file's own folder."""
    out = []
    if source.is_file() and not source.name.lower().endswith(".zip"):
        files = sorted(f for f in source.parent.iterdir() if f.is_file())
    elif source.is_dir():
        files = sorted(f for f in source.rglob("*") if f.is_file())
    else:
        files = None
    if files is not None:
        for f in files:
            parts = f.parts
            if "__MACOSX" in parts or f.name.startswith("._") or f.name in _SKIP:
                continue
            with open(f, "rb") as fh:
                ds = _read_header(fh, f.name)
            if ds is not None:
                out.append(ds)
        return out
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{source}: cannot open as zip ({exc}); expected the .zip of DICOM files the CT was "
                        "read from") from None
    with zf:
        for info in zf.infolist():
            rel = PurePosixPath(info.filename.replace("\\", "/"))
            if info.is_dir() or "__MACOSX" in rel.parts or rel.name.startswith("._") or rel.name in _SKIP:
                continue
            ds = _read_header(io.BytesIO(zf.read(info)), rel.name)
            if ds is not None:
                out.append(ds)
    return out


def source_datasets(source: str | os.PathLike, series_uid: str, affine: np.ndarray,
                    shape: Sequence[int]) -> list:
    """The source series' slice headers (no pixel data), in the order of the label volume's slices.

    Args:
        source: the DICOM folder, .zip or file the CT was read from.
        series_uid: its Series Instance UID.
        affine: the CT's 4x4 voxel-to-world (RAS+ mm) matrix.
        shape: the CT's shape (columns, rows, slices).

    Returns:
        pydicom datasets, slice ``k`` at index ``k``.

    Raises:
        DataError: the series is not found, or its slices do not lie where ``affine`` puts them.
    """
    src = Path(source)
    if not src.exists():
        raise DataError(f"{src}: not found; expected the DICOM folder, .zip or file the CT was read from")
    found = [ds for ds in _headers(src) if str(ds.get("SeriesInstanceUID", "") or "") == series_uid]
    if len(found) != shape[2]:
        raise DataError(f"{src}: series {series_uid or '<no SeriesInstanceUID>'} has {len(found)} slices; "
                        f"expected the {shape[2]} slices of the segmented CT")
    aff = np.asarray(affine, dtype=np.float64)
    lps = aff.copy()
    lps[:2, :] *= -1.0
    normal = lps[:3, 2] / np.linalg.norm(lps[:3, 2])
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in found])
    order = np.argsort(positions @ normal, kind="stable")
    found = [found[i] for i in order]
    expected = (lps[:3, :3] @ np.stack([np.zeros(shape[2]), np.zeros(shape[2]), np.arange(shape[2])])).T + lps[:3, 3]
    tol = max(1e-3, 0.1 * float(np.linalg.norm(lps[:3, 2])))
    err = np.abs(positions[order] - expected).max(axis=1)
    if err.max() > tol:
        k = int(np.argmax(err))
        raise DataError(f"{src}: slice {found[k].get('SOPInstanceUID')} lies at {positions[order][k].tolist()} mm "
                        f"(LPS) but the labels' slice {k} at {expected[k].round(3).tolist()}; expected the series "
                        "the labels were predicted on")
    if (int(found[0].Columns), int(found[0].Rows)) != tuple(shape[:2]):
        raise DataError(f"{src}: slices of {found[0].Columns}x{found[0].Rows} pixels; expected {shape[0]}x{shape[1]} "
                        "as the labels")
    return found


def _code(code):
    from highdicom.sr import CodedConcept

    return CodedConcept(*code)


def segment_descriptions(algorithm: str, version: str) -> list:
    """The liver and tumour segments (:data:`SEGMENTS`) as highdicom describes them.

    Args:
        algorithm: the algorithm's name written in the SEG.
        version: its version.

    Returns:
        ``highdicom.seg.SegmentDescription`` list, segment 1 first.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(name=algorithm, family=codes.cid7162.ArtificialIntelligence,
                                              version=version)
    out = []
    for number, _, label, category, kind, region in SEGMENTS:
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=_code(category),
            segmented_property_type=_code(kind), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo, anatomic_regions=[_code(region)] if region else None))
    return out


def write_dicom_seg(labels: np.ndarray, affine: np.ndarray, source: str | os.PathLike, series_uid: str,
                    path: str | os.PathLike, *, model_name: str = "FlexUNet", software_version: str = "") -> Path:
    """Write labels predicted on a DICOM series as a DICOM-SEG that references it, atomically.

    Args:
        labels: uint8 (X, Y, Z) = (columns, rows, slices sorted along the normal), 0/1/2, on the
            source's grid (as :class:`~flexunet.Segmentation` holds them).
        affine: the source's 4x4 voxel-to-world (RAS+ mm) matrix.
        source: the DICOM folder, .zip or file the CT was read from.
        series_uid: the source's Series Instance UID.
        path: the file to write (``<case>.seg.dcm``).
        model_name: the algorithm and device model name written in the SEG.
        software_version: FlexUNet's version.

    Returns:
        The path written.

    Raises:
        DataError: highdicom missing, the source series not found or not matching the labels.
    """
    try:
        import highdicom as hd
    except ImportError:
        raise DataError(f"{path}: writing DICOM-SEG needs highdicom; expected it installed "
                        "(pip install 'flexunet[dicom-seg]')") from None
    from pydicom.uid import generate_uid

    from flexunet.io.atomic import atomic_write

    labels = np.asarray(labels)
    datasets = source_datasets(source, series_uid, affine, labels.shape)
    if not datasets[0].get("FrameOfReferenceUID"):
        frame_uid = generate_uid(entropy_srcs=[series_uid, "FrameOfReferenceUID"])
        warnings.warn(f"{source}: the series has no FrameOfReferenceUID; the DICOM-SEG uses {frame_uid}, derived "
                      "from its SeriesInstanceUID (viewers place it by the referenced instances)", stacklevel=2)
        datasets = [ds.copy() for ds in datasets]
        for ds in datasets:
            ds.FrameOfReferenceUID = frame_uid
    frames = np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8, copy=False)  # (slices, rows, cols)
    try:
        number = int(datasets[0].get("SeriesNumber") or 0) + 1000
    except (TypeError, ValueError):
        number = 1000
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(model_name, software_version or "unknown"),
        series_instance_uid=generate_uid(), series_number=number, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="FlexUNet", manufacturer_model_name=model_name[:64],
        software_versions=software_version or "unknown", device_serial_number="0",
        content_label="LIVER_TUMOUR", content_description="Liver and liver tumour segmentation",
        series_description="FlexUNet liver and tumour", omit_empty_frames=bool(frames.any()))
    with atomic_write(path, "wb") as fh:
        seg.save_as(fh, enforce_file_format=True)
    return Path(path)


def read_dicom_seg(path: str | os.PathLike, source: str | os.PathLike, affine: np.ndarray,
                   shape: Sequence[int]) -> np.ndarray:
    """Read a DICOM-SEG back into labels on its source series' grid (pydicom only).

    Each frame is placed on the source slice it references (``SourceImageSequence``); its segment
    number becomes the label value (:data:`SEGMENTS`).

    Args:
        path: the SEG file.
        source: the DICOM folder, .zip or file of the source series.
        affine: the source CT's 4x4 voxel-to-world (RAS+ mm) matrix.
        shape: the source CT's shape (columns, rows, slices).

    Returns:
        uint8 (X, Y, Z) labels.

    Raises:
        DataError: not a SEG, or one that references instances outside the series.
    """
    import pydicom

    try:
        seg = pydicom.dcmread(str(path))
    except Exception as exc:
        raise DataError(f"{path}: cannot read as DICOM ({exc}); expected a DICOM-SEG file") from None
    if seg.get("Modality") != "SEG":
        raise DataError(f"{path}: Modality {seg.get('Modality')!r}; expected 'SEG'")
    series = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    slices = {str(ds.SOPInstanceUID): k for k, ds in enumerate(source_datasets(source, series, affine, shape))}
    values = {number: value for number, value, *_ in SEGMENTS}
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    out = np.zeros(tuple(shape), np.uint8)
    for n, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ref = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        if ref not in slices:
            raise DataError(f"{path}: frame {n + 1} references instance {ref}, not in series {series}; expected "
                            "a SEG of this series")
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out[:, :, slices[ref]][pixels[n].T > 0] = values.get(number, number)
    return out
