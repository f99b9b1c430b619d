"""Batches: colliding output names refused before any work, parts of a batch, runs that find nothing,
and the demo's split for any number of cases."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from flexunet.cli import main
from flexunet.errors import ConfigError, DataError
from flexunet.infer.batch import check_output_names, output_name, select_part

from volume_helpers import write_case, write_dicom_series, synthetic_case
from test_api import CONFIG, project  # noqa: F401  (fixture)


def test_generic_dicom_names_take_the_parent_folder():
    assert output_name("data/3Dircadb1.17/PATIENT_DICOM.zip") == "3Dircadb1.17"
    assert output_name("data/p7/DICOM") == "p7"
    assert output_name("cases/p0/image.nii.gz") == "p0"
    assert output_name("cases/liver_12.nii.gz") == "liver_12"


def test_two_patient_dicom_zips_give_two_outputs(project):
    hu, _, _ = synthetic_case(0, shape=(24, 20, 4))
    zips = []
    for patient in ("3Dircadb1.17", "3Dircadb1.7"):
        folder = write_dicom_series(project / patient / "PATIENT_DICOM", hu)
        zips.append(shutil.make_archive(str(project / patient / "PATIENT_DICOM"), "zip", folder))
    assert main(["--quiet", "infer-volume", str(project / "c.config"), *zips, "--output", str(project / "out")]) == 0
    assert sorted(p.name for p in (project / "out").iterdir()) == ["3Dircadb1.17.nii.gz", "3Dircadb1.7.nii.gz"]


def test_inputs_that_map_to_one_output_are_refused_before_anything_is_written(project, capsys):
    a = write_case(project / "a", "p0", seed=1) / "image.nii.gz"
    b = write_case(project / "b", "p0", seed=2) / "image.nii.gz"
    out = project / "out"
    rc = main(["infer-volume", str(project / "c.config"), str(a), str(b), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and str(a) in err and str(b) in err and "p0.nii.gz" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(DataError):
        check_output_names(["x/CT.nii.gz", "y/ct.nii"])  # a case-insensitive file system merges them


def test_images_whose_stems_collide_are_refused(tiny_project, capsys):
    images = tiny_project / "dataset" / "test" / "images"
    first = sorted(images.iterdir())[0]
    from PIL import Image

    Image.open(first).convert("RGB").save(first.with_suffix(".jpg"))
    rc = main(["infer", str(tiny_project / "train_eval_infer.config")])
    err = capsys.readouterr().err
    assert rc != 0 and first.stem in err and ".jpg" in err and "distinct names" in err


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_the_parts_of_a_batch_are_disjoint_and_whole(n):
    inputs = [f"case_{i}.nii.gz" for i in range(11)]
    parts = [select_part(inputs, n, k) for k in range(n)]
    flat = [x for part in parts for x in part]
    assert sorted(flat) == sorted(inputs) and len(flat) == len(set(flat))
    with pytest.raises(DataError, match="part_id"):
        select_part(inputs, n, n)


def test_infer_volume_parts_through_the_cli(project):
    cases = [write_case(project / "cases", f"p{i}", seed=i) / "image.nii.gz" for i in range(3)]
    for k in range(2):
        assert main(["--quiet", "infer-volume", str(project / "c.config"), *map(str, cases), "--output",
                     str(project / "out"), "--num-parts", "2", "--part-id", str(k)]) == 0
    assert sorted(p.name for p in (project / "out").iterdir()) == ["p0.nii.gz", "p1.nii.gz", "p2.nii.gz"]


def test_a_volume_with_no_liver_gives_one_warning_naming_the_causes(project):
    import nibabel as nib

    d = project / "cases" / "air"
    d.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.full((24, 20, 4), -1000.0, np.float32), np.diag([2.0, 2.0, 4.0, 1.0])),
             d / "image.nii.gz")
    from flexunet.infer.common import NothingFoundWarning
    from flexunet.infer.volume import infer_volumes
    from flexunet.api import load_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        infer_volumes(load_config(project / "c.config"), [str(d / "image.nii.gz")], project / "out", quiet=True)
    msgs = [str(w.message) for w in caught if issubclass(w.category, NothingFoundWarning)]
    assert len(msgs) == 1 and "got no liver" in msgs[0] and "plane" in msgs[0] and "hu_window" in msgs[0]


def test_demo_split_for_any_number_of_cases():
    from flexunet.demo import split_overrides

    assert split_overrides(10) == []
    four = split_overrides(4)
    assert four == ["slice.train_cases=['phantom_000', 'phantom_001']", "slice.valid_cases=['phantom_002']",
                    "slice.test_cases=['phantom_003']"]
    assert "slice.test_cases=['phantom_004', 'phantom_005']" in split_overrides(6)
    with pytest.raises(ConfigError, match="at least 3"):
        split_overrides(2)


def test_demo_with_four_cases_runs(tmp_path, capsys):
    tiny = ["model.image_width=32", "model.image_height=32", "model.num_layers=3", "model.base_filters=4",
            "train.epochs=1", "train.num_workers=0", "train.num_infer_images=1", "train.epoch_change_infer=False"]
    rc = main(["--quiet", "demo", str(tmp_path / "d"), "--cases", "4", *[a for t in tiny for a in ("--set", t)]])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "d" / "pred" / "phantom_003.nii.gz").is_file()
