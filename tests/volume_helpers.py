"""Small synthetic CT volumes for tests: NIfTI cases and DICOM series."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def synthetic_case(seed: int, shape=(48, 40, 12), spacing=(2.0, 2.0, 4.0)):
    """HU image with a bright 'liver' ellipsoid holding a darker 'tumour' sphere; labels 0/1/2."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    cx, cy = shape[0] * 0.4 + rng.integers(-3, 4), shape[1] * 0.5 + rng.integers(-3, 4)
    liver = ((x - cx) / 12) ** 2 + ((y - cy) / 10) ** 2 + ((z - shape[2] / 2) / 5) ** 2 < 1
    tumour = ((x - cx) ** 2 + (y - cy) ** 2 + ((z - shape[2] / 2) * 2) ** 2 < 16) & liver
    img = np.full(shape, -80.0) + rng.normal(0, 10, shape)
    img[liver] = 60 + rng.normal(0, 10, liver.sum())
    img[tumour] = 10 + rng.normal(0, 10, tumour.sum())
    lab = liver.astype(np.uint8) + tumour.astype(np.uint8)
    affine = np.diag([*spacing, 1.0])
    return img.astype(np.float32), lab, affine


def write_case(root: Path, case_id: str, seed: int, affine=None, **kw) -> Path:
    img, lab, aff = synthetic_case(seed, **kw)
    aff = aff if affine is None else affine
    d = root / case_id
    d.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(img, aff), d / "image.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), d / "label.nii.gz")
    return d


def write_dicom_series(folder: Path, hu: np.ndarray, spacing=(0.8, 0.8, 2.5), origin=(-100.0, -120.0, 50.0),
                       slope=1.0, intercept=-1024.0, series_uid=None, names=None, *, angle_deg: float = 0.0,
                       shuffle_seed: int = 0, tags: dict | None = None, number_against_position: bool = False):
    """Write ``hu`` (cols=x, rows=y, slices=z) as a DICOM series with shuffled file names.

    ``angle_deg`` tilts the rows and columns about the patient's z axis (0: axial); ``tags`` are set on
    every slice (patient fields, FrameOfReferenceUID, ...); ``number_against_position`` gives Instance
    Numbers that run against the slice positions (else they follow the file order).
    """
    import math

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    a = math.radians(angle_deg)
    row_cos = np.array([math.cos(a), math.sin(a), 0.0]) + 0.0  # + 0.0: no -0.0 in the tags
    col_cos = np.array([-math.sin(a), math.cos(a), 0.0]) + 0.0
    normal = np.cross(row_cos, col_cos)
    nx, ny, nz = hu.shape
    order = np.random.default_rng(shuffle_seed).permutation(nz)
    for idx, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = names[idx] if names else f"image_{idx}"
        ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study
        ds.Modality = "CT"
        for key, value in (tags or {}).items():
            setattr(ds, key, value)
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.ImageOrientationPatient = [*row_cos.round(6).tolist(), *col_cos.round(6).tolist()]
        ds.ImagePositionPatient = (np.array(origin) + k * spacing[2] * normal).round(4).tolist()
        ds.InstanceNumber = int(nz - k) if number_against_position else int(idx)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        # float64: in float32, hu - intercept rounds a value such as -39.49999 to 984.5, which rint takes to
        # the even 984 (-40 HU) where np.rint(hu) gives -39
        stored = np.rint((hu[:, :, k].T.astype(np.float64) - intercept) / slope).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / name, enforce_file_format=True)
    return folder
