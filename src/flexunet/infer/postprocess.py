"""Label-volume postprocessing: largest liver component, tumour only inside the liver, hole filling."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


def postprocess_liver_tumour(labels: np.ndarray, liver: int = 1, tumour: int = 2) -> np.ndarray:
    """Keep the largest connected liver (liver+tumour) component, fill its holes slice-wise,
    drop tumour outside it; holes filled inside the organ become liver."""
    organ = labels >= liver
    if not organ.any():
        return labels
    organ = largest_component(organ)
    filled = np.zeros_like(organ)
    for k in range(organ.shape[2]):
        filled[:, :, k] = ndimage.binary_fill_holes(organ[:, :, k])
    out = np.zeros_like(labels)
    out[filled] = liver
    out[filled & (labels == tumour)] = tumour
    return out
