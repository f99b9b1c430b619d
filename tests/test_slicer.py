"""Volume slicing: patient-wise split, HU window, orientation, 2.5D, on-the-fly dataset."""
import csv

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from flexunet.config import config_from_dict
from flexunet.data.slicer import (context_enabled, from_view, hu_to_uint8, list_cases, slice_cases, slice_channels,
                                  split_cases, to_view)
from flexunet.errors import DataError

from volume_helpers import write_case


def make_cfg(tmp_path, **slice_kw):
    return config_from_dict({"model": {"image_width": 32, "image_height": 32, "num_layers": 3, "image_channels": 3},
                             "slice": {"cases_dir": str(tmp_path / "cases"), "output_dir": str(tmp_path / "ds"),
                                       **slice_kw}}, base_dir=tmp_path)


def test_split_is_patient_wise_and_deterministic(tmp_path):
    ids = [f"case_{i:02d}" for i in range(11)]
    cfg = make_cfg(tmp_path)
    a, b = split_cases(ids, cfg), split_cases(list(reversed(ids)), cfg)
    assert a == b
    assert set(a) == set(ids)  # every patient in exactly one split (dict keys are unique)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "valid", "test")}
    assert counts["train"] >= 7 and counts["valid"] >= 1 and counts["test"] >= 1
    cfg2 = make_cfg(tmp_path, train_cases=["case_00", "case_01"], valid_cases=["case_02"], test_cases=["case_03"])
    assert split_cases(ids, cfg2) == {"case_00": "train", "case_01": "train", "case_02": "valid", "case_03": "test"}
    with pytest.raises(DataError, match="both train and test"):
        split_cases(ids, make_cfg(tmp_path, train_cases=["case_00"], test_cases=["case_00"]))
    with pytest.raises(DataError, match="not a case"):
        split_cases(ids, make_cfg(tmp_path, train_cases=["nobody"]))


def test_slice_writes_layout_and_no_patient_in_two_splits(tmp_path):
    for i in range(5):
        write_case(tmp_path / "cases", f"p{i}", seed=i)
    cfg = make_cfg(tmp_path, split_ratios=(0.6, 0.2, 0.2), background_fraction=0.0)
    res = slice_cases(cfg, quiet=True)
    ds = tmp_path / "ds"
    rows = list(csv.DictReader((ds / "split.csv").open()))
    assert sorted(r["case_id"] for r in rows) == [f"p{i}" for i in range(5)]
    seen = {}
    for split in ("train", "valid", "test"):
        imgs = sorted(p.name for p in (ds / split / "images").glob("*.png"))
        masks = sorted(p.name for p in (ds / split / "masks").glob("*.png"))
        assert imgs == masks and imgs
        for name in imgs:
            patient = name.rsplit("_", 1)[0]
            assert seen.setdefault(patient, split) == split, f"{patient} in two splits"
    # masks hold only rgb_map colours; images are model-sized RGB
    m = np.asarray(Image.open(next((ds / "train" / "masks").glob("*.png"))).convert("RGB")).reshape(-1, 3)
    assert {tuple(c) for c in np.unique(m, axis=0)} <= {(0, 0, 0), (0, 0, 255), (255, 0, 0)}
    assert Image.open(next((ds / "train" / "images").glob("*.png"))).size == (32, 32)
    assert sum(res["counts"].values()) == sum(1 for _ in ds.glob("*/images/*.png"))


def test_orientation_follows_geometry_not_index(tmp_path):
    """The same anatomy stored with a flipped x axis gives identical slices."""
    write_case(tmp_path / "a", "p0", seed=3)
    img = nib.load(tmp_path / "a" / "p0" / "image.nii.gz")
    lab = nib.load(tmp_path / "a" / "p0" / "label.nii.gz")
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = img.shape[0] - 1
    aff = img.affine @ flip
    (tmp_path / "b" / "p0").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1], aff), tmp_path / "b" / "p0" / "image.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[::-1], aff), tmp_path / "b" / "p0" / "label.nii.gz")
    from flexunet.data.slicer import load_case_canonical

    cfg = make_cfg(tmp_path)
    va, la = load_case_canonical(list_cases(tmp_path / "a")[0], cfg)
    vb, lb = load_case_canonical(list_cases(tmp_path / "b")[0], cfg)
    assert np.array_equal(va, vb) and np.array_equal(la, lb)


def test_view_round_trip_and_radiological_layout():
    a = np.arange(12).reshape(3, 4)  # (i=x, j=y)
    assert np.array_equal(from_view(to_view(a)), a)
    v = to_view(a)
    assert v.shape == (4, 3)
    # RAS+: i grows to the patient's right, j to anterior; top-left = patient's right, most anterior
    assert v[0, 0] == a[2, 3] and v[-1, -1] == a[0, 0]


def test_hu_window_and_25d_channels():
    hu = np.array([-1000, -100, 75, 250, 3000], np.float32)
    assert hu_to_uint8(hu, (-100, 250)).tolist() == [0, 0, 128, 255, 255]
    vol = np.stack([np.full((4, 4), k, np.uint8) for k in range(5)], axis=2)
    cfg = config_from_dict({"model": {"image_channels": 3, "image_width": 32, "image_height": 32, "num_layers": 3}})
    ctx = context_enabled(cfg.model.image_channels, cfg.slice.context_slices)
    assert ctx
    assert slice_channels(vol, 0, 3, ctx)[:, 0, 0].tolist() == [0, 0, 1]
    assert slice_channels(vol, 2, 3, ctx)[:, 0, 0].tolist() == [1, 2, 3]
    assert slice_channels(vol, 4, 3, ctx)[:, 0, 0].tolist() == [3, 4, 4]
    assert slice_channels(vol, 2, 3, False)[:, 0, 0].tolist() == [2, 2, 2]
    cfg1 = config_from_dict({"model": {"image_channels": 1, "image_width": 32, "image_height": 32, "num_layers": 3}})
    assert not context_enabled(cfg1.model.image_channels, cfg1.slice.context_slices)
    assert slice_channels(vol, 2, 1, False).shape == (1, 4, 4)


def test_on_the_fly_dataset_matches_png_slices(tmp_path):
    for i in range(3):
        write_case(tmp_path / "cases", f"p{i}", seed=i)
    cfg = make_cfg(tmp_path, train_cases=["p0"], valid_cases=["p1"], test_cases=["p2"], background_fraction=0.0)
    slice_cases(cfg, quiet=True)
    from flexunet.data.volume_dataset import VolumeSliceDataset

    case = [c for c in list_cases(cfg.slice.cases_dir) if c.case_id == "p0"]
    ds = VolumeSliceDataset(case, cfg)
    x, y = ds[0]
    k = ds.index[0][2]
    png = np.asarray(Image.open(tmp_path / "ds" / "train" / "images" / f"p0_{k:04d}.png"), np.float32) / 255
    assert np.allclose(x.numpy(), np.moveaxis(png, -1, 0), atol=1e-6)
    assert y.dtype.is_floating_point is False and int(y.max()) <= 2


def test_on_the_fly_dataset_crops_training_patches(tmp_path):
    from flexunet.data.patches import patch_transform
    from flexunet.data.volume_dataset import VolumeSliceDataset

    write_case(tmp_path / "cases", "p0", seed=0)
    cfg = make_cfg(tmp_path, train_cases=["p0"], valid_cases=[], test_cases=[], background_fraction=0.0)
    case = list_cases(cfg.slice.cases_dir)
    full = VolumeSliceDataset(case, cfg)
    h, w = full[0][1].shape
    import dataclasses

    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, patch_size=(h // 2, w // 2),
                                                             patch_foreground_fraction=1.0))
    ds = VolumeSliceDataset(case, cfg, crop=patch_transform(cfg))
    for i in range(len(ds)):
        x, y = ds[i]
        assert tuple(x.shape[1:]) == tuple(y.shape) == (h // 2, w // 2)
        assert int(y.max()) >= 1  # centred near foreground, and every chosen slice holds some
