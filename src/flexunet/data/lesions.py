"""Synthetic lesions for training (``[train] synth_lesions``): hypodense blobs painted into the organ.

A liver-tumour model sees few lesions: the demo's seven training phantoms hold 17 (their manifest), and
a lesion at the organ's border or of low contrast may be unlike any of them.  Tumour synthesis
(Hu et al., "Label-free liver tumor segmentation", CVPR 2023; Yang et al., "TumorCP", MICCAI
2021) adds lesions to training images: here, with probability ``synth_lesions``, a training slice
that holds the organ gets ``synth_lesion_count`` new lesions:

* centre: a random pixel of the organ (any foreground class), so lesions at the organ's border
  are as likely as inside it;
* shape: an ellipse of semi-axes ``r * U(0.8, 1.2)`` (``r`` drawn from ``synth_lesion_radius``,
  in pixels of the model's input), rotated, its outline modulated by two random lobes, with a
  soft edge about one pixel wide (partial volume);
* 2.5D: with context slices (z-1, z, z+1 in the channels) the lesion is an ellipsoid: channel
  offset ``d`` shows the cross-section at ``d / h`` of its half-height ``h`` in
  ``synth_lesion_half_slices`` (so a neighbour slice may show a smaller lesion, or none);
* intensity: the image is darkened by ``contrast`` HU (``synth_lesion_contrast``, converted with
  ``[slice] hu_window``), a little more towards the centre (up to 1.4x, a necrotic core) — the
  image's own noise and texture stay, as they would in a scan;
* only inside the organ of the centre slice (the adjacent slices' organ masks are not known);
  the centre slice's pixels whose lesion weight is above one half become ``synth_lesion_class``.

It runs on the ``[0, 1]`` image at the model size, before the ``[augmentor]`` transforms, so the
geometric ones deform synthetic and real lesions alike.  Validation, evaluation and inference never
see it.  Written here rather than taken from a library: MONAI has no lesion synthesis, and the
published implementations work on 3D volumes in HU, not on the 2.5D slices this pipeline trains on.
"""
from __future__ import annotations

import math

import numpy as np

from ..config.rules import context_enabled


def paint_lesions(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, count: tuple[int, int],
                  radius: tuple[float, float], contrast: tuple[float, float], half_slices: tuple[float, float],
                  offsets: tuple[int, ...], lesion_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``U{count}`` lesions into ``image`` (C, H, W, [0, 1]) and ``mask`` (H, W); see the module
    docstring.  ``contrast`` is in image units (fraction of the window), ``offsets`` the slice offset
    of each channel (0 for all without 2.5D context).  Returns new arrays; a slice without organ is
    returned unchanged."""
    organ = mask > 0
    if not organ.any():
        return image, mask
    image = np.array(image, dtype=np.float32, copy=True)
    mask = np.array(mask, copy=True)
    H, W = mask.shape
    ys, xs = np.nonzero(organ)
    n = int(rng.integers(count[0], count[1] + 1))
    for _ in range(n):
        j = int(rng.integers(len(ys)))
        cy, cx = float(ys[j]), float(xs[j])
        r = float(rng.uniform(*radius))
        a, b = r * rng.uniform(0.8, 1.2), r * rng.uniform(0.8, 1.2)
        ang = rng.uniform(0, math.pi)
        lobes = rng.uniform(-0.12, 0.12, size=2)
        phases = rng.uniform(0, 2 * math.pi, size=2)
        h = float(rng.uniform(*half_slices))
        c = float(rng.uniform(*contrast))
        core = float(rng.uniform(0.0, 0.4))
        ext = int(math.ceil(max(a, b) * 1.3 + 2))
        y0, y1 = max(0, int(cy) - ext), min(H, int(cy) + ext + 1)
        x0, x1 = max(0, int(cx) - ext), min(W, int(cx) + ext + 1)
        gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = gy - cy, gx - cx
        ca, sa = math.cos(ang), math.sin(ang)
        u, v = dx * ca + dy * sa, -dx * sa + dy * ca
        theta = np.arctan2(v, u)
        outline = 1.0 + lobes[0] * np.cos(2 * theta + phases[0]) + lobes[1] * np.cos(3 * theta + phases[1])
        q = np.sqrt((u / a) ** 2 + (v / b) ** 2) / outline  # 1 on the outline
        inside = organ[y0:y1, x0:x1]
        for ch, d in enumerate(offsets):
            s2 = 1.0 - (d / h) ** 2
            if s2 <= 0:
                continue
            qd = q / math.sqrt(s2)
            # soft edge about one pixel wide: weight 1/2 on the outline
            w = 1.0 / (1.0 + np.exp((qd - 1.0) * min(a, b) * math.sqrt(s2) / 0.6))
            w *= inside
            depth = c * (1.0 + core * np.clip(1.0 - qd, 0.0, 1.0))
            image[ch, y0:y1, x0:x1] -= w * depth
            if d == 0:
                mask[y0:y1, x0:x1][w > 0.5] = lesion_class
    np.clip(image, 0.0, 1.0, out=image)
    return image, mask


class LesionPainter:
    """``(image, mask, rng) -> (image, mask)``: with probability ``p``, :func:`paint_lesions` with
    ``kwargs``.  A class of plain numbers (not a closure) so it pickles into DataLoader workers
    started with spawn, like :class:`~flexunet.data.augment.Augmenter`."""

    def __init__(self, p: float, **kwargs):
        self.p = float(p)
        self.kwargs = kwargs

    def __call__(self, image, mask, rng):
        if rng.uniform() >= self.p:
            return image, mask
        return paint_lesions(image, mask, rng, **self.kwargs)


def lesion_transform(cfg):
    """A :class:`LesionPainter` for ``[train] synth_lesions``; None when that is 0."""
    t = cfg.train
    p = float(t.synth_lesions)
    if p <= 0:
        return None
    lo, hi = (float(v) for v in cfg.slice.hu_window)
    c = cfg.model.image_channels
    if c == 3 and context_enabled(c, cfg.slice.context_slices):
        offsets = (-1, 0, 1)
    else:
        offsets = (0,) * c
    return LesionPainter(p, count=tuple(int(v) for v in t.synth_lesion_count),
                         radius=tuple(float(v) for v in t.synth_lesion_radius),
                         contrast=tuple(float(v) / (hi - lo) for v in t.synth_lesion_contrast),
                         half_slices=tuple(float(v) for v in t.synth_lesion_half_slices),
                         offsets=offsets, lesion_class=int(t.synth_lesion_class))


class Chain:
    """``(image, mask, rng)`` transforms applied left to right (picklable)."""

    def __init__(self, transforms):
        self.transforms = tuple(transforms)

    def __call__(self, image, mask, rng):
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask


def chain(*transforms):
    """Compose ``(image, mask, rng)`` transforms left to right, skipping None; None when all are."""
    ts = [t for t in transforms if t is not None]
    if not ts:
        return None
    return ts[0] if len(ts) == 1 else Chain(ts)


class ContextFlip:
    """With probability ``p``, the 2.5D context channels in reverse order (z+1, z, z-1): the model
    learns that a lesion seen in the slice above is no different from one seen below, as ``[infer]
    tta_context_flip`` assumes (MONAI's RandFlip along z, for a slice with its neighbours)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, image, mask, rng):
        if rng.random() < self.p:
            image = np.ascontiguousarray(image[::-1])
        return image, mask


def training_augment(cfg):
    """The training items' transform before cropping: synthetic lesions, the context flip, then
    ``[augmentor]``."""
    from .augment import build_augmenter

    flip = ContextFlip(float(cfg.train.context_flip)) if cfg.train.context_flip > 0 else None
    return chain(lesion_transform(cfg), flip, build_augmenter(cfg))
