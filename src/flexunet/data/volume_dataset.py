"""Training straight from CT volumes, no PNG step (``[dataset] class_name = "VolumeSliceDataset"``).

Uses exactly the slicing of :mod:`flexunet.data.slicer` (canonical orientation,
HU window to uint8, 2.5D channels, resize) so a model trained this way is
interchangeable with one trained on ``flexunet slice`` output, in every ``[slice] planes`` plane.  Each volume is
held once as windowed uint8 (a 512x512x200 CT is 52 MB).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .images import normalize_image
from .planes import normalize_planes, to_plane
from .slicer import choose_slices, list_cases, load_case_canonical, slice_sample, split_cases


class VolumeSliceDataset(Dataset):
    """Items are (image float32 (C,H,W), mask int64 (H,W)) slices from labelled canonical cases."""

    def __init__(self, cases, cfg, augment=None, seed: int = 0, crop=None):
        self.cfg = cfg
        self.augment = augment
        self.crop = crop  # training patches (data/patches.py), after augmentation
        self.seed = seed
        self.volumes = []
        self.index: list[tuple[int, str, int]] = []
        rng = np.random.default_rng(cfg.slice.seed)
        planes = normalize_planes(cfg.slice.planes)
        for case in cases:
            vol, lab = load_case_canonical(case, cfg)
            if lab is None:
                raise DataError(f"{case.image}: no label.nii.gz beside it; expected labelled cases for training")
            vi = len(self.volumes)
            self.volumes.append((vol, lab))
            for plane in planes:
                self.index += [(vi, plane, k) for k in choose_slices(to_plane(lab, plane), cfg, rng)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        vi, plane, k = self.index[i]
        vol, lab = self.volumes[vi]
        img_u8, mask = slice_sample(to_plane(vol, plane), to_plane(lab, plane), k, self.cfg)
        img = img_u8.astype(np.float32) / 255.0
        mask = mask.astype(np.int64)
        if self.augment is not None or self.crop is not None:
            rng = np.random.default_rng([self.seed, torch.initial_seed() % 2**32, i])
            if self.augment is not None:
                img, mask = self.augment(img, mask, rng)
            if self.crop is not None:
                img, mask = self.crop(img, mask, rng)
        img = normalize_image(img, self.cfg.model.input_normalize)
        return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)), torch.from_numpy(
            np.ascontiguousarray(mask, dtype=np.int64))


def build_volume_datasets(cfg):
    from .lesions import training_augment
    from .patches import patch_transform

    cases = list_cases(cfg.slice.cases_dir)
    split = split_cases([c.case_id for c in cases], cfg)
    train = [c for c in cases if split.get(c.case_id) == "train"]
    valid = [c for c in cases if split.get(c.case_id) == "valid"]
    if not valid:
        raise DataError(f"{cfg.slice.cases_dir}: the split leaves no validation case; expected [slice] "
                        "split_ratios with valid > 0 or valid_cases")
    return (VolumeSliceDataset(train, cfg, augment=training_augment(cfg), seed=cfg.train.seed,
                               crop=patch_transform(cfg)),
            VolumeSliceDataset(valid, cfg, seed=cfg.train.seed))
