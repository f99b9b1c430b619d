"""Random training patches (nnU-Net style): crop each training item to ``[train] patch_size``.

A model trained on whole 256x256 slices spends most of each step on background and liver; a
lesion of 20 voxels is a few hundred-thousandths of the pixels it sees.  nnU-Net trains on patches
and forces a share of them (a third by default) to be centred on foreground.  Here, with
``patch_size = (h, w)`` and ``patch_foreground_fraction = f``, each training item (after
augmentation, at the model's image size) is cropped to ``h x w``:

* with probability ``f``, around a random pixel of a foreground class present in the mask
  (``oversample_class`` when it is set and present, else any foreground class present, chosen
  uniformly), shifted by up to a quarter of the patch so the target is not always in the middle;
* otherwise at a uniformly random position.

Validation, evaluation and inference see whole images: the U-Net is fully convolutional, so a
model trained on patches runs on any size divisible by ``2^(num_layers-1)``.  The crop is a few
lines of numpy indexing; MONAI's ``RandCropByLabelClasses`` does the same on dictionaries of
channel-first tensors, but would add a conversion per item for no gain here.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def random_patch(image: np.ndarray, mask: np.ndarray, size: Sequence[int], fg_fraction: float,
                 rng: np.random.Generator, prefer_class: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``image`` (C, H, W) and ``mask`` (H, W) to ``size`` = (h, w); see the module docstring."""
    ph, pw = int(size[0]), int(size[1])
    H, W = mask.shape
    if ph > H or pw > W:
        raise ValueError(f"patch {ph}x{pw} is larger than the image {H}x{W}")
    if (ph, pw) == (H, W):
        return image, mask
    top = left = None
    if fg_fraction > 0 and rng.uniform() < fg_fraction:
        present = [int(c) for c in np.unique(mask) if c > 0]
        if present:
            cls = prefer_class if prefer_class in present else present[int(rng.integers(len(present)))]
            ys, xs = np.nonzero(mask == cls)
            j = int(rng.integers(len(ys)))
            cy = int(ys[j]) + int(rng.integers(-(ph // 4), ph // 4 + 1))
            cx = int(xs[j]) + int(rng.integers(-(pw // 4), pw // 4 + 1))
            top = min(max(cy - ph // 2, 0), H - ph)
            left = min(max(cx - pw // 2, 0), W - pw)
    if top is None:
        top = int(rng.integers(0, H - ph + 1))
        left = int(rng.integers(0, W - pw + 1))
    return image[:, top:top + ph, left:left + pw], mask[top:top + ph, left:left + pw]


class PatchCropper:
    """``(image, mask, rng) -> (image, mask)``: :func:`random_patch` with fixed settings.  A class of
    plain values (not a closure) so it pickles into spawn-started DataLoader workers."""

    def __init__(self, size: Sequence[int], fg_fraction: float, prefer_class: Optional[int] = None):
        self.size, self.fg_fraction, self.prefer_class = tuple(size), float(fg_fraction), prefer_class

    def __call__(self, image, mask, rng):
        return random_patch(image, mask, self.size, self.fg_fraction, rng, self.prefer_class)


def patch_transform(cfg):
    """A :class:`PatchCropper` for ``cfg.train.patch_size``; None without one."""
    t = cfg.train
    if not t.patch_size:
        return None
    return PatchCropper(t.patch_size, t.patch_foreground_fraction, t.oversample_class)
