"""2D image/mask dataset that reads one pair per item (the dataset never sits in RAM)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .images import check_same_size, decode_mask, load_image, normalize_image

#: ``augment(image (C,H,W) float32 in [0,1], mask (H,W) int64, rng) -> (image, mask)``
Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], "tuple[np.ndarray, np.ndarray]"]


class SliceDataset(Dataset):
    """``(image float32 (C, H, W), mask int64 (H, W))`` pairs read lazily from ``pairs``.

    ``pairs`` is a list of ``(image_path, mask_path)`` (see
    :func:`~flexunet.data.images.find_pairs`).  Each item checks that image and
    mask have the same native size, loads and resizes both to the model size,
    applies ``augment`` (when given) to the ``[0, 1]`` image and the id mask,
    then :func:`~flexunet.data.images.normalize_image`.

    Augmentation randomness: each item gets a fresh ``numpy`` generator seeded
    from ``(seed, torch.initial_seed(), index, n)``, where ``n`` counts the
    items this process has served.  ``torch.initial_seed()`` differs per
    DataLoader worker and is fixed by Lightning's ``seed_everything(workers=True)``;
    the counter makes epochs differ even with persistent workers (whose seed
    does not change between epochs).  The run is therefore reproducible for a
    given seed, batch order and worker count.
    """

    def __init__(self, pairs: Sequence[tuple], cfg, augment: Optional[Augment] = None, seed: int = 0,
                 crop: Optional[Augment] = None):
        self.pairs = [(Path(i), Path(m)) for i, m in pairs]
        if not self.pairs:
            raise DataError("dataset has no image/mask pairs; expected at least one (check images_dir/masks_dir)")
        self.cfg = cfg
        self.augment = augment
        self.crop = crop  # training patches (data/patches.py), after augmentation
        self.seed = int(seed)
        self._served = 0
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        """Image file names, in item order."""
        return [p.name for p, _ in self.pairs]

    def _rng(self, index: int) -> np.random.Generator:
        if os.getpid() != self._pid:  # a fresh worker process: restart its counter
            self._pid, self._served = os.getpid(), 0
        self._served += 1
        entropy = [self.seed & 0xFFFFFFFF, torch.initial_seed() % 2**32, int(index), self._served]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair at ``index`` as numpy arrays, before augmentation and normalisation."""
        image_path, mask_path = self.pairs[index]
        check_same_size(image_path, mask_path)
        image = load_image(image_path, self.cfg)
        mask = decode_mask(mask_path, self.cfg, size=image.shape[1:])
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            index += len(self)
        image, mask = self.load(index)
        if self.augment is not None or self.crop is not None:
            rng = self._rng(index)
            if self.augment is not None:
                image, mask = self.augment(image, mask, rng)
            if self.crop is not None:
                image, mask = self.crop(image, mask, rng)
        image = normalize_image(np.asarray(image, dtype=np.float32), self.cfg.model.input_normalize)
        image = np.ascontiguousarray(image, dtype=np.float32)
        mask = np.ascontiguousarray(mask, dtype=np.int64)
        return torch.from_numpy(image), torch.from_numpy(mask)


def build_dataloader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int,
                     drop_last: bool = False, sampler=None) -> DataLoader:
    """A DataLoader with persistent workers when ``num_workers > 0`` and no pinned memory.

    ``worker_init_fn`` is left unset so Lightning can install its own seeding
    (``seed_everything(workers=True)``).  A ``sampler`` replaces ``shuffle``.
    """
    num_workers = max(int(num_workers), 0)
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=bool(shuffle) and sampler is None,
                      sampler=sampler, num_workers=num_workers,
                      drop_last=bool(drop_last), pin_memory=False, persistent_workers=num_workers > 0)
