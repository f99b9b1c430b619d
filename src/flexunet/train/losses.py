"""Losses chosen by name, mapped to MONAI where MONAI has them.

All losses take logits ``(N, C, H, W)`` and integer targets ``(N, H, W)``.
The original's names are accepted: ``dice_loss``/``bce_dice_loss``/``iou_loss``/
``jaccard_loss`` map to their multiclass counterparts.
"""
from __future__ import annotations

from ..config.rules import LOSS_ALIASES, LOSS_NAMES  # noqa: F401  (names shared with the config validator)


def build_loss(name: str):
    """Return a callable ``loss(logits, target_long) -> scalar``."""
    import torch.nn.functional as F
    from monai.losses import DiceCELoss, DiceLoss, FocalLoss, TverskyLoss

    kind = LOSS_ALIASES[name]
    if kind == "ce":
        def ce(logits, target):
            return F.cross_entropy(logits, target)
        return ce
    common = dict(to_onehot_y=True, softmax=True, include_background=True)
    if kind == "dice":
        m = DiceLoss(**common, batch=True)
    elif kind == "dice_ce":
        m = DiceCELoss(**common, batch=True)
    elif kind == "jaccard":
        m = DiceLoss(**common, jaccard=True, batch=True)
    elif kind == "tversky":
        m = TverskyLoss(**common, alpha=0.3, beta=0.7, batch=True)
    else:  # focal
        m = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)

    def monai_loss(logits, target):
        return m(logits.float(), target.unsqueeze(1))
    monai_loss.module = m  # type: ignore[attr-defined]
    return monai_loss
