"""Inputs refused or flagged before they do harm: NIfTI without geometry, headers that claim more data
than exists, several DICOM series in one folder, a series missing a slice its header declares."""
from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest

from flexunet.cli import main
from flexunet.errors import DataError
from flexunet.io.nifti import GeometryWarning
from flexunet.io.volumes import read_volume

from volume_helpers import synthetic_case, write_dicom_series
from test_api import CONFIG, project  # noqa: F401  (fixture)


def _raw_nifti(path, shape=(16, 12, 4), pixdim=(0.0, 0.0, 0.0), data=True, gz=False):
    """A NIfTI-1 file written byte by byte, with qform_code = sform_code = 0."""
    h = nib.Nifti1Header()
    h.set_data_shape(shape)
    h.set_data_dtype(np.int16)
    h["pixdim"][1:4] = pixdim
    h["qform_code"] = 0
    h["sform_code"] = 0
    h["vox_offset"] = 352
    blob = h.binaryblock + b"\0" * 4
    if data:
        blob += np.zeros(shape, np.int16).tobytes(order="F")
    with (gzip.open if gz else open)(path, "wb") as fh:
        fh.write(blob)
    return path


def test_nifti_without_geometry_is_refused_in_one_line(project, capsys):
    ct = _raw_nifti(project / "nogeo.nii")
    rc = main(["infer-volume", str(project / "c.config"), str(ct), "--output", str(project / "out")])
    err = capsys.readouterr().err
    assert rc != 0 and "nogeo.nii" in err and "qform_code and sform_code are 0" in err and "pixdim" in err
    assert len(err.strip().splitlines()) == 1
    assert not (project / "out" / "nogeo.nii.gz").exists()


def test_nifti_with_codes_0_and_valid_pixdim_warns_once_which_orientation_is_assumed(tmp_path):
    ct = _raw_nifti(tmp_path / "codes0.nii", pixdim=(0.8, 0.8, 2.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(ct)
    msgs = [str(w.message) for w in caught if issubclass(w.category, GeometryWarning)]
    assert len(msgs) == 1 and "orientation assumed" in msgs[0] and "(0.8, 0.8, 2.0)" in msgs[0]
    assert vol.spacing == pytest.approx((0.8, 0.8, 2.0))


def test_a_header_claiming_a_huge_volume_is_refused_before_allocation(tmp_path):
    small = _raw_nifti(tmp_path / "huge.nii", shape=(4096, 4096, 4096), pixdim=(1, 1, 1), data=False)
    assert small.stat().st_size == 352
    with pytest.raises(DataError, match=r"4096x4096x4096 int16 voxels \(137,438,953,472 bytes\) but the file "
                                        r"holds 0 bytes"):
        read_volume(small)
    gz = _raw_nifti(tmp_path / "huge.nii.gz", shape=(8192, 8192, 4096), pixdim=(1, 1, 1), data=False, gz=True)
    with pytest.raises(DataError, match="GiB of memory is available"):
        read_volume(gz)


def _retag(folder, **tags):
    import pydicom

    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(f)


def test_two_series_in_one_folder_are_listed_and_one_can_be_chosen(project, capsys):
    hu, _, _ = synthetic_case(0, shape=(24, 20, 5))
    ct = write_dicom_series(project / "both" / "ct", hu, series_uid="1.2.826.0.1.3680043.2.1125.1")
    _retag(ct, SeriesDescription="ABDOMEN 1.5 mm", SeriesNumber=2)
    scout = write_dicom_series(project / "both" / "scout", hu[:, :, :2], series_uid="1.2.826.0.1.3680043.2.1125.2")
    _retag(scout, SeriesDescription="SCOUT", SeriesNumber=1)
    with pytest.raises(DataError) as exc:
        read_volume(project / "both")
    msg = str(exc.value)
    assert "'ABDOMEN 1.5 mm', series 2): 5 slices" in msg and "'SCOUT', series 1): 2 slices" in msg
    assert "--series UID" in msg
    vol = read_volume(project / "both", series_uid="1.2.826.0.1.3680043.2.1125.1")
    assert vol.shape == (24, 20, 5)
    # the same choice through infer-volume and the API
    rc = main(["--quiet", "infer-volume", str(project / "c.config"), str(project / "both"), "--output",
               str(project / "out"), "--series", "1.2.826.0.1.3680043.2.1125.2"])
    assert rc == 0 and nib.load(project / "out" / "both.nii.gz").shape == (24, 20, 2)
    import flexunet

    seg = flexunet.segment(project / "both", config=project / "c.config", series_uid="1.2.826.0.1.3680043.2.1125.1")
    assert seg.labels.shape == (24, 20, 5)
    (project / "x.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="not DICOM"):
        read_volume(project / "x.nii.gz", series_uid="1.2")


def test_a_missing_end_slice_is_found_from_the_declared_count(tmp_path):
    hu, _, _ = synthetic_case(0, shape=(24, 20, 5))
    folder = write_dicom_series(tmp_path / "ct", hu)
    _retag(folder, ImagesInAcquisition=6, AcquisitionNumber=1)
    with pytest.raises(DataError, match=r"holds 5 slices but the series declares 6 \(ImagesInAcquisition\)"):
        read_volume(folder)
    _retag(folder, ImagesInAcquisition=5)
    assert read_volume(folder).shape == (24, 20, 5)


def test_create_backup_copies_model_dir_atomically_without_the_lock(tiny_project):
    """[train] create_backup: the backup folder appears whole (copied beside it under a hidden name, then
    renamed), and leaves out this run's lock file."""
    cfg = tiny_project / "train_eval_infer.config"
    assert main(["--quiet", "train", str(cfg), "--set", "train.epochs=1"]) == 0
    assert main(["--quiet", "train", str(cfg), "--set", "train.epochs=1", "--set", "train.create_backup=True"]) == 0
    backups = [p for p in tiny_project.iterdir() if "_backup_" in p.name]
    assert len(backups) == 1 and (backups[0] / "best.pt").is_file()
    assert not (backups[0] / "flexunet-train.lock").exists()
    assert not [p for p in tiny_project.iterdir() if p.name.startswith(".") and "tmp" in p.name]


def test_demo_copies_its_ground_truth_atomically():
    import ast
    from pathlib import Path

    src = (Path(__file__).resolve().parents[1] / "src" / "flexunet" / "demo.py").read_text()
    calls = {n.func.attr for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.value.__class__ is ast.Name}
    assert "copy" not in calls and "copytree" not in calls
