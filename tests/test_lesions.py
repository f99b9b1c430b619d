"""Synthetic training lesions ([train] synth_lesions, data/lesions.py)."""
from __future__ import annotations

import numpy as np
import pytest

from flexunet.config import load_config
from flexunet.data.dataset2d import SliceDataset
from flexunet.data.images import find_pairs
from flexunet.data.lesions import ContextFlip, chain, lesion_transform, paint_lesions, training_augment
from flexunet.errors import ConfigError

KW = dict(count=(1, 1), radius=(6.0, 6.0), contrast=(0.1, 0.1), half_slices=(1.5, 1.5), lesion_class=2)


def _organ(h=64, w=64):
    """A flat organ (0.5, class 1) in a darker body (0.2): an ellipse filling most of the image."""
    yy, xx = np.mgrid[:h, :w]
    organ = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 < 1
    image = np.where(organ, 0.5, 0.2).astype(np.float32)[None].repeat(3, 0)
    return image, organ.astype(np.int64)


def test_a_lesion_is_darker_lies_in_the_organ_and_is_labelled():
    image, mask = _organ()
    before = image.copy(), mask.copy()
    for seed in range(20):
        im, m = paint_lesions(image, mask, np.random.default_rng(seed), offsets=(0, 0, 0), **KW)
        new = m == 2
        assert new.sum() > 30  # radius 6 px, mostly inside the organ
        assert (mask[new] == 1).all()  # only where the organ was
        # darker by about the contrast (up to 1.4x at a necrotic core) where labelled
        drop = (image - im)[1][new]
        assert 0.05 < drop.mean() <= 0.14 + 1e-6
        # nothing changes outside the organ
        assert (im[:, mask == 0] == image[:, mask == 0]).all()
        assert im.min() >= 0 and im.max() <= 1
    assert (image == before[0]).all() and (mask == before[1]).all()  # inputs untouched


def test_lesions_reach_the_organ_border():
    image, mask = _organ()
    from scipy import ndimage

    border = (mask == 1) & ~ndimage.binary_erosion(mask == 1, iterations=2)
    hits = [(paint_lesions(image, mask, np.random.default_rng(s), offsets=(0, 0, 0), **KW)[1][border] == 2).any()
            for s in range(40)]
    assert 0.1 < np.mean(hits) < 1.0  # centres anywhere in the organ: some lesions touch its edge


def test_context_channels_show_smaller_cross_sections():
    image, mask = _organ()
    im, m = paint_lesions(image, mask, np.random.default_rng(3), offsets=(-1, 0, 1), **KW)
    darkened = [(image[c] - im[c] > 0.05).sum() for c in range(3)]
    assert darkened[1] > darkened[0] > 0 and darkened[1] > darkened[2] > 0
    # a half-height under one slice: the neighbours show nothing
    kw = dict(KW, half_slices=(1.0, 1.0))
    im, _ = paint_lesions(image, mask, np.random.default_rng(3), offsets=(-1, 0, 1), **kw)
    assert (im[0] == image[0]).all() and (im[2] == image[2]).all() and (im[1] < image[1]).any()
    # without context every channel changes alike
    im, _ = paint_lesions(image, mask, np.random.default_rng(3), offsets=(0, 0, 0), **KW)
    assert np.array_equal(im[0], im[1]) and np.array_equal(im[1], im[2])


def test_no_organ_no_change_and_same_seed_same_lesion():
    image, _ = _organ()
    empty = np.zeros((64, 64), np.int64)
    im, m = paint_lesions(image, empty, np.random.default_rng(0), offsets=(0, 0, 0), **KW)
    assert im is image and m is empty
    _, mask = _organ()
    a = paint_lesions(image, mask, np.random.default_rng(9), offsets=(-1, 0, 1), **KW)
    b = paint_lesions(image, mask, np.random.default_rng(9), offsets=(-1, 0, 1), **KW)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_transform_follows_the_config(tiny_project):
    p = tiny_project / "train_eval_infer.config"
    cfg = load_config(p)
    assert lesion_transform(cfg) is None and training_augment(cfg) is None
    cfg = load_config(p, ["train.synth_lesions=1.0", "train.synth_lesion_contrast=(70,70)",
                          "train.synth_lesion_count=(2,2)"])
    t = lesion_transform(cfg)
    image, mask = _organ()
    im, m = t(image, mask, np.random.default_rng(0))
    # 70 HU under the window (-100, 250) is 0.2 of the image range; a necrotic core darkens up to 1.4x
    assert 0.15 < (image - im)[1][m == 2].mean() <= 0.28 + 1e-6
    from scipy import ndimage

    assert 1 <= ndimage.label(m == 2)[1] <= 2  # two lesions (they may touch)
    half = lesion_transform(load_config(p, ["train.synth_lesions=0.5"]))
    rng = np.random.default_rng(1)
    painted = [(half(image, mask, rng)[1] == 2).any() for _ in range(200)]
    assert 0.35 < np.mean(painted) < 0.65


def test_training_dataset_gets_lesions_validation_does_not(tiny_project, monkeypatch):
    from flexunet.train.runner import build_datasets

    p = tiny_project / "train_eval_infer.config"
    monkeypatch.chdir(tiny_project)
    cfg = load_config(p, ["train.synth_lesions=1.0", "train.synth_lesion_count=(3,3)"])
    train, valid = build_datasets(cfg)
    d = tiny_project / "dataset" / "train"
    ref = SliceDataset(find_pairs(d / "images", d / "masks", ".png"), load_config(p))
    more = [(train[i][1] == 2).sum() - (ref[i][1] == 2).sum() for i in range(len(ref))]
    assert all(x >= 0 for x in more) and sum(more) > 0
    assert valid.augment is None


def _plus_one(i, m, r):
    return i + 1, m


def test_chain_skips_none_and_the_transforms_pickle(tiny_project):
    import pickle

    assert chain(None, None) is None
    assert chain(None, _plus_one) is _plus_one
    assert chain(_plus_one, _plus_one)(0, 0, None) == (2, 0)
    # DataLoader workers started with spawn receive the dataset, transforms included, by pickle
    cfg = load_config(tiny_project / "train_eval_infer.config",
                      ["train.synth_lesions=1.0", "model.generator=True", "augmentor.hflip=True"])
    t = pickle.loads(pickle.dumps(training_augment(cfg)))
    image, mask = _organ()
    a = t(image, mask, np.random.default_rng(4))
    b = training_augment(cfg)(image, mask, np.random.default_rng(4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and (a[1] == 2).any()


@pytest.mark.parametrize("override,needle", [
    ("train.synth_lesions=1.5", "synth_lesions = 1.5"),
    ("train.synth_lesion_count=(0,2)", "synth_lesion_count"),
    ("train.synth_lesion_count=(1.5,2)", "synth_lesion_count"),
    ("train.synth_lesion_radius=(8,4)", "synth_lesion_radius"),
    ("train.synth_lesion_contrast=(-5,10)", "synth_lesion_contrast"),
])
def test_config_errors(tiny_project, override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(tiny_project / "train_eval_infer.config", [override])


def test_lesion_class_checked_only_when_synthesis_is_on(tiny_project):
    p = tiny_project / "train_eval_infer.config"
    load_config(p, ["train.synth_lesion_class=7"])  # off: not used, not checked
    with pytest.raises(ConfigError, match="synth_lesion_class = 7"):
        load_config(p, ["train.synth_lesions=0.5", "train.synth_lesion_class=7"])


def test_context_flip_swaps_the_neighbour_slices_only(tiny_project):
    p = tiny_project / "train_eval_infer.config"
    t = training_augment(load_config(p, ["train.context_flip=1.0"]))
    assert isinstance(t, ContextFlip)
    image = np.stack([np.full((8, 8), v, np.float32) for v in (0.1, 0.5, 0.9)])
    mask = np.zeros((8, 8), np.int64)
    mask[2:4, 2:4] = 2
    im, m = t(image, mask, np.random.default_rng(0))
    assert np.array_equal(im, image[::-1]) and im.flags.c_contiguous and m is mask
    half = ContextFlip(0.5)
    rng = np.random.default_rng(1)
    flipped = [half(image, mask, rng)[0][0, 0, 0] == 0.9 for _ in range(200)]
    assert 0.35 < np.mean(flipped) < 0.65
    with pytest.raises(ConfigError, match="context_flip = 1.5"):
        load_config(p, ["train.context_flip=1.5"])
    with pytest.raises(ConfigError, match="context_flip = 0.5: expected 0 without 2.5D context"):
        load_config(p, ["train.context_flip=0.5", "slice.context_slices=False"])
