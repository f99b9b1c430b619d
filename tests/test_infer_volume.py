"""infer-volume: label NIfTI with the input's shape and affine, from NIfTI and DICOM input."""
import nibabel as nib
import numpy as np
import pytest

from flexunet.cli import main
from flexunet.io.volumes import read_volume
from flexunet.models import create_model
from flexunet.train.checkpoint import save_weights

from volume_helpers import synthetic_case, write_case, write_dicom_series

CONFIG = """[model]
image_width = 32
image_height = 32
image_channels = 3
num_classes = 3
base_filters = 4
base_kernels = (3,3)
num_layers = 3
[train]
model_dir = "./models/"
precision = "32"
[slice]
hu_window = (-100, 250)
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "c.config").write_text(CONFIG)
    from flexunet.config import load_config

    cfg = load_config(tmp_path / "c.config")
    save_weights(tmp_path / "models" / "best.pt", create_model(cfg.model), cfg)
    return tmp_path


def test_infer_volume_on_dicom_folder_keeps_geometry(project):
    hu, _, _ = synthetic_case(0, shape=(40, 36, 10))
    dcm = write_dicom_series(project / "dicom", hu)
    out = project / "out"
    assert main(["--quiet", "infer-volume", str(project / "c.config"), str(dcm), "--output", str(out)]) == 0
    ref = read_volume(dcm)
    pred = nib.load(out / "dicom.nii.gz")
    assert pred.shape == ref.array.shape
    assert np.allclose(pred.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}


def test_infer_volume_nifti_oblique_orientation_round_trip(project):
    """A non-canonical (flipped, permuted) input: output in the input's own orientation."""
    d = write_case(project / "cases", "p0", seed=1,
                   affine=np.array([[0, -2.0, 0, 50], [-2.0, 0, 0, 40], [0, 0, 4.0, -10], [0, 0, 0, 1]]))
    out = project / "out"
    assert main(["--quiet", "infer-volume", str(project / "c.config"), str(d / "image.nii.gz"),
                 "--output", str(out), "--no-postprocess"]) == 0
    src = nib.load(d / "image.nii.gz")
    pred = nib.load(out / "p0.nii.gz")
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine)


def test_infer_volume_reports_bad_input_and_keep_going(project, capsys):
    good = write_case(project / "cases", "ok", seed=2) / "image.nii.gz"
    bad = project / "broken.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    out = project / "out"
    rc = main(["infer-volume", str(project / "c.config"), str(bad), str(good), "--output", str(out), "--keep-going"])
    err = capsys.readouterr().err
    assert rc != 0 and "broken.nii.gz" in err and "1 file(s) failed" in err
    assert (out / "ok.nii.gz").exists()
    rc = main(["infer-volume", str(project / "c.config"), str(bad), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "broken.nii.gz" in err and "Traceback" not in err


def test_postprocess_keeps_largest_liver_and_inner_tumour():
    from flexunet.infer.postprocess import postprocess_liver_tumour

    lab = np.zeros((20, 20, 5), np.uint8)
    lab[2:12, 2:12, 1:4] = 1
    lab[5:8, 5:8, 2] = 2
    lab[6, 6, 1] = 0  # hole
    lab[16:18, 16:18, 2] = 1  # small island
    lab[0, 19, 0] = 2  # tumour outside the liver
    out = postprocess_liver_tumour(lab)
    assert out[17, 17, 2] == 0 and out[0, 19, 0] == 0
    assert out[6, 6, 1] == 1 and out[6, 6, 2] == 2
