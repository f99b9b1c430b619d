"""DICOM-SEG output: a round trip through highdicom and pydicom, on the source geometry, from shuffled series."""
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

try:
    import highdicom
except ImportError:  # the tests below skip; write_ct_series stays importable for tests/test_report.py
    highdicom = None

pytestmark = pytest.mark.skipif(highdicom is None, reason="DICOM-SEG needs highdicom (pip install 'flexunet[dicom-seg]')")

from flexunet.cli import main  # noqa: E402
from flexunet.errors import DataError  # noqa: E402
from flexunet.infer.volume import VolumePredictor  # noqa: E402
from flexunet.io.volumes import read_volume  # noqa: E402
from flexunet.report.dicom_seg import read_dicom_seg  # noqa: E402

from test_api import project  # noqa: F401,E402  (fixture)
from test_outputs import ThresholdPredictor, threshold_model  # noqa: F401,E402  (fixture)
from volume_helpers import synthetic_case, write_dicom_series  # noqa: E402

IRCADB_17 = Path(__file__).resolve().parents[2] / "shared" / "data" / "3Dircadb1" / "3Dircadb1.17" / "PATIENT_DICOM.zip"


def write_ct_series(folder: Path, hu: np.ndarray, spacing=(0.8, 0.7, 2.5), origin=(-100.0, -120.0, 50.0),
                    angle_deg: float = 0.0, frame_of_reference: bool = True) -> Path:
    """``hu`` (columns x, rows y, slices z) as a CT series with patient fields, written out of order:
    shuffled file names and Instance Numbers that run against the slice positions."""
    from pydicom.uid import generate_uid

    tags = {"PatientName": "Phantom^Liver", "PatientID": "FX-0042", "PatientBirthDate": "19600101",
            "PatientSex": "O", "StudyDate": "20240312", "StudyTime": "101500", "AccessionNumber": "A1",
            "StudyID": "1", "ReferringPhysicianName": "", "StudyDescription": "CT abdomen",
            "SeriesDescription": "portal venous", "SeriesNumber": 3}
    if frame_of_reference:
        tags["FrameOfReferenceUID"] = generate_uid()
    return write_dicom_series(folder, hu, spacing=spacing, origin=origin, angle_deg=angle_deg, shuffle_seed=7,
                              names=[f"slice_{n}" for n in range(hu.shape[2])], tags=tags,
                              number_against_position=True)


def _lps(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """LPS mm of voxel indices (N, 3) under a RAS affine."""
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    return ras * np.array([-1.0, -1.0, 1.0])


def check_seg(seg_path: Path, source: Path, labels: np.ndarray, affine: np.ndarray) -> None:
    """The SEG reads back (highdicom and pydicom) into ``labels``, each frame where the source slice lies."""
    import pydicom

    src = {}
    for f in (sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else []):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        src[ds.SOPInstanceUID] = ds
    seg = highdicom.seg.segread(seg_path)
    # codes: liver and neoplasm (of the liver), SNOMED CT
    codes = {d.SegmentNumber: d for d in seg.SegmentSequence}
    assert codes[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert codes[1].SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert codes[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert codes[2].AnatomicRegionSequence[0].CodeValue == "10200004"
    # pydicom alone, by each frame's referenced source instance
    back = read_dicom_seg(seg_path, source, affine, labels.shape)
    assert np.array_equal(back, labels)
    # highdicom: the frames of each source slice, in slice order
    order = sorted(src, key=lambda uid: float(np.dot(np.array(src[uid].ImagePositionPatient, float), np.cross(
        np.array(src[uid].ImageOrientationPatient[:3], float), np.array(src[uid].ImageOrientationPatient[3:], float)))))
    if src:
        px = seg.get_pixels_by_source_instance(order, combine_segments=True, skip_overlap_checks=True)
        assert np.array_equal(px.transpose(2, 1, 0), labels)
    # every frame lies on the source slice it references, at the position the labels' affine gives it
    ds = pydicom.dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert np.allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                       np.sqrt((affine[:3, :2] ** 2).sum(0))[::-1], atol=1e-5)
    rows = {}
    for item in ds.PerFrameFunctionalGroupsSequence:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        if src:
            assert np.allclose(ipp, [float(v) for v in src[ref].ImagePositionPatient], atol=1e-3)
        rows[ref] = ipp
    if src:
        for ref, ipp in rows.items():
            k = order.index(ref)
            assert np.allclose(ipp, _lps(affine, np.array([[0.0, 0.0, k]]))[0], atol=1e-3)


@pytest.mark.parametrize("angle", [0.0, 20.0])
def test_round_trip_of_a_series_whose_slices_arrive_out_of_order(project, tmp_path, angle):
    hu, _, _ = synthetic_case(0, shape=(40, 36, 12))
    dcm = write_ct_series(tmp_path / "ct", hu, angle_deg=angle)
    vp = VolumePredictor(project / "c.config", predictor=ThresholdPredictor())
    seg = vp.segment(dcm)
    assert (seg.labels == 1).any() and (seg.labels == 2).any()
    vol = read_volume(dcm)
    assert np.allclose(seg.affine, vol.affine)
    out = seg.save_dicom_seg(tmp_path / "case.seg.dcm")
    check_seg(out, dcm, seg.labels, seg.affine)
    import pydicom

    ds = pydicom.dcmread(out)
    first = pydicom.dcmread(next(dcm.iterdir()), stop_before_pixels=True)
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert str(ds.PatientName) == "Phantom^Liver" and ds.PatientID == "FX-0042"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID


def test_infer_volume_writes_nifti_and_dicom_seg_that_agree(project, threshold_model, tmp_path):
    hu, _, _ = synthetic_case(3, shape=(40, 36, 12))
    dcm = write_ct_series(tmp_path / "p7" / "ct", hu)
    out = tmp_path / "out"
    assert main(["--quiet", "infer-volume", str(project / "c.config"), str(dcm), "--output", str(out),
                 "--output-format", "nifti,dicom-seg", "--statistics", "--report"]) == 0
    nifti = nib.load(out / "ct.nii.gz")
    labels = np.asarray(nifti.dataobj)
    check_seg(out / "ct.seg.dcm", dcm, labels, nifti.affine)
    text = (out / "ct.html").read_text()
    assert "Phantom^Liver" in text and "FX-0042" in text and "2024-03-12" in text
    assert "centroid LPS" in text  # DICOM input: lesion centroids in DICOM patient coordinates
    # only the SEG when asked so
    assert main(["--quiet", "infer-volume", str(project / "c.config"), str(dcm), "--output", str(tmp_path / "o2"),
                 "--output-format", "dicom-seg"]) == 0
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["ct.seg.dcm"]


def test_a_series_without_frame_of_reference_and_an_empty_segmentation(project, tmp_path):
    hu, _, _ = synthetic_case(1, shape=(30, 28, 8))
    dcm = write_ct_series(tmp_path / "ct", hu, frame_of_reference=False)
    vp = VolumePredictor(project / "c.config", predictor=ThresholdPredictor())
    seg = vp.segment(dcm)
    with pytest.warns(UserWarning, match="no FrameOfReferenceUID"):
        out = seg.save_dicom_seg(tmp_path / "a.seg.dcm")
    check_seg(out, dcm, seg.labels, seg.affine)
    seg.labels[:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = seg.save_dicom_seg(tmp_path / "empty.seg.dcm")
    assert not read_dicom_seg(out, dcm, seg.affine, seg.labels.shape).any()


def test_dicom_seg_errors_name_the_file_and_what_was_expected(project, tmp_path):
    hu, _, affine = synthetic_case(1, shape=(30, 28, 8))
    vp = VolumePredictor(project / "c.config", predictor=ThresholdPredictor())
    seg = vp.segment(hu, affine=affine)
    with pytest.raises(DataError, match="needs a DICOM series as input"):
        seg.save_dicom_seg(tmp_path / "x.seg.dcm")
    dcm = write_ct_series(tmp_path / "ct", hu)
    seg = vp.segment(dcm)
    next(dcm.iterdir()).unlink()  # the series changed since it was read
    with pytest.raises(DataError) as err:
        seg.save_dicom_seg(tmp_path / "x.seg.dcm")
    assert str(dcm) in str(err.value) and "has 7 slices; expected the 8" in str(err.value)
    assert not list(tmp_path.glob("*.dcm")) and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.skipif(not IRCADB_17.is_file(), reason=f"{IRCADB_17} not found (../shared/data)")
def test_ircadb_17_dicom_seg_equals_the_nifti_output_voxel_for_voxel(project, threshold_model, tmp_path):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # IRCADb's series has no FrameOfReferenceUID: warned, derived
        assert main(["--quiet", "infer-volume", str(project / "c.config"), str(IRCADB_17), "--output", str(out),
                     "--output-format", "nifti,dicom-seg"]) == 0
    seconds = time.perf_counter() - t0
    nifti = nib.load(out / "3Dircadb1.17.nii.gz")
    labels = np.asarray(nifti.dataobj)
    assert labels.shape == (512, 512, 119) and (labels == 1).any() and (labels == 2).any()
    back = read_dicom_seg(out / "3Dircadb1.17.seg.dcm", IRCADB_17, nifti.affine, labels.shape)
    assert np.array_equal(back, labels)
    # world positions: each frame's ImagePositionPatient is the NIfTI affine's slice origin
    import pydicom

    ds = pydicom.dcmread(out / "3Dircadb1.17.seg.dcm")
    seg = highdicom.seg.segread(out / "3Dircadb1.17.seg.dcm")
    vol = seg.get_volume(combine_segments=True, skip_overlap_checks=True)
    # highdicom's volume: (slice, row, column) -> LPS; ours: (column, row, slice) -> RAS
    ijk = np.argwhere(labels == 2)[:: max(1, int((labels == 2).sum()) // 2000)]
    ours = _lps(nifti.affine, ijk.astype(float))
    theirs_idx = np.linalg.solve(vol.affine[:3, :3], (ours - vol.affine[:3, 3]).T).T  # (slice, row, col)
    assert np.allclose(theirs_idx, np.rint(theirs_idx), atol=1e-3)
    s, r, c = np.rint(theirs_idx).astype(int).T
    assert np.all(vol.array[s, r, c] == 2)
    print(f"IRCADb 17: {int((labels >= 1).sum())} labelled voxels, {len(ds.PerFrameFunctionalGroupsSequence)} SEG "
          f"frames, SEG equals NIfTI voxel for voxel; infer-volume with both outputs {seconds:.1f} s")
