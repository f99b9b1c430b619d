"""2D slice metrics: the original's ``dice_coef_multiclass`` and per-class hard Dice / IoU.

``dice_coef_multiclass`` is kept for comparability with TensorFlowFlexUNet's
figures.  It sums over height, width *and classes* with the background
included, so it behaves like a soft pixel accuracy (an all-background
prediction on a liver slice still scores ~0.9).  The per-class figures below
are the ones to read: hard argmax labels, every non-background class, both
the mean over images and the Dice pooled over the whole set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def dice_coef_multiclass(onehot, probs, smooth: float = 1.0):
    """Original metric: mean over the batch of (2*sum(y*p)+1)/(sum(y)+sum(p)+1), sums over H, W and C.

    Works on torch tensors or numpy arrays of shape (N, C, H, W).
    """
    dims = (1, 2, 3)
    inter = (onehot * probs).sum(dims)
    total = onehot.sum(dims) + probs.sum(dims)
    return ((2.0 * inter + smooth) / (total + smooth)).mean()


@dataclass
class SegmentationMeter:
    """Accumulates per-class hard-label counts over images.

    ``update(pred, target)`` takes integer label arrays (N, H, W).  Per-image
    Dice/IoU of a class are averaged over the images where the class appears in
    the truth or the prediction (an image where both are empty says nothing);
    pooled figures sum TP/FP/FN over all images first.
    """

    num_classes: int
    tp: np.ndarray = field(init=False)
    fp: np.ndarray = field(init=False)
    fn: np.ndarray = field(init=False)
    dice_sum: np.ndarray = field(init=False)
    iou_sum: np.ndarray = field(init=False)
    n_present: np.ndarray = field(init=False)
    soft_dice_sum: float = 0.0
    n_images: int = 0

    def __post_init__(self):
        z = lambda: np.zeros(self.num_classes, dtype=np.float64)  # noqa: E731
        self.tp, self.fp, self.fn, self.dice_sum, self.iou_sum, self.n_present = z(), z(), z(), z(), z(), z()

    def update(self, pred, target, soft_dice: float | None = None, n: int | None = None) -> None:
        pred = np.asarray(pred).reshape(len(pred), -1)
        target = np.asarray(target).reshape(len(target), -1)
        for c in range(1, self.num_classes):
            p, t = pred == c, target == c
            tp = np.logical_and(p, t).sum(1).astype(np.float64)
            fp = np.logical_and(p, ~t).sum(1).astype(np.float64)
            fn = np.logical_and(~p, t).sum(1).astype(np.float64)
            self.tp[c] += tp.sum()
            self.fp[c] += fp.sum()
            self.fn[c] += fn.sum()
            present = (tp + fp + fn) > 0
            self.n_present[c] += present.sum()
            self.dice_sum[c] += (2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])).sum()
            self.iou_sum[c] += (tp[present] / (tp[present] + fp[present] + fn[present])).sum()
        if soft_dice is not None:
            k = n if n is not None else len(pred)
            self.soft_dice_sum += soft_dice * k
        self.n_images += len(pred)

    def compute(self, class_names: list[str] | None = None) -> dict[str, float]:
        names = class_names or [f"class_{i}" for i in range(self.num_classes)]
        out: dict[str, float] = {}
        mean_d, mean_i = [], []
        for c in range(1, self.num_classes):
            denom = 2 * self.tp[c] + self.fp[c] + self.fn[c]
            pooled_dice = 2 * self.tp[c] / denom if denom > 0 else 1.0
            pooled_iou = self.tp[c] / (self.tp[c] + self.fp[c] + self.fn[c]) if denom > 0 else 1.0
            npres = self.n_present[c]
            out[f"{names[c]}_dice_mean"] = float(self.dice_sum[c] / npres) if npres else math.nan
            out[f"{names[c]}_dice_pooled"] = float(pooled_dice)
            out[f"{names[c]}_iou_mean"] = float(self.iou_sum[c] / npres) if npres else math.nan
            out[f"{names[c]}_iou_pooled"] = float(pooled_iou)
            out[f"{names[c]}_images"] = float(npres)
            mean_d.append(pooled_dice)
            mean_i.append(pooled_iou)
        out["mean_dice_pooled"] = float(np.mean(mean_d)) if mean_d else math.nan
        out["mean_iou_pooled"] = float(np.mean(mean_i)) if mean_i else math.nan
        if self.n_images and self.soft_dice_sum:
            out["dice_coef_multiclass"] = self.soft_dice_sum / self.n_images
        return out
