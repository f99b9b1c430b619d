"""Class oversampling for training: draw slices that contain a rare class (tumour) more often.

nnU-Net forces a third of its patches to contain foreground; on 2D slices the same idea is a
weighted draw.  With ``[train] oversample_class = k`` and ``oversample_fraction = f`` each epoch
draws ``len(dataset)`` items with replacement, weighted so that on average a share ``f`` of them
contains class ``k``.  The epoch length stays the same, so ``epochs``, ``patience`` and the LR
reducer keep their meaning.  When the natural share of such slices is already ``>= f``, or no slice
contains the class, the weights are uniform (a with-replacement shuffle).

``torch.multinomial`` does the drawing.  torch's own ``WeightedRandomSampler`` keeps one generator for
the whole run, so a resumed run would draw other slices; :class:`EpochWeightedSampler` reseeds from
``(seed, epoch)`` instead, which keeps ``--resume`` exact.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import DataError


def class_presence(dataset, class_id: int) -> np.ndarray:
    """``bool`` per item: does its mask contain ``class_id``?  Read once, before training."""
    if hasattr(dataset, "volumes") and hasattr(dataset, "index"):  # VolumeSliceDataset: labels in memory
        out = np.zeros(len(dataset.index), dtype=bool)
        for i, (vi, k) in enumerate(dataset.index):
            out[i] = bool((dataset.volumes[vi][1][:, :, k] == class_id).any())
        return out
    if hasattr(dataset, "pairs"):  # SliceDataset: decode each mask at its native size
        from .images import decode_mask

        return np.array([bool((decode_mask(m, dataset.cfg, resize=False) == class_id).any())
                         for _, m in dataset.pairs], dtype=bool)
    raise DataError(f"{type(dataset).__name__}: cannot oversample a class in this dataset; expected a "
                    "SliceDataset or a VolumeSliceDataset")


def oversample_weights(present: np.ndarray, fraction: float) -> np.ndarray:
    """Per-item weights whose draws hold class-bearing items with probability ``fraction`` (or more)."""
    present = np.asarray(present, dtype=bool)
    n, n_pos = present.size, int(present.sum())
    w = np.ones(n, dtype=np.float64)
    if n_pos == 0 or n_pos == n or n_pos / n >= fraction:
        return w
    # each positive weighs a, each negative 1: n_pos*a / (n_pos*a + n_neg) = fraction
    a = fraction * (n - n_pos) / ((1.0 - fraction) * n_pos)
    w[present] = a
    return w


class EpochWeightedSampler(Sampler):
    """Weighted draws with replacement whose order depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` before every epoch, so a resumed run draws the same items
    as an uninterrupted one.
    """

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int):
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()


def build_sampler(dataset, class_id: int | None, fraction: float, seed: int):
    """A ``WeightedRandomSampler`` for ``dataset`` (None when ``class_id`` is None) and a one-line summary."""
    if class_id is None:
        return None, ""
    present = class_presence(dataset, class_id)
    w = oversample_weights(present, fraction)
    share = float((w * present).sum() / w.sum()) if len(w) else 0.0
    sampler = EpochWeightedSampler(w, len(dataset), seed)
    msg = (f"oversampling class {class_id}: {int(present.sum())} of {len(present)} training slices hold it; "
           f"expected share per epoch {share:.2f} (natural {present.mean() if len(present) else 0:.2f})")
    return sampler, msg
