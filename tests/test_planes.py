"""Slicing planes: `flexunet slice` in axial, coronal and sagittal planes, and tri-planar fusion in
infer-volume (each plane's probabilities put back on the volume's grid and averaged)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

import flexunet
from flexunet.cli import main
from flexunet.data.planes import PLANE_AXES, from_plane, normalize_planes, to_plane
from flexunet.errors import ConfigError
from flexunet.infer.volume import VolumeSettings, predict_volume

from test_api import project  # noqa: F401  (fixture)
from volume_helpers import write_case

TRI = 'slice.planes=["axial", "coronal", "sagittal"]'


def three_plane_config(size: int, train: list[str], valid: list[str], test: list[str]) -> str:
    """A small project config that slices ./cases in three planes and trains one epoch on them."""
    return f"""[model]
image_width = {size}
image_height = {size}
image_channels = 3
num_classes = 3
base_filters = 4
num_layers = 3
[train]
epochs = 1
batch_size = 16
num_workers = 0
model_dir = "./models/"
eval_dir = "./eval/"
images_dir = "./dataset/train/images/"
masks_dir = "./dataset/train/masks/"
epoch_change_infer = False
precision = "32"
[valid]
images_dir = "./dataset/valid/images/"
masks_dir = "./dataset/valid/masks/"
[slice]
cases_dir = "./cases"
output_dir = "./dataset"
hu_window = (-100, 250)
planes = ["axial", "coronal", "sagittal"]
train_cases = {train!r}
valid_cases = {valid!r}
test_cases = {test!r}
"""


def test_plane_views_are_permutations_that_round_trip():
    vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    for plane in PLANE_AXES:
        assert np.array_equal(from_plane(to_plane(vol, plane), plane), vol)
    assert to_plane(vol, "coronal").shape == (4, 6, 5) and to_plane(vol, "sagittal").shape == (5, 6, 4)
    assert normalize_planes("Coronal") == ("coronal",)
    assert normalize_planes(["axial", "sagittal", "axial"]) == ("axial", "sagittal")
    with pytest.raises(ConfigError, match="oblique"):
        normalize_planes(["oblique"])


class _Recorder:
    """Probabilities from the mean intensity of the middle channel, recording every batch's slice size."""

    def __init__(self):
        self.sizes = []

    def probs(self, x):
        self.sizes += [tuple(x.shape[2:])] * len(x)
        m = x[:, 1:2]
        return torch.cat([1 - m, m * 0.5, m * 0.5 + 0.01], 1)


def test_tri_planar_prediction_visits_every_slice_of_every_plane(project):
    cfg = flexunet.load_config(project / "c.config", [TRI])
    settings = VolumeSettings.from_config(cfg)
    assert settings.planes == ("axial", "coronal", "sagittal")
    vol = np.random.default_rng(0).integers(0, 255, (20, 16, 12), dtype=np.uint8)
    rec = _Recorder()
    labels = predict_volume(rec, vol, settings)
    assert len(rec.sizes) == 12 + 16 + 20 and labels.shape == vol.shape
    axial = predict_volume(_Recorder(), vol, VolumeSettings.from_config(flexunet.load_config(project / "c.config")))
    assert labels.dtype == np.uint8 and not np.array_equal(labels, np.zeros_like(labels)) and axial.shape == vol.shape


def test_fused_labels_of_a_volume_and_of_its_permuted_axes_agree(project):
    """The same CT stored with its axes permuted (and the affine saying so) gives the same labels, permuted."""
    cfg = flexunet.load_config(project / "c.config", [TRI])
    vp = flexunet.VolumePredictor(cfg)
    ct = write_case(project / "cases", "p0", seed=3) / "image.nii.gz"
    img = nib.load(ct)
    arr, aff = np.asarray(img.dataobj), img.affine
    perm = (2, 0, 1)
    permuted = np.transpose(arr, perm)
    perm_aff = aff.copy()
    perm_aff[:, :3] = aff[:, list(perm)]
    a = vp.segment(arr, affine=aff).labels
    b = vp.segment(permuted, affine=perm_aff).labels
    assert np.array_equal(np.transpose(a, perm), b)


def test_slice_in_three_planes_names_each_png_with_its_plane_and_infer_volume_fuses(tmp_path):
    cases = tmp_path / "cases"
    for i in range(3):
        write_case(cases, f"p{i}", seed=i, shape=(40, 36, 10))
    cfg_text = three_plane_config(32, ["p0"], ["p1"], ["p2"])
    (tmp_path / "c.config").write_text(cfg_text)
    assert main(["--quiet", "slice", str(tmp_path / "c.config")]) == 0
    names = sorted(p.name for p in (tmp_path / "dataset" / "test" / "images").iterdir())
    assert len(names) == 10 + 36 + 40  # a test patient keeps every slice of every plane
    assert {n.split("_")[1] for n in names} == {"axial", "coronal", "sagittal"}
    assert "p2_coronal_0035.png" in names and "p2_sagittal_0039.png" in names
    assert main(["--quiet", "train", str(tmp_path / "c.config")]) == 0
    ct = cases / "p2" / "image.nii.gz"
    assert main(["--quiet", "infer-volume", str(tmp_path / "c.config"), str(ct), "--output", str(tmp_path / "out")]) == 0
    pred, src = nib.load(tmp_path / "out" / "p2.nii.gz"), nib.load(ct)
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine)


IRCADB17 = __import__("conftest").SHARED_DATA / "3Dircadb1" / "3Dircadb1.17"


@pytest.mark.slow
@pytest.mark.skipif(not (IRCADB17 / "PATIENT_DICOM.zip").is_file(), reason="IRCADb patient 17 not in ../shared/data")
def test_three_planes_on_ircadb_17(tmp_path):
    """IRCADb 17 sliced in three planes beside two phantoms, a tri-planar model trained on the phantoms,
    and infer-volume on the patient's DICOM zip: labels on the series' own grid."""
    from flexunet.io.volumes import read_volume

    cases = tmp_path / "cases"
    assert main(["--quiet", "import", "ircadb", str(IRCADB17), str(cases)]) == 0
    assert main(["--quiet", "phantom", str(cases), "--cases", "2", "--seed", "1"]) == 0
    cfg = tmp_path / "c.config"
    cfg.write_text(three_plane_config(64, ["phantom_000"], ["phantom_001"], ["ircadb_17"]))
    assert main(["--quiet", "slice", str(cfg)]) == 0
    test_pngs = list((tmp_path / "dataset" / "test" / "images").iterdir())
    assert len(test_pngs) == 119 + 512 + 512
    assert main(["--quiet", "train", str(cfg)]) == 0
    zip_path = IRCADB17 / "PATIENT_DICOM.zip"
    assert main(["--quiet", "infer-volume", str(cfg), str(zip_path), "--output", str(tmp_path / "out")]) == 0
    pred = nib.load(tmp_path / "out" / "3Dircadb1.17.nii.gz")
    ref = read_volume(zip_path)
    assert pred.shape == ref.shape == (512, 512, 119) and np.allclose(pred.affine, ref.affine, atol=1e-4)
