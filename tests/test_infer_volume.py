"""infer-volume: label NIfTI with the input's shape and affine, from NIfTI and DICOM input."""
import nibabel as nib
import numpy as np
import pytest

from flexunet.cli import main
from flexunet.io.volumes import read_volume
from flexunet.models import create_model
from flexunet.models.checkpoint import save_weights

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
    save_weights(tmp_path / "models" / "best.pt", create_model(cfg.model), cfg.model)
    return tmp_path


def test_infer_volume_on_dicom_folder_keeps_geometry(project):
    hu, _, _ = synthetic_case(0, shape=(40, 36, 10))
    dcm = write_dicom_series(project / "dicom", hu)
    out = project / "out"
    assert main(["--quiet", "infer-volume", str(project / "c.config"), str(dcm), "--output", str(out)]) == 0
    ref = read_volume(dcm)
    # a folder named "dicom" says nothing about the patient: the output takes its parent's name
    pred = nib.load(out / f"{project.name}.nii.gz")
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
    kept = postprocess_liver_tumour(lab, fill_holes=False)
    assert kept[6, 6, 1] == 0 and kept[17, 17, 2] == 0 and kept[0, 19, 0] == 0
    expected = lab.copy()
    expected[16:18, 16:18, 2] = expected[0, 19, 0] = 0
    assert (kept == expected).all()  # only the island and the outside tumour go; the hole stays


def test_a_tumour_inside_a_kept_hole_is_not_surrounded_by_liver():
    """A dark structure the liver surrounds (gallbladder, vessel) with 'tumour' in it: filled, the
    hole counts as liver and the tumour survives the contact filter; kept, it does not."""
    from flexunet.infer.postprocess import postprocess_liver_tumour

    gi, gj, _ = np.indices((30, 30, 4))
    r = np.hypot(gi - 15, gj - 15)
    lab = np.ones((30, 30, 4), np.uint8)
    lab[0, :, :] = lab[:, 0, :] = 0
    lab[..., 1:3][r[..., 1:3] <= 6] = 0
    lab[..., 1:3][r[..., 1:3] <= 2] = 2
    filled = postprocess_liver_tumour(lab, tumour_liver_contact=0.5)
    kept = postprocess_liver_tumour(lab, tumour_liver_contact=0.5, fill_holes=False)
    assert (filled[15, 15, 1:3] == 2).all() and (filled[..., 1:3][(r[..., 1:3] > 2) & (r[..., 1:3] <= 6)] == 1).all()
    assert (kept[..., 1:3][r[..., 1:3] <= 6] == 0).all()


def _liver_with_tumours():
    lab = np.zeros((40, 40, 6), np.uint8)
    lab[5:35, 5:30, 1:5] = 1
    lab[10:16, 10:16, 2:4] = 2      # 72 voxels, inside the liver
    lab[20, 20, 2] = 2              # 1 voxel, inside the liver
    lab[12:18, 28:34, 2:4] = 2      # 72 voxels astride the liver's edge (x 28-29 in, 30-33 out)
    return lab


def test_tumour_filters_drop_specks_and_lesions_outside_the_liver():
    from flexunet.infer.postprocess import filter_tumours, postprocess_liver_tumour

    lab = _liver_with_tumours()
    assert filter_tumours(lab) is lab  # both off: untouched
    small = filter_tumours(lab, min_voxels=2)
    assert small[20, 20, 2] == 1 and (small[10:16, 10:16, 2:4] == 2).all() and (small[12:18, 28:34, 2:4] == 2).all()
    contact = filter_tumours(lab, liver_contact=0.5)
    assert (contact[10:16, 10:16, 2:4] == 2).all()  # surrounded by liver: kept
    assert (contact[12:18, 28:34, 2:4] == 0).all()  # two thirds of its surroundings background: dropped
    assert contact[20, 20, 2] == 2
    # a lesion at the liver's surface with most of its surroundings liver is kept
    lab2 = lab.copy()
    lab2[12:18, 26:30, 2:4] = 2
    lab2[12:18, 30:34, 2:4] = 0
    assert (filter_tumours(lab2, liver_contact=0.5)[12:18, 26:30, 2:4] == 2).all()
    both = postprocess_liver_tumour(lab, min_tumour_voxels=2, tumour_liver_contact=0.5)
    assert both[20, 20, 2] == 1 and (both[10:16, 10:16, 2:4] == 2).all() and not (both[12:18, 30:34, 2:4]).any()


class _StubPredictor:
    """Probabilities that reproduce a fixed canonical label volume, slice by slice."""

    def __init__(self, labels):
        import torch

        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.k = 0

    def probs(self, x):
        import torch
        import torch.nn.functional as F

        from flexunet.data.slicer import to_view

        out = []
        for _ in range(x.shape[0]):
            view = torch.from_numpy(to_view(self.labels[:, :, self.k].numpy()).copy())
            out.append(F.one_hot(view, 3).permute(2, 0, 1).float())
            self.k += 1
        return torch.stack(out)


def test_infer_volume_applies_the_tumour_filters_in_mm3(project):
    from flexunet.config import load_config
    from flexunet.infer.volume import infer_volumes

    lab = _liver_with_tumours()
    img = nib.Nifti1Image(np.zeros(lab.shape, np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))  # 8 mm^3 voxels, RAS
    nib.save(img, project / "ct.nii.gz")
    out = project / "pred"
    size = ["model.image_width=40", "model.image_height=40"]
    cfg = load_config(project / "c.config", ["infer.min_tumour_mm3=300", "infer.tumour_liver_contact=0.5", *size])
    infer_volumes(cfg, [str(project / "ct.nii.gz")], str(out), predictor=_StubPredictor(lab), quiet=True)
    got = np.asarray(nib.load(out / "ct.nii.gz").dataobj)
    # 300 mm^3 is 38 voxels of 8 mm^3: the speck (8 mm^3) becomes liver, the inner lesion (72 voxels,
    # 576 mm^3) stays (read as 300 voxels it would go); the lesion astride the edge becomes background
    assert got[20, 20, 2] == 1 and (got[10:16, 10:16, 2:4] == 2).all() and not got[12:18, 30:34, 2:4].any()
    cfg = load_config(project / "c.config", ["infer.min_tumour_mm3=600", *size])
    infer_volumes(cfg, [str(project / "ct.nii.gz")], str(out), predictor=_StubPredictor(lab), quiet=True)
    got = np.asarray(nib.load(out / "ct.nii.gz").dataobj)
    assert (got[10:16, 10:16, 2:4] == 1).all()  # 576 mm^3 < 600: liver
    cfg = load_config(project / "c.config", size)
    infer_volumes(cfg, [str(project / "ct.nii.gz")], str(out), predictor=_StubPredictor(lab), quiet=True)
    got = np.asarray(nib.load(out / "ct.nii.gz").dataobj)
    assert got[20, 20, 2] == 2 and (got[12:18, 28:34, 2:4] == 2).all()  # defaults: both filters off


@pytest.mark.parametrize("override,needle", [("infer.min_tumour_mm3=-1", "min_tumour_mm3 = -1"),
                                             ("infer.tumour_liver_contact=1.5", "tumour_liver_contact = 1.5"),
                                             ("infer.tumour_grow=-2", "tumour_grow = -2"),
                                             ("infer.tumour_grow_beyond=-1", "tumour_grow_beyond = -1")])
def test_tumour_filter_config_errors(project, override, needle):
    from flexunet.config import load_config
    from flexunet.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        load_config(project / "c.config", [override])


def _lesion_phantom():
    """A liver slab (150) in fat (0) holding a dark sphere (90, radius 8 mm) at the liver's edge, and
    the labels a model might give: liver everywhere in the organ, tumour only on the sphere's core
    (radius 5 mm), not in its end slices."""
    shape = (48, 48, 16)
    gi, gj, gk = np.indices(shape)
    liver = gj < 36
    r = np.sqrt((gi - 24) ** 2 + (gj - 32) ** 2 + ((gk - 8) * 2.0) ** 2)  # z voxels 2 mm, in-plane 1 mm
    lesion = (r <= 8) & liver
    img = np.where(liver, 150.0, 0.0)
    img[lesion] = 90.0
    lab = liver.astype(np.uint8)
    lab[(r <= 5) & liver] = 2
    return img, lab, lesion, liver


def test_grow_tumours_takes_in_the_rest_of_the_lesion_and_nothing_else():
    from flexunet.infer.postprocess import grow_tumours

    img, lab, lesion, liver = _lesion_phantom()
    spacing = (1.0, 1.0, 2.0)
    assert grow_tumours(lab, img, spacing, 0) is lab  # off: untouched
    core = (lab == 2).sum()
    out = grow_tumours(lab, img, spacing, steps=6, sigma_mm=0.5, beyond=0)
    got = out == 2
    assert got.sum() > core and (got & lesion).sum() >= 0.9 * lesion.sum()
    assert not (got & ~lesion).any()  # the bright liver and the fat stay out
    assert (out[~liver] == 0).all() and (out[liver & ~lesion] == 1).all()
    one = grow_tumours(lab, img, spacing, steps=1, sigma_mm=0.5, beyond=0) == 2
    assert core < one.sum() < got.sum()  # one face step at a time
    # too faint for min_contrast (the gap is 60): left alone
    assert (grow_tumours(lab, img, spacing, steps=6, sigma_mm=0.5, min_contrast=61) == lab).all()
    # a lesion part the model called background beyond the organ's outline is reached with beyond >= 1
    cut = lab.copy()
    cut[lesion & (np.indices(lab.shape)[1] >= 34)] = 0  # the organ outline now stops short of the lesion
    inside = grow_tumours(cut, img, spacing, steps=6, sigma_mm=0.5, beyond=0) == 2
    outside = grow_tumours(cut, img, spacing, steps=6, sigma_mm=0.5, beyond=2) == 2
    assert not (inside & (cut == 0)).any()
    assert (outside & (cut == 0) & lesion).sum() > 0 and not (outside & ~lesion).any()


def test_infer_volume_grows_tumours_in_the_images_own_units(project):
    from flexunet.config import load_config
    from flexunet.infer.volume import infer_volumes

    img, lab, lesion, liver = _lesion_phantom()
    # HU: liver 60, lesion 20 (40 HU darker), fat -100; voxels 1 x 1 x 2 mm
    hu = np.where(liver, 60, -100).astype(np.int16)
    hu[lesion] = 20
    nib.save(nib.Nifti1Image(hu, np.diag([1.0, 1.0, 2.0, 1.0])), project / "ct.nii.gz")
    out = project / "pred"
    size = ["model.image_width=48", "model.image_height=48"]
    cfg = load_config(project / "c.config", ["infer.tumour_grow=6", *size])
    infer_volumes(cfg, [str(project / "ct.nii.gz")], str(out), predictor=_StubPredictor(lab), quiet=True)
    got = np.asarray(nib.load(out / "ct.nii.gz").dataobj) == 2
    # the 1.5 mm smoothing blurs the lesion's outermost voxels towards the liver: most, not all, are taken
    assert (got & lesion).sum() >= 0.8 * lesion.sum() > 2.5 * (lab == 2).sum()
    assert (got & ~lesion).sum() <= 0.02 * lesion.sum()
    # a lesion 40 HU darker passes the 10 HU minimum; one 8 HU darker is left as the model gave it
    hu[lesion] = 52
    nib.save(nib.Nifti1Image(hu, np.diag([1.0, 1.0, 2.0, 1.0])), project / "ct.nii.gz")
    infer_volumes(cfg, [str(project / "ct.nii.gz")], str(out), predictor=_StubPredictor(lab), quiet=True)
    got = np.asarray(nib.load(out / "ct.nii.gz").dataobj)
    assert ((got == 2) == (lab == 2)).all()


class _RecordingPredictor:
    """First call of each batch favours liver a little, the second (the swapped context) tumour a lot."""

    def __init__(self):
        self.inputs = []

    def probs(self, x):
        import torch

        self.inputs.append(x.clone())
        p = torch.zeros((x.shape[0], 3) + tuple(x.shape[2:]))
        if len(self.inputs) % 2:
            p[:, 1], p[:, 2] = 0.6, 0.4
        else:
            p[:, 1], p[:, 2] = 0.1, 0.9
        return p


def test_tta_context_flip_averages_the_swapped_context(project):
    from flexunet.config import load_config
    from flexunet.infer.volume import VolumeSettings, predict_volume

    rng = np.random.default_rng(0)
    vol = rng.integers(0, 255, (32, 32, 5), dtype=np.uint8)
    cfg = load_config(project / "c.config")
    rec = _RecordingPredictor()
    assert (predict_volume(rec, vol, VolumeSettings.from_config(cfg)) == 1).all() and len(rec.inputs) == 1  # off: one pass, liver
    cfg = load_config(project / "c.config", ["infer.tta_context_flip=True"])
    rec = _RecordingPredictor()
    labels = predict_volume(rec, vol, VolumeSettings.from_config(cfg))
    a, b = rec.inputs
    assert len(rec.inputs) == 2 and a.shape[1] == 3
    assert not np.array_equal(a.numpy(), b.numpy()) and np.array_equal(a.flip(1).numpy(), b.numpy())
    assert (labels == 2).all()  # (0.4 + 0.9) / 2 > (0.6 + 0.1) / 2
    with pytest.raises(Exception, match="tta_context_flip = True"):
        load_config(project / "c.config", ["infer.tta_context_flip=True", "model.image_channels=1"])


def test_infer_volume_fill_holes_follows_the_config(project):
    from flexunet.config import load_config
    from flexunet.infer.volume import infer_volumes

    lab = _liver_with_tumours()
    lab[24:27, 14:17, 2] = 0  # a hole the liver surrounds in its slice
    nib.save(nib.Nifti1Image(np.zeros(lab.shape, np.int16), np.diag([2.0, 2.0, 2.0, 1.0])), project / "ct.nii.gz")
    size = ["model.image_width=40", "model.image_height=40"]
    got = {}
    for fill in (True, False):
        cfg = load_config(project / "c.config", [f"infer.fill_holes={fill}", *size])
        infer_volumes(cfg, [str(project / "ct.nii.gz")], str(project / "pred"), predictor=_StubPredictor(lab), quiet=True)
        got[fill] = np.asarray(nib.load(project / "pred" / "ct.nii.gz").dataobj)
    assert (got[True][24:27, 14:17, 2] == 1).all() and (got[False][24:27, 14:17, 2] == 0).all()


def test_postprocessing_of_a_volume_does_not_depend_on_the_empty_space_around_it():
    """Postprocessing works inside the organ's and the tumours' bounding boxes: the same labels padded with
    background (or moved against the volume's edge) give the same result, padded."""
    from flexunet.infer.postprocess import grow_tumours, postprocess_liver_tumour

    rng = np.random.default_rng(0)
    lab = _liver_with_tumours()
    img = rng.integers(0, 255, lab.shape).astype(np.uint8)
    img[lab == 2] //= 3
    for kw in (dict(), dict(min_tumour_voxels=2, tumour_liver_contact=0.5), dict(fill_holes=False)):
        small = grow_tumours(postprocess_liver_tumour(lab, **kw), img, (1.0, 1.0, 2.0), 2, beyond=2)
        for pad in ((0, 9), (9, 0), (3, 4)):
            big_lab = np.pad(lab, [pad, pad, (pad[0] // 3, pad[1] // 3)])
            big_img = np.pad(img, [pad, pad, (pad[0] // 3, pad[1] // 3)], mode="reflect")
            big = grow_tumours(postprocess_liver_tumour(big_lab, **kw), big_img, (1.0, 1.0, 2.0), 2, beyond=2)
            inner = big[pad[0]:pad[0] + 40, pad[0]:pad[0] + 40, pad[0] // 3:pad[0] // 3 + 6]
            assert np.array_equal(inner, small) and np.count_nonzero(big) == np.count_nonzero(small), (kw, pad)
