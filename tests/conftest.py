"""Shared fixtures: tiny synthetic 2D datasets and configs in the original's format."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"
SEED_DIR = SHARED / "seed"

COLORS = {0: (0, 0, 0), 1: (0, 0, 255), 2: (255, 0, 0)}


def make_slice(rng: np.random.Generator, size: int = 64):
    """A grey 'CT-like' image with a bright disc (class 1) holding a dark blob (class 2)."""
    from PIL import Image

    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    r = rng.integers(size // 6, size // 4)
    organ = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    ty, tx = cy + rng.integers(-r // 3, r // 3 + 1), cx + rng.integers(-r // 3, r // 3 + 1)
    tumour = ((yy - ty) ** 2 + (xx - tx) ** 2 < (r // 3) ** 2) & organ
    img = np.full((size, size), 40.0) + rng.normal(0, 8, (size, size))
    img[organ] = 170 + rng.normal(0, 8, organ.sum())
    img[tumour] = 90 + rng.normal(0, 8, tumour.sum())
    lab = organ.astype(np.uint8) + tumour.astype(np.uint8)
    rgb = np.zeros((size, size, 3), np.uint8)
    for cid, col in COLORS.items():
        rgb[lab == cid] = col
    grey = np.clip(img, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, -1)), Image.fromarray(rgb), lab


def write_split(root: Path, split: str, n: int, seed: int, size: int = 64):
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(n):
        img, mask, lab = make_slice(rng, size)
        name = f"{1000 + seed}_{i:03d}"
        img.save(root / split / "images" / f"{name}.png")
        mask.save(root / split / "masks" / f"{name}.png")
        labels[name] = lab
    return labels


CONFIG_TEMPLATE = """; tiny test project in the original's format
[model]
model         = "TensorFlowFlexUNet"
generator     = False
image_width    = {size}
image_height   = {size}
image_channels = 3
num_classes    = 3
base_filters   = 8
base_kernels   = (5,5)
num_layers     = 3
dropout_rate   = 0.0
dilation       = (1,1)
normalization  = True
optimizer      = "Adam"
learning_rate  = 0.005
clipvalue      = 0.5
loss           = "{loss}"
metrics        = ["dice_coef_multiclass"]

[dataset]
class_name    = "ImageCategorizedMaskDataset"

[train]
epochs        = {epochs}
batch_size    = 4
patience      = 10
model_dir     = "./models/"
eval_dir      = "./eval/"
images_dir    = "./dataset/train/images/"
masks_dir     = "./dataset/train/masks/"
learning_rate_reducer = True
reducer_factor     = 0.5
reducer_patience   = 2
epoch_change_infer     = True
epoch_change_infer_dir =  "./epoch_change_infer"
num_infer_images       = 2
num_workers = 0
precision = "32"
seed = 7

[valid]
images_dir = "./dataset/valid/images/"
masks_dir  = "./dataset/valid/masks/"

[test]
images_dir = "./dataset/test/images/"
masks_dir  = "./dataset/test/masks/"

[infer]
images_dir    = "./dataset/test/images/"
output_dir    = "./mini_test_output/"

[image]
color_order = "RGB"

[mask]
mask_file_format = ".png"
rgb_map = {{(0,0,0):0,(0,0,255):1,(255,0,0):2}}
"""


@pytest.fixture
def tiny_project(tmp_path):
    """A project folder with a train/valid/test dataset of 64x64 slices and a config file."""
    root = tmp_path / "project"
    ds = root / "dataset"
    write_split(ds, "train", 16, seed=1)
    write_split(ds, "valid", 4, seed=2)
    write_split(ds, "test", 4, seed=3)
    cfg = root / "train_eval_infer.config"
    cfg.write_text(CONFIG_TEMPLATE.format(size=64, loss="dice_ce", epochs=2))
    return root


def load_bench_module(name: str):
    """Import ``bench/<name>.py`` as the module ``bench_<name>`` (bench/ is not a package)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = mod
    spec.loader.exec_module(mod)
    return mod


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")
