"""flexunet.data.stats on a tiny synthetic dataset."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flexunet.config import config_from_dict
from flexunet.data.stats import dataset_stats, format_stats, run_stats, write_stats_chart
from flexunet.errors import DataError

COLOURS = np.array([(0, 0, 0), (0, 0, 255), (255, 0, 0)], dtype=np.uint8)


def write_pair(split_dir, name, ids):
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(ids.shape + (3,), 100, np.uint8)).save(split_dir / "images" / f"{name}.png")
    Image.fromarray(COLOURS[ids]).save(split_dir / "masks" / f"{name}.png")


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    a = np.zeros((10, 10), np.int64)
    a[:5, :] = 1                      # 50 liver
    b = np.zeros((10, 10), np.int64)
    b[:2, :5] = 1                     # 10 liver
    b[9, :] = 2                       # 10 tumour
    c = np.zeros((10, 10), np.int64)  # background only
    write_pair(root / "train", "a", a)
    write_pair(root / "train", "b", b)
    write_pair(root / "train", "c", c)
    write_pair(root / "valid", "v", b)
    return root


def test_stats_counts(dataset):
    stats = dataset_stats(dataset)  # default rgb_map
    assert stats["num_classes"] == 3
    assert set(stats["splits"]) == {"train", "valid"}  # no test folder
    train = stats["splits"]["train"]
    assert train["images"] == 3
    assert train["pixels"] == 300
    assert train["class_pixels"] == [230, 60, 10]
    assert np.allclose(train["pixel_fraction"], [230 / 300, 60 / 300, 10 / 300])
    assert train["slices_with_class"] == [3, 2, 1]
    valid = stats["splits"]["valid"]
    assert valid["images"] == 1 and valid["slices_with_class"] == [1, 1, 1]


def test_format_and_chart(dataset, tmp_path, capsys):
    stats = dataset_stats(dataset)
    text = format_stats(stats)
    lines = text.splitlines()
    assert any(line.startswith("train") and " 3 " in line for line in lines)
    assert "76.667" in text and "slices c2" in text
    out = write_stats_chart(stats, tmp_path / "charts" / "stats.png")
    with Image.open(out) as chart:
        assert chart.format == "PNG" and chart.size[0] > 100
    assert [p.name for p in out.parent.iterdir()] == ["stats.png"]  # no temp file left

    cfg = config_from_dict({"model": {"image_width": 64, "image_height": 64, "num_layers": 3}}, base_dir=tmp_path)
    res = run_stats(dataset, cfg, tmp_path / "run.png")
    assert res["splits"]["train"]["images"] == 3
    assert (tmp_path / "run.png").is_file()
    assert "train" in capsys.readouterr().out


def test_stats_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        dataset_stats(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="none of the split folders"):
        dataset_stats(tmp_path / "empty")
