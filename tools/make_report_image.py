"""Draw docs/img/report.png: the top of an ``infer-volume --report`` page, as headless Chromium shows it.

    python tools/make_report_image.py [--out docs/img/report.png] [--height 1500]

Generates phantom (0, 2) of ``flexunet phantom`` (four tumours), writes it as a DICOM series with a
made-up patient (so the report shows its patient and series fields), reads it back, and writes the
report of the phantom's *reference* labels on it (the labels are the phantom's own, not a model's:
the image shows the report's layout, not a model's quality).  Then Chromium takes a screenshot,
which is cropped to ``--height`` pixels, scaled to 900 pixels wide and stored as a palette PNG
(under 200 KB).  Needs ``chromium`` on PATH.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def write_series(folder: Path, hu: np.ndarray, affine: np.ndarray) -> None:
    """``hu`` (X, Y, Z) on a RAS+ diagonal ``affine`` as an axial CT series (columns along RAS +x)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = (generate_uid(entropy_srcs=["report.png", s]) for s in ("study", "series", "frame"))
    sx, sy, sz = np.diag(affine)[:3]
    for k in range(hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["report.png", str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"ct_{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "PHANTOM^DEMO", "PH-0002", "O", "19700101"
        ds.StudyDate, ds.StudyTime, ds.StudyDescription = "20250101", "093000", "CT abdomen (generated phantom)"
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber, ds.Modality = "portal venous", 2, k + 1, "CT"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.PixelSpacing, ds.SliceThickness = [float(sy), float(sx)], float(sz)
        ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]  # columns along LPS -x = RAS +x, rows along RAS +y
        ras = affine @ np.array([0, 0, k, 1.0])
        ds.ImagePositionPatient = [-float(ras[0]), -float(ras[1]), float(ras[2])]
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = np.clip(np.rint(hu[:, :, k].T + 1024), 0, 65535).astype(np.uint16).tobytes()
        ds.save_as(folder / f"ct_{k:03d}.dcm", enforce_file_format=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "report.png"))
    ap.add_argument("--height", type=int, default=1500, help="screenshot pixels kept from the top")
    args = ap.parse_args()
    chromium = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                    None)
    if chromium is None:
        print("make_report_image: no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 1
    from PIL import Image

    import flexunet
    from flexunet.data.phantom import generate_phantom
    from flexunet.infer.segmentation import Segmentation
    from flexunet.infer.volume import compact_hu
    from flexunet.metrics.volumetry import volumetry, voxel_volume_ml

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hu, label, affine = generate_phantom((0, 2))
        write_series(tmp / "PH-0002" / "DICOM", hu, affine)
        vol = flexunet.read_volume(tmp / "PH-0002" / "DICOM")
        labels = np.ascontiguousarray(label.astype(np.uint8))  # the same voxel order as the series read back
        seg = Segmentation(labels=labels, affine=vol.affine, spacing=vol.spacing,
                           volumetry=volumetry(labels, voxel_volume_ml(vol.affine)), source=vol.source,
                           header=vol.header, image=compact_hu(vol.array),
                           provenance={"flexunet_version": flexunet.__version__,
                                       "labels": "the phantom's reference labels (no model)"})
        page = seg.save_report(tmp / "report.html")
        shot = tmp / "shot.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp / 'profile'}", "--window-size=1100,2600", f"--screenshot={shot}",
                        page.as_uri()], check=True, capture_output=True, timeout=120)
        img = Image.open(shot).convert("RGB")
        img = img.crop((0, 0, img.width, min(args.height, img.height)))
        img = img.resize((900, round(img.height * 900 / img.width)), Image.LANCZOS)
        img.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
