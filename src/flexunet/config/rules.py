"""Pure rules about config values, shared by the validator and the modules that apply them.

Nothing here reads a config object: callers pass the values.  The module
imports nothing from FlexUNet, so ``config/`` stays below every other package
while ``data/`` and ``train/`` re-use the same definitions.
"""
from __future__ import annotations

#: ``[model] loss`` name -> canonical loss; the original's names map to their multiclass counterparts
LOSS_ALIASES = {
    "categorical_crossentropy": "ce",
    "ce": "ce",
    "cross_entropy": "ce",
    "dice": "dice",
    "dice_loss": "dice",
    "dice_ce": "dice_ce",
    "dicece": "dice_ce",
    "bce_dice_loss": "dice_ce",
    "iou_loss": "jaccard",
    "jaccard_loss": "jaccard",
    "jaccard": "jaccard",
    "focal": "focal",
    "focal_loss": "focal",
    "tversky": "tversky",
    "tversky_loss": "tversky",
}
#: every accepted ``[model] loss`` value
LOSS_NAMES = tuple(LOSS_ALIASES)


def context_enabled(image_channels: int, context_slices: bool | None) -> bool:
    """Whether a slice's channels are its neighbours (2.5D context).

    Args:
        image_channels: ``[model] image_channels``.
        context_slices: ``[slice] context_slices``; None means "on for 3 channels".

    Returns:
        True when the channels of slice ``k`` are slices ``k-1, k, k+1``.
    """
    return (image_channels == 3) if context_slices is None else bool(context_slices)


#: ``[slice] planes`` values
PLANES = ("axial", "coronal", "sagittal")
