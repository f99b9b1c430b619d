"""Label-volume postprocessing: largest liver component, tumour only inside the liver, hole filling,
and two optional tumour filters (``[infer] min_tumour_mm3`` and ``tumour_liver_contact``)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

_CONN26 = np.ones((3, 3, 3), bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask, structure=_CONN26)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


def filter_tumours(labels: np.ndarray, min_voxels: int = 0, liver_contact: float = 0.0, liver: int = 1,
                   tumour: int = 2) -> np.ndarray:
    """Drop tumour components (26-connected) that are unlikely lesions of the organ:

    * fewer than ``min_voxels`` voxels: they become ``liver`` (a speck of noise inside the organ);
    * less than ``liver_contact`` of the voxels around them in their own slices (8-neighbourhood)
      labelled ``liver``: they become background (a dark gap or a neighbouring organ beside the
      liver; a lesion of the liver, even one at its surface, is mostly surrounded by liver).

    Returns ``labels`` itself when neither filter is on or there is no tumour."""
    if (min_voxels <= 0 and liver_contact <= 0) or not (labels == tumour).any():
        return labels
    comp, n = ndimage.label(labels == tumour, structure=_CONN26)
    out = labels.copy()
    ring = np.ones((3, 3, 1), bool)  # in-plane: neighbours in the slice the lesion is seen in
    for i, box in enumerate(ndimage.find_objects(comp), start=1):
        m = comp[box] == i
        if m.sum() < min_voxels:
            out[box][m] = liver
            continue
        if liver_contact > 0:
            pad = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
            mp = comp[pad] == i
            shell = ndimage.binary_dilation(mp, structure=ring) & ~mp
            if shell.any() and (labels[pad][shell] == liver).mean() < liver_contact:
                out[pad][mp] = 0
    return out


def postprocess_liver_tumour(labels: np.ndarray, liver: int = 1, tumour: int = 2, min_tumour_voxels: int = 0,
                             tumour_liver_contact: float = 0.0) -> np.ndarray:
    """Keep the largest connected liver (liver+tumour) component, fill its holes slice-wise,
    drop tumour outside it; holes filled inside the organ become liver.  Then, when asked,
    :func:`filter_tumours`."""
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
    return filter_tumours(out, min_tumour_voxels, tumour_liver_contact, liver, tumour)
