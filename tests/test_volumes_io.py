"""Volume readers/writers (NIfTI, DICOM, MRC), geometry helpers and atomic writes."""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexunet.errors import DataError
from flexunet.io.atomic import atomic_save_bytes, atomic_save_text, atomic_temp_path, atomic_write, safe_child
from flexunet.io.volumes import (
    Volume,
    check_same_geometry,
    read_dicom_series,
    read_mrc,
    read_nifti,
    read_volume,
    resample_label_to,
    to_canonical,
    write_nifti,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IRCADB = SHARED_DATA / "3Dircadb1"


# --------------------------------------------------------------------------- synthetic DICOM


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine(spacing=(0.7, 0.8, 2.5), origin=(12.5, -40.0, 30.0), angles=(0.2, -0.1, 0.3)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rotation(*angles) @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def _ds(v: float) -> str:
    s = f"{v:.8g}"
    return "0" if s == "-0" else s


def dicom_slices(stored: np.ndarray, affine_ras: np.ndarray, *, slope=1.0, intercept=0.0,
                 series_uid=None, bits=16, signed=True) -> list[bytes]:
    """Encode ``stored[i, j, k]`` (column i, row j, slice k) as one DICOM file per slice.

    The geometry is the DICOM equivalent of the NIfTI ``affine_ras``.
    """
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    col_step, row_step = lps[:3, 0], lps[:3, 1]
    row_cos = col_step / np.linalg.norm(col_step)
    col_cos = row_step / np.linalg.norm(row_step)
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    ni, nj, nk = stored.shape
    out = []
    for k in range(nk):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = nj, ni
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = bits
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 1 if signed else 0
        ds.PixelSpacing = [_ds(np.linalg.norm(row_step)), _ds(np.linalg.norm(col_step))]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
        ds.ImagePositionPatient = [_ds(v) for v in (lps @ np.array([0, 0, k, 1.0]))[:3]]
        ds.SliceThickness = _ds(np.linalg.norm(lps[:3, 2]))
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        dtype = {(16, True): "<i2", (16, False): "<u2", (8, False): "u1"}[(bits, signed)]
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(dtype).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def write_series(folder: Path, blobs: list[bytes], names=None, perm=None) -> list[Path]:
    """Write slice k to ``names[perm[k]]`` (default image_<perm[k]>)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(blobs)
    perm = list(range(n)) if perm is None else list(perm)
    names = names or [f"image_{i}" for i in range(n)]
    paths = []
    for k, blob in enumerate(blobs):
        p = folder / names[perm[k]]
        p.write_bytes(blob)
        paths.append(p)
    return paths


def zip_folder(folder: Path, zip_path: Path, prefix: str | None = None) -> Path:
    prefix = folder.name if prefix is None else prefix
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{prefix}/{f.relative_to(folder).as_posix()}" if prefix else f.relative_to(folder).as_posix())
    return zip_path


STRING_SORT_TRAP = [3, 11, 0, 7, 12, 5, 1, 9, 2, 10, 6, 4, 8]  # slice k -> file image_<perm[k]>


@pytest.fixture(scope="module")
def series13():
    rng = np.random.default_rng(0)
    stored = rng.integers(-1000, 2000, size=(10, 9, 13)).astype(np.int16)
    aff = oblique_affine()
    return stored, aff, dicom_slices(stored, aff, slope=2.0, intercept=-1024.0)


def test_dicom_order_hu_and_affine_match_nibabel(series13, tmp_path):
    stored, aff, blobs = series13
    write_series(tmp_path / "ct", blobs, perm=STRING_SORT_TRAP)
    # string sort of the file names is not the slice order
    assert sorted(p.name for p in (tmp_path / "ct").iterdir())[:3] == ["image_0", "image_1", "image_10"]
    vol = read_dicom_series(tmp_path / "ct")
    hu = stored.astype(np.float32) * 2 - 1024
    assert vol.array.dtype == np.float32
    assert vol.array.shape == (10, 9, 13)
    np.testing.assert_array_equal(vol.array, hu)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-4)
    np.testing.assert_allclose(vol.spacing, (0.7, 0.8, 2.5), atol=1e-5)
    # the same data written as NIfTI by nibabel reads back identically
    nib.save(nib.Nifti1Image(hu, aff), tmp_path / "ref.nii.gz")
    ref = read_nifti(tmp_path / "ref.nii.gz")
    np.testing.assert_array_equal(ref.array, vol.array)
    np.testing.assert_allclose(ref.affine, vol.affine, atol=1e-4)
    check_same_geometry(ref, vol, "dicom vs nifti")
    assert "PixelData" not in vol.header


def test_dicom_reversed_slice_axis_same_world_geometry(tmp_path):
    """A series whose NIfTI k axis points against the slice normal: same voxels in the world."""
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 1000, size=(6, 5, 7)).astype(np.int16)
    aff = oblique_affine(angles=(0.0, 0.0, 0.0))
    aff[:3, 2] *= -1  # k runs towards the feet
    write_series(tmp_path / "ct", dicom_slices(stored, aff))
    vol = read_dicom_series(tmp_path / "ct")
    a, _ = to_canonical(vol)
    b, _ = to_canonical(Volume(stored.astype(np.float32), aff))
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)


def test_dicom_zip_and_single_file_and_dispatch(series13, tmp_path):
    stored, aff, blobs = series13
    write_series(tmp_path / "PATIENT_DICOM", blobs, perm=STRING_SORT_TRAP)
    z = zip_folder(tmp_path / "PATIENT_DICOM", tmp_path / "PATIENT_DICOM.zip")
    a = read_volume(tmp_path / "PATIENT_DICOM")
    b = read_volume(z)
    c = read_volume(tmp_path / "PATIENT_DICOM" / "image_4")  # a file with the DICM preamble
    for v in (b, c):
        np.testing.assert_array_equal(a.array, v.array)
        np.testing.assert_allclose(a.affine, v.affine)
    # recursive folder: series inside a sub-folder, junk files beside it
    nested = tmp_path / "nested"
    write_series(nested / "a" / "b", blobs)
    (nested / "README.txt").write_text("not dicom")
    (nested / "a" / "._image_0").write_bytes(b"\x00\x05\x16\x07 mac junk")
    np.testing.assert_array_equal(read_volume(nested).array, a.array)


def test_dicom_label_keeps_integers(tmp_path):
    mask = np.zeros((8, 6, 5), np.uint8)
    mask[2:5, 1:4, 1:3] = 255
    write_series(tmp_path / "liver", dicom_slices(mask, np.diag([0.5, 0.5, 2.0, 1.0]), bits=8, signed=False))
    vol = read_dicom_series(tmp_path / "liver", label=True)
    assert vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array, mask)


def test_dicom_duplicate_position(series13, tmp_path):
    _, _, blobs = series13
    paths = write_series(tmp_path / "ct", blobs, perm=STRING_SORT_TRAP)
    shutil.copy(paths[5], tmp_path / "ct" / "image_13")
    with pytest.raises(DataError, match=r"share position .*expected one slice per position") as ei:
        read_dicom_series(tmp_path / "ct")
    assert "\n" not in str(ei.value)


def test_dicom_missing_slice(series13, tmp_path):
    _, _, blobs = series13
    paths = write_series(tmp_path / "ct", blobs, perm=STRING_SORT_TRAP)
    paths[6].unlink()  # slice 6 of 13
    with pytest.raises(DataError, match=r"gap of 5\.000 mm .*slice is missing") as ei:
        read_dicom_series(tmp_path / "ct")
    assert str(tmp_path / "ct") in str(ei.value)


def test_dicom_two_series_mixed(series13, tmp_path):
    stored, aff, blobs = series13
    other = dicom_slices(stored[:, :, :4], aff, series_uid="1.2.3.4.5")
    write_series(tmp_path / "ct", blobs)
    write_series(tmp_path / "ct", other, names=[f"other_{i}" for i in range(4)])
    with pytest.raises(DataError, match=r"holds 2 DICOM series .*1\.2\.3\.4\.5: 4 slices.*expected one series") as ei:
        read_dicom_series(tmp_path / "ct")
    assert str(tmp_path / "ct") in str(ei.value) and "13 slices" in str(ei.value)
    # a chosen series can still be read
    vol = read_dicom_series(tmp_path / "ct", series_uid="1.2.3.4.5")
    assert vol.shape == (10, 9, 4)


def test_dicom_missing_tag_and_empty_folder(series13, tmp_path):
    import pydicom

    _, _, blobs = series13
    paths = write_series(tmp_path / "ct", blobs)
    ds = pydicom.dcmread(paths[3])
    del ds.ImagePositionPatient
    ds.save_as(paths[3])
    with pytest.raises(DataError, match=r"image_3: lacks DICOM tag ImagePositionPatient"):
        read_dicom_series(tmp_path / "ct")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="holds no DICOM image files"):
        read_dicom_series(tmp_path / "empty")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(perm=st.permutations(list(range(13))))
def test_dicom_any_file_order_gives_same_volume(series13, perm):
    stored, aff, blobs = series13
    with tempfile.TemporaryDirectory() as d:
        write_series(Path(d), blobs, perm=perm)
        vol = read_dicom_series(d)
    np.testing.assert_array_equal(vol.array, stored.astype(np.float32) * 2 - 1024)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-4)


# --------------------------------------------------------------------------- NIfTI / dispatch


def test_nan_voxels_rejected(tmp_path):
    arr = np.zeros((4, 4, 3), np.float32)
    arr[0, 0, 0] = np.nan
    arr[1, 2, 1] = np.inf
    arr[3, 3, 2] = -np.inf
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "bad.nii.gz")
    with pytest.raises(DataError, match=r"bad\.nii\.gz: holds 3 NaN/Inf voxels; expected finite HU values"):
        read_volume(tmp_path / "bad.nii.gz")


def test_read_nifti_scaling_label_and_errors(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(raw, np.diag([2.0, 3.0, 4.0, 1.0]))
    img.header.set_slope_inter(0.5, -10)
    nib.save(img, tmp_path / "s.nii")
    vol = read_nifti(tmp_path / "s.nii")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, raw * 0.5 - 10)
    assert vol.spacing == (2.0, 3.0, 4.0)
    lab = nib.Nifti1Image(np.array([[[0.0, 1.0], [2.0, 1.0]]], np.float32), np.eye(4))
    nib.save(lab, tmp_path / "l.nii.gz")
    lv = read_nifti(tmp_path / "l.nii.gz", label=True)
    assert np.issubdtype(lv.array.dtype, np.integer) and lv.array.max() == 2
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(DataError, match=r"broken\.nii\.gz: cannot read as NIfTI"):
        read_volume(tmp_path / "broken.nii.gz")
    (tmp_path / "x.xyz").write_text("?")
    with pytest.raises(DataError, match="unknown volume format"):
        read_volume(tmp_path / "x.xyz")
    with pytest.raises(DataError, match="not found"):
        read_volume(tmp_path / "missing.nii.gz")


def test_write_nifti_preserves_affine_header_and_is_atomic(tmp_path):
    aff = oblique_affine()
    hdr = nib.Nifti1Header()
    hdr["descrip"] = b"flexunet test"
    arr = np.random.default_rng(0).normal(0, 100, (5, 6, 7)).astype(np.float32)
    out = write_nifti(Volume(arr, aff, hdr), tmp_path / "a.nii.gz")
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), aff, atol=1e-4)
    np.testing.assert_allclose(img.get_sform(), aff, atol=1e-5)
    assert int(img.header["qform_code"]) > 0 and int(img.header["sform_code"]) > 0
    assert img.header["descrip"].tobytes().rstrip(b"\0") == b"flexunet test"
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), arr)
    # array + explicit dtype; header from a read NIfTI is kept
    lab = (arr > 0).astype(np.int64)
    write_nifti(lab, tmp_path / "l.nii.gz", affine=aff, header=img.header, dtype=np.uint8)
    back = read_nifti(tmp_path / "l.nii.gz", label=True)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, lab)
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz", "l.nii.gz"]  # no temp files left
    with pytest.raises(DataError, match="must end in .nii or .nii.gz"):
        write_nifti(lab, tmp_path / "l.png", affine=aff)


def test_write_nifti_failure_keeps_old_target(tmp_path, monkeypatch):
    target = tmp_path / "keep.nii.gz"
    write_nifti(np.ones((2, 2, 2), np.uint8), target, affine=np.eye(4))
    before = target.read_bytes()

    def boom(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(np.zeros((2, 2, 2), np.uint8), target, affine=np.eye(4))
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.nii.gz"]


def test_check_same_geometry():
    a = Volume(np.zeros((4, 5, 6), np.float32), np.eye(4), source="img.nii.gz")
    check_same_geometry(a, Volume(np.zeros((4, 5, 6), np.uint8), np.eye(4) + 1e-4, source="lab.nii.gz"), "c1")
    with pytest.raises(DataError, match=r"c1: image img\.nii\.gz has shape \(4, 5, 6\) but label lab\.nii\.gz has \(4, 5, 7\)"):
        check_same_geometry(a, Volume(np.zeros((4, 5, 7), np.uint8), np.eye(4), source="lab.nii.gz"), "c1")
    aff = np.eye(4)
    aff[1, 3] = 2.5
    with pytest.raises(DataError, match=r"c1: affines differ at \[1,3\] \(0 vs 2\.5\)") as ei:
        check_same_geometry(a, Volume(np.zeros((4, 5, 6), np.uint8), aff, source="lab.nii.gz"), "c1")
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------- orientation


AXCODE_CASES = [
    np.diag([1.0, 1.0, 1.0, 1.0]),
    np.diag([-0.57, -0.57, 1.6, 1.0]),  # DICOM-like LPS storage
    np.diag([-0.57, 0.57, 1.6, 1.0]),
    np.array([[0, 0, -2.0, 5], [1.5, 0, 0, -3], [0, -1.0, 0, 7], [0, 0, 0, 1]]),
    oblique_affine(angles=(0.4, 0.1, 2.0)),
]


@pytest.mark.parametrize("aff", AXCODE_CASES)
def test_to_canonical_round_trip(aff):
    arr = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    vol = Volume(arr, aff)
    can, undo = to_canonical(vol)
    assert nib.aff2axcodes(can.affine) == ("R", "A", "S")
    ref = nib.as_closest_canonical(nib.Nifti1Image(arr, aff))
    np.testing.assert_array_equal(can.array, np.asanyarray(ref.dataobj))
    np.testing.assert_allclose(can.affine, ref.affine, atol=1e-6)
    np.testing.assert_array_equal(undo(can.array), arr)
    np.testing.assert_array_equal(undo(undo.to_canonical(arr)), arr)
    back = undo.undo_volume(can)
    np.testing.assert_allclose(back.affine, aff)
    # a prediction made in canonical space lands on the same world voxels
    pred = (can.array > 0).astype(np.uint8)
    np.testing.assert_array_equal(undo(pred), (arr > 0).astype(np.uint8))
    # trailing channel axis is carried along
    stacked = np.stack([can.array, -can.array], axis=-1)
    np.testing.assert_array_equal(undo(stacked)[..., 1], -arr)


def test_resample_label_flipped_axis_and_general():
    ct = Volume(np.zeros((6, 5, 4), np.float32), np.diag([-0.5, -0.5, 2.0, 1.0]))
    lab = np.zeros((6, 5, 4), np.uint8)
    lab[1, 0, 2] = 1  # world x=-0.5, y=0 (in the CT grid: j = 0)
    # the label file stores y the other way: j' = 4 - j
    laff = np.diag([-0.5, 0.5, 2.0, 1.0])
    laff[1, 3] = -2.0
    stored = lab[:, ::-1, :]
    out, note = resample_label_to(Volume(stored, laff), ct)
    assert "exact" in note
    np.testing.assert_array_equal(out, lab)
    # a shifted grid (half a voxel off) takes the general nearest-neighbour path
    saff = ct.affine.copy()
    saff[0, 3] += 0.2
    out2, note2 = resample_label_to(Volume(lab, saff), ct)
    assert "nearest" in note2 and out2.shape == lab.shape


# --------------------------------------------------------------------------- MRC


def test_read_mrc_axis_order_and_spacing(tmp_path):
    import mrcfile

    zyx = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # (z, y, x)
    with mrcfile.new(tmp_path / "a.mrc") as m:
        m.set_data(zyx)
    vol = read_mrc(tmp_path / "a.mrc")
    assert vol.shape == (6, 5, 4)
    assert vol.array[5, 4, 3] == zyx[3, 4, 5]
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert read_mrc(tmp_path / "a.mrc", spacing=(0.8, 0.8, 2.0)).spacing == (0.8, 0.8, 2.0)
    with mrcfile.new(tmp_path / "b.mrc") as m:
        m.set_data(zyx)
        m.voxel_size = (0.5, 0.6, 0.7)
    v2 = read_volume(tmp_path / "b.mrc", spacing=3.0)
    np.testing.assert_allclose(v2.spacing, (0.5, 0.6, 0.7), rtol=1e-6)
    assert v2.array.dtype == np.float32
    with mrcfile.new(tmp_path / "lab.mrc") as m:
        m.set_data(np.array(zyx % 3, dtype=np.uint16))
    assert read_mrc(tmp_path / "lab.mrc", label=True).array.dtype == np.uint16


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_crash_keeps_target(tmp_path):
    target = tmp_path / "manifest.csv"
    atomic_save_text(target, "old\n")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_write(target, "w") as fh:
            fh.write("new partial content")
            raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["manifest.csv"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_temp_path(tmp_path / "x.nii.gz") as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["manifest.csv"]
    atomic_save_bytes(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert os.listdir(tmp_path) == ["manifest.csv"]
    assert (target.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


@pytest.mark.parametrize("bad", ["../evil", "..", ".", "", "a/b", "/etc/passwd", "..\\evil", "C:evil", "x\0y"])
def test_safe_child_rejects(tmp_path, bad):
    with pytest.raises(DataError, match="expected a single plain file name"):
        safe_child(tmp_path, bad)


def test_safe_child_accepts_and_blocks_symlink_escape(tmp_path):
    assert safe_child(tmp_path, "case_1") == tmp_path / "case_1"
    assert safe_child(tmp_path, "volume-3.nii.gz") == tmp_path / "volume-3.nii.gz"
    outside = tmp_path.parent / (tmp_path.name + "_outside")
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(DataError, match="outside the output folder"):
        safe_child(tmp_path, "link")


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (IRCADB / "3Dircadb1.1" / "PATIENT_DICOM.zip").is_file(),
                    reason=f"real IRCADb data not found at {IRCADB}")
def test_real_ircadb_patient1_zip_has_129_slices():
    vol = read_dicom_series(IRCADB / "3Dircadb1.1" / "PATIENT_DICOM.zip")
    assert vol.shape == (512, 512, 129)
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.spacing, (0.57, 0.57, 1.6), atol=1e-4)
    assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")
    assert -1100 < float(vol.array.min()) and float(vol.array.max()) < 4000
