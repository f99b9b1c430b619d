"""Class oversampling ([train] oversample_class / oversample_fraction)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flexunet.config import load_config
from flexunet.data.dataset2d import SliceDataset
from flexunet.data.images import find_pairs
from flexunet.data.sampling import EpochWeightedSampler, build_sampler, class_presence, oversample_weights
from flexunet.errors import ConfigError


def _strip_tumour(mask_path: Path) -> None:
    """Repaint a colour mask's tumour (red) as liver (blue)."""
    rgb = np.array(Image.open(mask_path).convert("RGB"))
    red = (rgb == (255, 0, 0)).all(-1)
    rgb[red] = (0, 0, 255)
    Image.fromarray(rgb).save(mask_path)


def _tumour_free(project: Path, keep: int) -> list[bool]:
    """Leave the tumour in the first ``keep`` training masks only; return the expected presence."""
    masks = sorted((project / "dataset" / "train" / "masks").glob("*.png"))
    for m in masks[keep:]:
        _strip_tumour(m)
    return [i < keep for i in range(len(masks))]


@pytest.mark.parametrize("n,n_pos,f", [(100, 10, 0.33), (50, 1, 0.5), (1000, 200, 0.25), (7, 3, 0.9)])
def test_weights_give_the_requested_share(n, n_pos, f):
    present = np.zeros(n, bool)
    present[:n_pos] = True
    w = oversample_weights(present, f)
    share = (w * present).sum() / w.sum()
    assert share == pytest.approx(max(f, n_pos / n))
    assert (w[~present] == 1).all()


def test_weights_uniform_when_natural_share_is_enough_or_class_absent():
    assert (oversample_weights(np.array([1, 1, 0, 0], bool), 0.3) == 1).all()   # natural 0.5 >= 0.3
    assert (oversample_weights(np.zeros(5, bool), 0.5) == 1).all()              # nothing to oversample
    assert (oversample_weights(np.ones(5, bool), 0.5) == 1).all()


def test_sampler_draws_the_share_and_is_deterministic_per_epoch():
    present = np.zeros(200, bool)
    present[:10] = True  # natural share 0.05
    s = EpochWeightedSampler(oversample_weights(present, 0.4), 5000, seed=3)
    s.set_epoch(0)
    a = list(s)
    assert len(a) == len(s) == 5000 and all(0 <= i < 200 for i in a)
    assert present[a].mean() == pytest.approx(0.4, abs=0.03)
    assert list(s) == a                      # same epoch: same draw (exact resume)
    s.set_epoch(1)
    assert list(s) != a                      # next epoch: another draw
    s2 = EpochWeightedSampler(oversample_weights(present, 0.4), 5000, seed=3)
    s2.set_epoch(1)
    assert list(s2) == list(s)


def test_class_presence_reads_the_masks(tiny_project):
    expected = _tumour_free(tiny_project, keep=3)
    cfg = load_config(tiny_project / "train_eval_infer.config")
    d = tiny_project / "dataset" / "train"
    ds = SliceDataset(find_pairs(d / "images", d / "masks", ".png"), cfg)
    assert class_presence(ds, 2).tolist() == expected
    assert class_presence(ds, 1).all()
    sampler, msg = build_sampler(ds, 2, 0.5, seed=0)
    assert "3 of 16" in msg and "0.50" in msg
    assert build_sampler(ds, None, 0.5, seed=0) == (None, "")


def test_class_presence_on_volume_slices():
    class FakeVolumes:  # the attributes VolumeSliceDataset exposes
        volumes = [(None, np.stack([np.zeros((4, 4)), np.full((4, 4), 2), np.ones((4, 4))], -1))]
        index = [(0, 0), (0, 1), (0, 2)]

    assert class_presence(FakeVolumes(), 2).tolist() == [False, True, False]


@pytest.mark.parametrize("key,value,needle", [("oversample_class", "3", "oversample_class = 3"),
                                              ("oversample_class", "0", "oversample_class = 0"),
                                              ("oversample_fraction", "1.0", "oversample_fraction = 1.0")])
def test_config_errors(tiny_project, key, value, needle):
    p = tiny_project / "train_eval_infer.config"
    p.write_text(p.read_text().replace("[train]\n", f"[train]\n{key} = {value}\n"))
    with pytest.raises(ConfigError, match=needle):
        load_config(p)


def test_train_with_oversampling_through_the_cli(tiny_project, capsys, monkeypatch):
    from flexunet.cli import main

    _tumour_free(tiny_project, keep=2)
    monkeypatch.chdir(tiny_project)
    rc = main(["train", "train_eval_infer.config", "--set", "train.epochs=1", "--set", "train.oversample_class=2",
               "--set", "train.oversample_fraction=0.5", "--set", "train.epoch_change_infer=False"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "oversampling class 2: 2 of 16 training slices hold it" in out
    assert (tiny_project / "models" / "best.pt").exists()
