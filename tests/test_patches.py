"""Training on random patches ([train] patch_size / patch_foreground_fraction)."""
from __future__ import annotations

import numpy as np
import pytest

from flexunet.config import load_config
from flexunet.data.dataset2d import SliceDataset
from flexunet.data.images import find_pairs
from flexunet.data.patches import patch_transform, random_patch
from flexunet.errors import ConfigError


def _image_and_mask(h=64, w=96):
    image = np.arange(3 * h * w, dtype=np.float32).reshape(3, h, w)
    mask = np.zeros((h, w), np.int64)
    mask[5:60, 10:90] = 1          # a large class 1
    mask[50, 85] = 2               # one pixel of class 2, near a corner
    return image, mask


def test_patch_has_the_size_and_the_image_and_mask_stay_aligned():
    image, mask = _image_and_mask()
    rng = np.random.default_rng(0)
    for _ in range(50):
        im, m = random_patch(image, mask, (32, 48), 0.5, rng)
        assert im.shape == (3, 32, 48) and m.shape == (32, 48)
        # the pixel values encode their position: recover the crop's corner and check the mask matches
        top, left = divmod(int(im[0, 0, 0]), 96)
        assert (m == mask[top:top + 32, left:left + 48]).all()


def test_foreground_patches_hold_the_preferred_class():
    image, mask = _image_and_mask()
    rng = np.random.default_rng(1)
    hits = [(random_patch(image, mask, (32, 32), 1.0, rng, prefer_class=2)[1] == 2).any() for _ in range(200)]
    assert all(hits)  # centred within a quarter patch of the only class-2 pixel: always inside
    # without a preference the class is drawn among those present: class 2 in about half the patches
    hits = [(random_patch(image, mask, (32, 32), 1.0, rng)[1] == 2).any() for _ in range(400)]
    assert 0.3 < np.mean(hits) < 0.8


def test_random_patches_cover_the_image_and_rarely_hit_a_small_target():
    image, mask = _image_and_mask()
    rng = np.random.default_rng(2)
    corners, hits = set(), []
    for _ in range(400):
        im, m = random_patch(image, mask, (32, 32), 0.0, rng, prefer_class=2)
        corners.add(divmod(int(im[0, 0, 0]), 96))
        hits.append((m == 2).any())
    tops = {t for t, _ in corners}
    lefts = {x for _, x in corners}
    assert min(tops) == 0 and max(tops) == 32 and min(lefts) == 0 and max(lefts) == 64
    assert np.mean(hits) < 0.35  # the class-2 pixel is in about 1/4 of uniform crops, not all


def test_foreground_patch_falls_back_to_random_without_foreground():
    image, _ = _image_and_mask()
    empty = np.zeros((64, 96), np.int64)
    im, m = random_patch(image, empty, (32, 32), 1.0, np.random.default_rng(3), prefer_class=2)
    assert im.shape == (3, 32, 32) and not m.any()


def test_full_size_patch_is_the_image_and_too_large_is_refused():
    image, mask = _image_and_mask()
    im, m = random_patch(image, mask, (64, 96), 1.0, np.random.default_rng(0))
    assert im is image and m is mask
    with pytest.raises(ValueError, match="larger than the image"):
        random_patch(image, mask, (128, 32), 0.5, np.random.default_rng(0))


def test_dataset_yields_patches_only_when_configured(tiny_project):
    p = tiny_project / "train_eval_infer.config"
    d = tiny_project / "dataset" / "train"
    pairs = find_pairs(d / "images", d / "masks", ".png")
    cfg = load_config(p)
    assert patch_transform(cfg) is None
    assert SliceDataset(pairs, cfg)[0][0].shape == (3, 64, 64)
    cfg = load_config(p, ["train.patch_size=(32,32)", "train.patch_foreground_fraction=1.0", "train.oversample_class=2"])
    import pickle

    ds = pickle.loads(pickle.dumps(SliceDataset(pairs, cfg, crop=patch_transform(cfg), seed=5)))  # spawn workers
    items = [ds[i] for i in range(len(ds))]
    assert all(x.shape == (3, 32, 32) and y.shape == (32, 32) for x, y in items)
    assert all((y == 2).any() for _, y in items)  # every synthetic slice holds tumour: every patch shows it


@pytest.mark.parametrize("value,needle", [("(128,32)", "at most the model's image size"),
                                          ("(30,32)", "multiples of 2"),
                                          ("(32,)", "two positive integers"),
                                          ("(0,32)", "two positive integers")])
def test_patch_size_config_errors(tiny_project, value, needle):
    p = tiny_project / "train_eval_infer.config"
    with pytest.raises(ConfigError, match=needle):
        load_config(p, [f"train.patch_size={value}"])
    with pytest.raises(ConfigError, match="patch_foreground_fraction = 1.5"):
        load_config(p, ["train.patch_foreground_fraction=1.5"])


def test_train_on_patches_validates_on_whole_images(tiny_project, monkeypatch):
    import json

    from flexunet.cli import main

    monkeypatch.chdir(tiny_project)
    rc = main(["--quiet", "train", "train_eval_infer.config", "--set", "train.epochs=2",
               "--set", "train.patch_size=(32,32)", "--set", "train.epoch_change_infer=False"])
    assert rc == 0
    hist = json.loads((tiny_project / "history.json").read_text())
    assert len(hist["val_loss"]) == 2
    # the trained model still segments whole 64x64 images
    assert main(["--quiet", "infer", "train_eval_infer.config"]) == 0
    from PIL import Image

    outs = sorted((tiny_project / "mini_test_output").glob("*.png"))
    assert outs and all(Image.open(o).size == (64, 64) for o in outs)
