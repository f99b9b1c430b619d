"""flexunet.data.dataset2d: lazy SliceDataset and its DataLoader."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flexunet.config import config_from_dict
from flexunet.data.dataset2d import SliceDataset, build_dataloader
from flexunet.data.images import find_pairs
from flexunet.errors import DataError

COLOURS = np.array([(0, 0, 0), (0, 0, 255), (255, 0, 0)], dtype=np.uint8)


def make_cfg(tmp_path, channels=3, **model):
    return config_from_dict({"model": {"image_width": 64, "image_height": 64, "num_layers": 3,
                                       "image_channels": channels, **model}}, base_dir=tmp_path)


def make_split(tmp_path, n=4, h=48, w=80):
    img_dir, mask_dir = tmp_path / "images", tmp_path / "masks"
    img_dir.mkdir()
    mask_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img_dir / f"s{i}.png")
        ids = np.zeros((h, w), np.int64)
        ids[5:20, 10:40] = 1
        ids[25:40, 50:70] = 2
        Image.fromarray(COLOURS[ids]).save(mask_dir / f"s{i}.png")
    return find_pairs(img_dir, mask_dir, ".png")


@pytest.mark.parametrize("channels", [1, 3])
def test_items_have_right_dtypes_and_shapes(tmp_path, channels):
    pairs = make_split(tmp_path)
    ds = SliceDataset(pairs, make_cfg(tmp_path, channels))
    assert len(ds) == 4 and ds.names == ["s0.png", "s1.png", "s2.png", "s3.png"]
    image, mask = ds[1]
    assert image.dtype == torch.float32 and image.shape == (channels, 64, 64)
    assert mask.dtype == torch.int64 and mask.shape == (64, 64)
    assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    assert set(mask.unique().tolist()) == {0, 1, 2}
    assert torch.equal(ds[-1][1], ds[3][1])


def test_dataset_does_not_cache(tmp_path):
    pairs = make_split(tmp_path, n=2)
    ds = SliceDataset(pairs, make_cfg(tmp_path))
    first = ds[0][0].clone()
    Image.fromarray(np.zeros((48, 80, 3), np.uint8)).save(pairs[0][0])
    assert float(ds[0][0].abs().sum()) == 0.0 and float(first.abs().sum()) > 0


def test_augment_runs_before_normalize_and_is_seeded(tmp_path):
    pairs = make_split(tmp_path, n=3)
    seen = []

    def augment(image, mask, rng):
        assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0  # not normalised yet
        assert mask.dtype == np.int64 and mask.shape == image.shape[1:]
        seen.append(float(rng.random()))
        return image[:, ::-1], mask[::-1]  # negative strides must be handled

    cfg = make_cfg(tmp_path, input_normalize=True)
    plain = SliceDataset(pairs, cfg)
    ds = SliceDataset(pairs, cfg, augment=augment, seed=7)
    image, mask = ds[0]
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 0.02
    assert torch.equal(mask, plain[0][1].flip(0))
    assert torch.allclose(image, plain[0][0].flip(1), atol=1e-5)

    # same seed -> same draws; successive epochs (calls) differ
    seen.clear()
    ds_a = SliceDataset(pairs, cfg, augment=augment, seed=7)
    _ = [ds_a[i] for i in range(3)] + [ds_a[i] for i in range(3)]
    run_a = seen[:]
    seen.clear()
    ds_b = SliceDataset(pairs, cfg, augment=augment, seed=7)
    _ = [ds_b[i] for i in range(3)] + [ds_b[i] for i in range(3)]
    assert seen == run_a
    assert run_a[:3] != run_a[3:]
    seen.clear()
    ds_c = SliceDataset(pairs, cfg, augment=augment, seed=8)
    _ = [ds_c[i] for i in range(3)]
    assert seen != run_a[:3]


def test_size_mismatch_raises_on_load(tmp_path):
    pairs = make_split(tmp_path, n=2)
    Image.fromarray(np.zeros((48, 81, 3), np.uint8)).save(pairs[1][1])
    ds = SliceDataset(pairs, make_cfg(tmp_path))
    ds[0]
    with pytest.raises(DataError, match="is 80x48 but its mask .* is 81x48"):
        ds[1]


def test_empty_pairs_is_error(tmp_path):
    with pytest.raises(DataError, match="no image/mask pairs"):
        SliceDataset([], make_cfg(tmp_path))


def test_build_dataloader(tmp_path):
    ds = SliceDataset(make_split(tmp_path, n=5), make_cfg(tmp_path))
    dl = build_dataloader(ds, batch_size=2, shuffle=False, num_workers=0)
    batches = list(dl)
    assert len(batches) == 3
    images, masks = batches[0]
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    assert masks.shape == (2, 64, 64) and masks.dtype == torch.int64
    assert not dl.pin_memory and not dl.persistent_workers
    assert len(build_dataloader(ds, 2, True, 0, drop_last=True)) == 2
    workers = build_dataloader(ds, batch_size=2, shuffle=True, num_workers=2)
    assert workers.persistent_workers and workers.num_workers == 2 and not workers.pin_memory


def _label_aug(image, mask, rng):
    return image, np.full_like(mask, int(rng.integers(0, 3)))


def test_persistent_workers_reproducible_and_vary_per_epoch(tmp_path):
    ds = SliceDataset(make_split(tmp_path, n=6), make_cfg(tmp_path), augment=_label_aug, seed=0)

    def run():
        torch.manual_seed(1)  # what seed_everything does for the main process
        dl = build_dataloader(ds, batch_size=2, shuffle=False, num_workers=2)  # same order each epoch
        return [[int(v) for _, m in dl for v in m[:, 0, 0]] for _epoch in range(3)]

    first, second = run(), run()
    assert first == second
    assert len({tuple(epoch) for epoch in first}) > 1  # same items, fresh draws each epoch
