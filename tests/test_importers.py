"""Data-set importers: LiTS/Kaggle, MSD, 3D-IRCADb, MRC -> case folders + manifest.csv."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from flexunet.data.importers import MANIFEST_COLUMNS, import_dataset, read_manifest
from flexunet.errors import DataError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_volumes_io import dicom_slices, write_series, zip_folder  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IRCADB = SHARED_DATA / "3Dircadb1"
LITS_AFFINE = np.array([[-0.7, 0, 0, 90.0], [0, -0.7, 0, 100.0], [0, 0, 2.5, -300.0], [0, 0, 0, 1]])


def synthetic_case(seed: int, shape=(16, 16, 8)):
    rng = np.random.default_rng(seed)
    img = rng.integers(-1000, 400, size=shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[4:12, 4:12, 2:6] = 1
    lab[6:8, 6:9, 3:5] = 2
    lab[0, 0, seed % shape[2]] = 2
    return img, lab


def save_nii(arr, path: Path, affine=LITS_AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), path)


def rows_by_id(manifest: Path) -> dict[str, dict[str, str]]:
    return {r["case_id"]: r for r in read_manifest(manifest)}


def check_case(dst: Path, row: dict, img: np.ndarray, lab: np.ndarray, affine: np.ndarray):
    image = nib.load(dst / row["image"])
    label = nib.load(dst / row["label"])
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), img)
    np.testing.assert_array_equal(np.asanyarray(label.dataobj), lab)
    assert label.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    np.testing.assert_allclose(label.affine, affine, atol=1e-5)
    assert row["n_liver"] == str(int((lab == 1).sum()))
    assert row["n_tumour"] == str(int((lab == 2).sum()))
    assert row["shape"] == "x".join(map(str, img.shape))


# --------------------------------------------------------------------------- LiTS / Kaggle


@pytest.mark.parametrize("fmt", ["lits", "kaggle"])
def test_import_lits_layout(tmp_path, fmt):
    src = tmp_path / "lits"
    cases = {}
    for n, (vdir, ext) in {0: ("volume_pt1", ".nii"), 7: ("volume_pt1", ".nii.gz"), 12: ("volume_pt2", ".nii.gz")}.items():
        img, lab = synthetic_case(n)
        save_nii(img, src / vdir / f"volume-{n}{ext}")
        save_nii(lab, src / "segmentations" / f"segmentation-{n}{ext}")
        cases[n] = (img, lab)
    save_nii(synthetic_case(99)[0], src / "test" / "test-volume-99.nii")  # LiTS test set: no label, ignored
    dst = tmp_path / "out"
    manifest = import_dataset(fmt, src, dst, progress=False)
    assert manifest == dst / "manifest.csv"
    rows = rows_by_id(manifest)
    assert list(rows) == ["lits_0", "lits_7", "lits_12"]
    with open(manifest, newline="") as fh:
        assert next(csv.reader(fh)) == MANIFEST_COLUMNS
    for n, (img, lab) in cases.items():
        row = rows[f"lits_{n}"]
        assert row["image"] == f"lits_{n}/image.nii.gz" and row["label"] == f"lits_{n}/label.nii.gz"
        assert row["spacing"] == "0.7x0.7x2.5"
        check_case(dst, row, img, lab, LITS_AFFINE)
    assert sorted(p.name for p in dst.iterdir()) == ["lits_0", "lits_12", "lits_7", "manifest.csv"]


def test_import_lits_errors(tmp_path):
    src = tmp_path / "lits"
    img, lab = synthetic_case(1)
    save_nii(img, src / "volume-1.nii")
    with pytest.raises(DataError, match=r"volume-1\.nii: has no segmentation-1\.nii\[\.gz\]"):
        import_dataset("lits", src, tmp_path / "o1", progress=False)
    bad = lab.copy()
    bad[0, 0, 0] = 3
    save_nii(bad, src / "segmentation-1.nii")
    with pytest.raises(DataError, match=r"segmentation-1\.nii: holds label values 3; expected only 0"):
        import_dataset("lits", src, tmp_path / "o2", progress=False)
    shifted = LITS_AFFINE.copy()
    shifted[2, 3] += 5
    save_nii(lab, src / "segmentation-1.nii", affine=shifted)
    with pytest.raises(DataError, match=r"case lits_1 .*affines differ at \[2,3\]"):
        import_dataset("lits", src, tmp_path / "o3", progress=False)
    save_nii(lab[:, :, :7], src / "segmentation-1.nii")
    with pytest.raises(DataError, match=r"shape \(16, 16, 8\) but label .* has \(16, 16, 7\)"):
        import_dataset("lits", src, tmp_path / "o4", progress=False)
    with pytest.raises(DataError, match="unknown; expected one of lits, kaggle, msd, ircadb, mrc"):
        import_dataset("nope", src, tmp_path / "o5", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no volume-N"):
        import_dataset("lits", tmp_path / "empty", tmp_path / "o6", progress=False)


def test_import_keeps_done_cases_on_failure_and_refuses_foreign_manifest(tmp_path):
    src = tmp_path / "lits"
    img, lab = synthetic_case(1)
    save_nii(img, src / "volume-1.nii.gz")
    save_nii(lab, src / "segmentation-1.nii.gz")
    bad = lab.copy()
    bad[1, 1, 1] = 7
    save_nii(img, src / "volume-2.nii.gz")
    save_nii(bad, src / "segmentation-2.nii.gz")
    dst = tmp_path / "out"
    with pytest.raises(DataError, match=r"segmentation-2\.nii\.gz: holds label values 7"):
        import_dataset("lits", src, dst, progress=False)
    assert list(rows_by_id(dst / "manifest.csv")) == ["lits_1"]
    assert not (dst / "lits_2").exists()
    (dst / "manifest.csv").write_text("name,path\nx,y\n")
    with pytest.raises(DataError, match=r"manifest\.csv: columns \['name', 'path'\]; expected \['case_id'"):
        import_dataset("lits", src, dst, progress=False)
    assert (dst / "manifest.csv").read_text() == "name,path\nx,y\n"


# --------------------------------------------------------------------------- MSD


def test_import_msd_layout_and_manifest_merge(tmp_path):
    task = tmp_path / "decathlon" / "Task03_Liver"
    cases = {}
    for n in (3, 10):
        img, lab = synthetic_case(n)
        save_nii(img, task / "imagesTr" / f"liver_{n}.nii.gz")
        save_nii(lab, task / "labelsTr" / f"liver_{n}.nii.gz")
        (task / "imagesTr" / f"._liver_{n}.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
        (task / "labelsTr" / f"._liver_{n}.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
        cases[n] = (img, lab)
    save_nii(synthetic_case(5)[0], task / "imagesTs" / "liver_5.nii.gz")
    (task / "dataset.json").write_text("{}")
    dst = tmp_path / "out"
    manifest = import_dataset("msd", tmp_path / "decathlon", dst, progress=False)
    rows = rows_by_id(manifest)
    assert list(rows) == ["msd_3", "msd_10"]
    for n, (img, lab) in cases.items():
        check_case(dst, rows[f"msd_{n}"], img, lab, LITS_AFFINE)
    # importing another source into the same folder keeps the MSD rows
    img, lab = synthetic_case(4)
    save_nii(img, tmp_path / "lits" / "volume-4.nii.gz")
    save_nii(lab, tmp_path / "lits" / "segmentation-4.nii.gz")
    import_dataset("lits", tmp_path / "lits", dst, progress=False)
    assert list(rows_by_id(manifest)) == ["lits_4", "msd_3", "msd_10"]
    # the task folder itself is accepted too, and re-import replaces rows
    import_dataset("msd", task, dst, progress=False)
    assert list(rows_by_id(manifest)) == ["lits_4", "msd_3", "msd_10"]


def test_import_msd_missing_label(tmp_path):
    task = tmp_path / "Task03_Liver"
    img, _ = synthetic_case(0)
    save_nii(img, task / "imagesTr" / "liver_0.nii.gz")
    (task / "labelsTr").mkdir()
    with pytest.raises(DataError, match=r"liver_0\.nii\.gz: has no .*labelsTr/liver_0\.nii\.gz"):
        import_dataset("msd", task, tmp_path / "out", progress=False)


# --------------------------------------------------------------------------- IRCADb (synthetic)


IRCAD_AFFINE = np.diag([-0.75, -0.75, 1.6, 1.0])  # DICOM-like storage: IOP 1,0,0,0,1,0 at the origin


def synthetic_ircadb_patient(root: Path, number: int, zipped: bool, tumour_names=("livertumor01", "LiverTumor2")):
    shape = (16, 14, 9)
    rng = np.random.default_rng(number)
    ct = rng.integers(-200, 300, size=shape).astype(np.int16)
    liver = np.zeros(shape, np.uint8)
    liver[3:12, 2:10, 1:8] = 255
    t1 = np.zeros(shape, np.uint8)
    t1[4:6, 3:5, 2:4] = 255
    t2 = np.zeros(shape, np.uint8)
    t2[9:11, 7:9, 5:7] = 255
    t2[13, 12, 8] = 255  # a tumour voxel outside the liver mask
    bone = np.zeros(shape, np.uint8)
    bone[0:2, :, :] = 255
    patient = root / f"3Dircadb1.{number}"
    perm = [3, 8, 0, 5, 1, 7, 2, 6, 4]
    write_series(patient / "PATIENT_DICOM", dicom_slices(ct, IRCAD_AFFINE, slope=1, intercept=-1024), perm=perm)
    masks = patient / "MASKS_DICOM"
    for name, arr in [("liver", liver), (tumour_names[0], t1), (tumour_names[1], t2), ("bone", bone)]:
        write_series(masks / name, dicom_slices(arr, IRCAD_AFFINE, bits=8, signed=False), perm=perm)
    if zipped:
        for part in ("PATIENT_DICOM", "MASKS_DICOM"):
            zip_folder(patient / part, patient / f"{part}.zip")
            shutil.rmtree(patient / part)
    expected = np.zeros(shape, np.uint8)
    expected[liver > 0] = 1
    expected[(t1 > 0) | (t2 > 0)] = 2
    return patient, ct.astype(np.float32) - 1024, expected


@pytest.mark.parametrize("zipped", [False, True])
def test_import_ircadb_masks(tmp_path, zipped):
    patient, hu, expected = synthetic_ircadb_patient(tmp_path / "3Dircadb1", 4, zipped)
    dst = tmp_path / "out"
    rows = rows_by_id(import_dataset("ircadb", patient, dst, progress=False))
    row = rows["ircadb_4"]
    check_case(dst, row, hu, expected, IRCAD_AFFINE)
    assert ("liver tumour taken: LiverTumor2 [9 voxels, 89% inside the liver], "
            "livertumor01 [8 voxels, 100% inside the liver]") in row["notes"]
    assert "other structures not used: bone" in row["notes"]
    assert "1 voxels of the taken tumour masks lie outside the liver mask (labelled tumour)" in row["notes"]
    assert row["source"] == str(patient)


def test_import_ircadb_several_patients_and_missing_liver(tmp_path):
    root = tmp_path / "3Dircadb1"
    synthetic_ircadb_patient(root, 2, zipped=True)
    synthetic_ircadb_patient(root, 11, zipped=False)
    rows = rows_by_id(import_dataset("ircadb", root, tmp_path / "out", progress=False))
    assert list(rows) == ["ircadb_2", "ircadb_11"]
    assert rows["ircadb_2"]["n_tumour"] == rows["ircadb_11"]["n_tumour"] != "0"
    bad, _, _ = synthetic_ircadb_patient(tmp_path / "bad", 3, zipped=False)
    shutil.copytree(bad / "MASKS_DICOM" / "bone", bad / "MASKS_DICOM" / "liverkyst")
    row = rows_by_id(import_dataset("ircadb", bad, tmp_path / "out1", progress=False))["ircadb_3"]
    assert "cysts, not tumours (stay liver): liverkyst" in row["notes"]
    shutil.rmtree(bad / "MASKS_DICOM" / "liverkyst")
    shutil.rmtree(bad / "MASKS_DICOM" / "liver")
    with pytest.raises(DataError, match=r"MASKS_DICOM: has no 'liver' structure \(found LiverTumor2, bone, livertumor01\)"):
        import_dataset("ircadb", bad, tmp_path / "out2", progress=False)


def ircadb_patient_with_structures(patient: Path, structures: dict[str, np.ndarray], shape=(16, 14, 9)):
    """An IRCADb patient folder: random CT + MASKS_DICOM.zip with one 0/255 series per structure."""
    ct = np.random.default_rng(0).integers(-200, 300, size=shape).astype(np.int16)
    perm = [3, 8, 0, 5, 1, 7, 2, 6, 4]
    write_series(patient / "PATIENT_DICOM", dicom_slices(ct, IRCAD_AFFINE, slope=1, intercept=-1024), perm=perm)
    masks = patient / "MASKS_DICOM"
    for name, arr in structures.items():
        write_series(masks / name, dicom_slices(arr, IRCAD_AFFINE, bits=8, signed=False), perm=perm)
    zip_folder(masks, patient / "MASKS_DICOM.zip")
    shutil.rmtree(masks)
    return patient


def test_import_ircadb_takes_tumours_by_overlap_with_the_liver_not_by_name(tmp_path, capsys):
    """A 'tumor' beside the liver (another organ's, as in IRCADb patient 7) is left out; a tumour inside
    the liver is taken whatever its name; the 50% threshold decides a structure half inside."""
    from flexunet.cli import main

    shape = (16, 14, 9)
    s = {name: np.zeros(shape, np.uint8) for name in
         ("liver", "tumor", "livertumour2", "Lesion_3", "metastasis4", "liverkyst", "spleen", "livertumor5")}
    s["liver"][2:10, 2:10, 1:8] = 255
    s["tumor"][10:15, 2:10, 1:8] = 255       # beside the liver: 280 voxels, 8 of them inside
    s["tumor"][9, 2:10, 1] = 255
    s["livertumour2"][4:6, 4:6, 2:4] = 255   # wholly inside
    s["Lesion_3"][8:12, 7:9, 5:7] = 255      # 8 of 16 inside: exactly 50%, taken
    s["metastasis4"][9:12, 3:5, 5:7] = 255   # 4 of 12 inside: 33%, left out
    s["liverkyst"][3, 8, 6] = 255            # a cyst: stays liver
    s["spleen"][12:15, 11:14, 0:3] = 255     # not tumour-named: never read as tumour
    # livertumor5 left empty
    patient = ircadb_patient_with_structures(tmp_path / "3Dircadb1.7", s, shape)
    dst = tmp_path / "out"
    assert main(["import", "ircadb", str(patient), str(dst)]) == 0
    row = rows_by_id(dst / "manifest.csv")["ircadb_7"]
    liver, taken = s["liver"] > 0, (s["livertumour2"] > 0) | (s["Lesion_3"] > 0)
    expected = liver.astype(np.uint8)
    expected[taken] = 2
    label = np.asanyarray(nib.load(dst / row["label"]).dataobj)
    np.testing.assert_array_equal(label, expected)
    assert (row["n_liver"], row["n_tumour"]) == (str(int((expected == 1).sum())), str(int(taken.sum())))
    notes = row["notes"].split("; ")
    assert notes[0] == ("liver tumour taken: Lesion_3 [16 voxels, 50% inside the liver], "
                        "livertumour2 [8 voxels, 100% inside the liver]")
    assert notes[1] == ("tumour-named structures left out: "
                        "livertumor5 [empty mask], "
                        "metastasis4 [12 voxels, 4 (33%) inside the liver, below the 50% a liver tumour needs], "
                        "tumor [288 voxels, 8 (3%) inside the liver, below the 50% a liver tumour needs]")
    assert notes[2] == "cysts, not tumours (stay liver): liverkyst"
    assert notes[3] == "other structures not used: spleen"
    assert notes[4] == "8 voxels of the taken tumour masks lie outside the liver mask (labelled tumour)"
    err = capsys.readouterr().err
    for note in notes:
        assert f"\n    {note}\n" in err, err


def test_import_ircadb_refuses_a_mask_that_is_not_binary(tmp_path):
    shape = (16, 14, 9)
    liver = np.zeros(shape, np.uint8)
    liver[2:10, 2:10, 1:8] = 255
    tumour = np.zeros(shape, np.uint8)
    tumour[4:6, 4:6, 2:4] = 255
    tumour[5, 5, 3] = 7
    patient = ircadb_patient_with_structures(tmp_path / "3Dircadb1.5", {"liver": liver, "livertumor1": tumour})
    with pytest.raises(DataError, match=r"MASKS_DICOM\.zip::MASKS_DICOM/livertumor1: holds values 7; "
                                        r"expected a binary mask \(0/255 or 0/1\)$"):
        import_dataset("ircadb", patient, tmp_path / "out", progress=False)


def test_import_ircadb_liver_label_nifti_aligned_by_geometry(tmp_path):
    """Patient-1 style: liver_label.nii.gz stored with y flipped against the DICOM rows."""
    patient, hu, expected = synthetic_ircadb_patient(tmp_path, 1, zipped=True)
    (patient / "MASKS_DICOM.zip").unlink()
    liver = (expected > 0).astype(np.uint8)
    liver[3, 2, 1] = 0  # break the symmetry so a wrong flip cannot pass
    ny = liver.shape[1]
    laff = np.diag([-0.75, 0.75, 1.6, 1.0])
    laff[1, 3] = -0.75 * (ny - 1)
    save_nii(liver[:, ::-1, :].copy(), patient / "liver_label.nii.gz", affine=laff)
    dst = tmp_path / "out"
    row = rows_by_id(import_dataset("ircadb", patient, dst, progress=False))["ircadb_1"]
    check_case(dst, row, hu, liver, IRCAD_AFFINE)
    assert "exact" in row["notes"] and row["n_tumour"] == "0"


# --------------------------------------------------------------------------- MRC


def test_import_mrc_pair(tmp_path):
    import mrcfile

    img, lab = synthetic_case(117)
    src = tmp_path / "data"
    src.mkdir()
    with mrcfile.new(src / "img_117.mrc") as m:
        m.set_data(np.ascontiguousarray(img.astype(np.float32).transpose(2, 1, 0)))
    with mrcfile.new(src / "lab_117.mrc") as m:
        m.set_data(np.ascontiguousarray(lab.astype(np.uint16).transpose(2, 1, 0)))
    dst = tmp_path / "out"
    row = rows_by_id(import_dataset("mrc", src, dst, progress=False))["mrc_117"]
    check_case(dst, row, img, lab, np.eye(4))
    assert "1 mm assumed" in row["notes"]
    row = rows_by_id(import_dataset("mrc", src, dst, progress=False, mrc_spacing=(0.8, 0.8, 2.0)))["mrc_117"]
    assert row["spacing"] == "0.8x0.8x2"


@pytest.mark.slow
def test_import_mrc_lits117_from_pypi_wheel(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         "liver-ct-segmentation-package==1.6.0", "-d", str(tmp_path / "wheel")],
        capture_output=True, text=True, timeout=300,
    )
    wheels = list((tmp_path / "wheel").glob("*.whl")) if proc.returncode == 0 else []
    if not wheels:
        pytest.skip(f"pip download of liver-ct-segmentation-package failed (offline?): {proc.stderr.strip()[-200:]}")
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(tmp_path / "unzipped")
    data = tmp_path / "unzipped" / "liver_ct_segmentation_package" / "data"
    dst = tmp_path / "out"
    row = rows_by_id(import_dataset("mrc", data, dst, progress=False))["mrc_117"]
    assert row["shape"] == "128x128x128"
    label = np.asanyarray(nib.load(dst / row["label"]).dataobj)
    # the data README's 1,481,801 / 485,268 / 130,083 are the counts of labels 0 / 1 / 2
    assert np.bincount(label.ravel(), minlength=3).tolist() == [1_481_801, 485_268, 130_083]
    assert (row["n_liver"], row["n_tumour"]) == ("485268", "130083")
    image = nib.load(dst / row["image"]).get_fdata(dtype=np.float32)
    assert image.min() == pytest.approx(-1063.25) and image.max() == pytest.approx(1877.25)


# --------------------------------------------------------------------------- real IRCADb data


needs_ircadb = pytest.mark.skipif(not IRCADB.is_dir(), reason=f"real IRCADb data not found at {IRCADB}")


#: voxel counts of label 1 (liver) and label 2 (tumour) given in ../shared/data/README.md
REAL_COUNTS = {1: (2_650_863, 214_268), 7: (1_461_944, 0), 17: (1_920_507, 185_990)}


def real_patient(n: int) -> Path:
    patient = IRCADB / f"3Dircadb1.{n}"
    if not (patient / "MASKS_DICOM.zip").is_file():
        pytest.skip(f"real IRCADb patient {n} not found at {patient}")
    return patient


@needs_ircadb
@pytest.mark.parametrize("n", sorted(REAL_COUNTS))
def test_real_ircadb_masks_label_counts(n):
    """Fast: the label built from MASKS_DICOM alone (the CT is not read; the liver mask gives the grid)."""
    from flexunet.data.importers import _ircadb_masks_label
    from flexunet.io.volumes import read_dicom_series

    masks = real_patient(n) / "MASKS_DICOM.zip"
    grid = read_dicom_series(masks, within="MASKS_DICOM/liver", label=True)
    notes: list[str] = []
    label = _ircadb_masks_label(masks, grid, notes)
    assert (int((label == 1).sum()), int((label == 2).sum())) == REAL_COUNTS[n]
    taken = notes[0]
    if n == 7:
        assert taken == "liver tumour taken: none"
        assert notes[1] == ("tumour-named structures left out: tumor [683556 voxels, 230 (0.03%) inside the liver, "
                            "below the 50% a liver tumour needs]")
    elif n == 17:
        assert taken == ("liver tumour taken: livertumor1 [96961 voxels, 100% inside the liver], "
                         "livertumor2 [89029 voxels, 100% inside the liver]")
    else:
        assert taken.startswith("liver tumour taken: livertumor01 [162337 voxels, 100% inside the liver], ")
        assert taken.count("100% inside the liver") == 7 and "livertumor07" in taken
        assert "cysts, not tumours (stay liver): liverkyst" in notes
    assert not any("left out" in note for note in notes) or n == 7
    assert not any("outside the liver mask" in note for note in notes)


@needs_ircadb
def test_real_ircadb_patient7_tumor_of_another_organ_is_left_out(tmp_path, capsys):
    from flexunet.cli import main

    dst = tmp_path / "out"
    assert main(["import", "ircadb", str(real_patient(7)), str(dst)]) == 0
    row = rows_by_id(dst / "manifest.csv")["ircadb_7"]
    assert (row["n_liver"], row["n_tumour"]) == ("1461944", "0")
    assert row["shape"] == "512x512x151"
    left_out = "left out: tumor [683556 voxels, 230 (0.03%) inside the liver, below the 50% a liver tumour needs]"
    assert "liver tumour taken: none" in row["notes"] and left_out in row["notes"]
    err = capsys.readouterr().err
    assert "ircadb_7: shape 512x512x151, liver 1461944, tumour 0" in err
    assert "    liver tumour taken: none\n" in err and left_out in err


@needs_ircadb
def test_real_ircadb_patient17_label_counts(tmp_path):
    dst = tmp_path / "out"
    row = rows_by_id(import_dataset("ircadb", real_patient(17), dst, progress=False))["ircadb_17"]
    assert (row["n_liver"], row["n_tumour"]) == ("1920507", "185990")
    assert row["shape"] == "512x512x119"
    assert "livertumor1 [96961 voxels" in row["notes"] and "livertumor2 [89029 voxels" in row["notes"]
    label = nib.load(dst / row["label"])
    assert label.get_data_dtype() == np.uint8
    np.testing.assert_allclose(label.affine, nib.load(dst / row["image"]).affine)


def check_liver_hu(image: np.ndarray, liver: np.ndarray):
    inside = image[liver].astype(np.float64)
    # aligned by geometry: ~110 +- 25 HU; by array index alone it would be ~49 +- 242
    assert 90 < inside.mean() < 130, inside.mean()
    assert inside.std() < 40, inside.std()


@needs_ircadb
@pytest.mark.slow
def test_real_ircadb_patient1_tumour_masks_and_liver_label_by_geometry(tmp_path):
    """MASKS_DICOM wins over liver_label.nii.gz; that file, placed by geometry, is the liver mask exactly."""
    from flexunet.io.volumes import read_nifti, read_volume, resample_label_to

    patient = real_patient(1)
    dst = tmp_path / "out"
    row = rows_by_id(import_dataset("ircadb", patient, dst, progress=False))["ircadb_1"]
    assert (row["n_liver"], row["n_tumour"]) == ("2650863", "214268")
    assert row["shape"] == "512x512x129"
    assert "cysts, not tumours (stay liver): liverkyst" in row["notes"]
    assert "liver_label.nii.gz not used (MASKS_DICOM.zip has the liver and tumour masks)" in row["notes"]
    image = read_volume(dst / row["image"])
    label = np.asanyarray(nib.load(dst / row["label"]).dataobj)
    placed, how = resample_label_to(read_nifti(patient / "liver_label.nii.gz", label=True), image)
    assert "exact" in how
    np.testing.assert_array_equal(placed > 0, label > 0)
    check_liver_hu(image.array, label > 0)


@needs_ircadb
@pytest.mark.slow
def test_real_ircadb_patient1_liver_label_only_by_geometry(tmp_path):
    """Without MASKS_DICOM the importer falls back to liver_label.nii.gz (liver only, tumours included)."""
    src = real_patient(1)
    patient = tmp_path / "3Dircadb1.1"
    patient.mkdir()
    for name in ("PATIENT_DICOM.zip", "liver_label.nii.gz"):
        (patient / name).symlink_to(src / name)
    dst = tmp_path / "out"
    row = rows_by_id(import_dataset("ircadb", patient, dst, progress=False))["ircadb_1"]
    assert (row["n_liver"], row["n_tumour"]) == ("2865131", "0")
    image = np.asanyarray(nib.load(dst / row["image"]).dataobj)
    label = np.asanyarray(nib.load(dst / row["label"]).dataobj)
    check_liver_hu(image, label == 1)


def test_import_mrc_with_axcodes_and_spacing_through_the_cli(tmp_path):
    """LiTS 117's crop has its axes S, L, P: --axcodes SLP makes the canonical volume RAS with axial slices."""
    import mrcfile

    from flexunet.cli import main
    from flexunet.io.volumes import read_volume, to_canonical

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 100, (6, 5, 4)).astype(np.float32)  # (x, y, z) = (S, L, P) axes
    lab = (arr > 50).astype(np.uint16)
    src = tmp_path / "data"
    src.mkdir()
    with mrcfile.new(src / "img_117.mrc") as m:
        m.set_data(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    with mrcfile.new(src / "lab_117.mrc") as m:
        m.set_data(np.ascontiguousarray(lab.transpose(2, 1, 0)))
    dst = tmp_path / "out"
    assert main(["import", "mrc", str(src), str(dst), "--axcodes", "slp", "--spacing", "1.45"]) == 0
    row = rows_by_id(dst / "manifest.csv")["mrc_117"]
    assert "axes SLP as given" in row["notes"]
    img = nib.load(dst / row["image"])
    assert nib.aff2axcodes(img.affine) == ("S", "L", "P")
    assert np.allclose(np.abs(img.affine[:3, :3]).sum(0), 1.45)
    can, _ = to_canonical(read_volume(dst / row["image"]))
    # RAS: axis 0 = R (flipped L = original axis 1), axis 1 = A (flipped P = axis 2), axis 2 = S (axis 0)
    assert np.array_equal(can.array, arr.transpose(1, 2, 0)[::-1, ::-1, :])


@pytest.mark.parametrize("argv,needle", [
    (["--axcodes", "SLX"], "--axcodes 'SLX': expected three letters"),
    (["--axcodes", "SSP"], "--axcodes 'SSP': expected three letters"),
])
def test_import_rejects_bad_axcodes(tmp_path, capsys, argv, needle):
    from flexunet.cli import main

    (tmp_path / "data").mkdir()
    assert main(["import", "mrc", str(tmp_path / "data"), str(tmp_path / "out"), *argv]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_import_refuses_mrc_options_for_other_formats(tmp_path, capsys):
    from flexunet.cli import main

    (tmp_path / "data").mkdir()
    assert main(["import", "lits", str(tmp_path / "data"), str(tmp_path / "out"), "--axcodes", "SLP"]) == 2
    assert "apply to the mrc format only" in capsys.readouterr().err
