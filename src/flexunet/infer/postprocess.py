"""Label-volume postprocessing: largest liver component, tumour only inside the liver, hole filling,
two optional tumour filters (``[infer] min_tumour_mm3`` and ``tumour_liver_contact``) and an optional
intensity refinement of the tumours found (``[infer] tumour_grow``)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..metrics.volumetry import bounding_box

_CONN26 = np.ones((3, 3, 3), bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean volume (labelled inside its bounding box only)."""
    box = bounding_box(mask)
    if box is None:
        return mask
    lab, n = ndimage.label(mask[box], structure=_CONN26)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    out = np.zeros_like(mask, dtype=bool)
    out[box] = lab == sizes.argmax()
    return out


def filter_tumours(labels: np.ndarray, min_voxels: int = 0, liver_contact: float = 0.0, liver: int = 1,
                   tumour: int = 2) -> np.ndarray:
    """Drop tumour components (26-connected) that are unlikely lesions of the organ:

    * fewer than ``min_voxels`` voxels: they become ``liver`` (a speck of noise inside the organ);
    * less than ``liver_contact`` of the voxels around them in their own slices (8-neighbourhood)
      labelled ``liver``: they become background (a dark gap or a neighbouring organ beside the
      liver; a lesion of the liver, even one at its surface, is mostly surrounded by liver).

    Returns ``labels`` itself when neither filter is on or there is no tumour."""
    if min_voxels <= 0 and liver_contact <= 0:
        return labels
    box = bounding_box(labels == tumour)
    if box is None:
        return labels
    # inside the tumours' bounding box widened by one voxel (the in-plane ring below reaches one further)
    crop = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in box)
    out = labels.copy()
    out[crop] = _filter_tumours_in(labels[crop], min_voxels, liver_contact, liver, tumour)
    return out


def _filter_tumours_in(labels, min_voxels, liver_contact, liver, tumour):
    """:func:`filter_tumours` on a crop holding every tumour and its one-voxel ring."""
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
                             tumour_liver_contact: float = 0.0, fill_holes: bool = True) -> np.ndarray:
    """Keep the largest connected liver (liver+tumour) component, drop tumour outside it and, with
    ``fill_holes``, fill its holes slice-wise (holes filled inside the organ become liver; a vessel
    or gallbladder the organ surrounds in a slice is such a hole too).  Then, when asked,
    :func:`filter_tumours`."""
    box = bounding_box(labels >= liver)
    if box is None:
        return labels
    # everything below happens inside the organ's bounding box (a liver fills a tenth of a CT's box),
    # widened by the one voxel the tumour filters' in-plane ring looks past a lesion
    box = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in box)
    sub = labels[box]
    organ = largest_component(sub >= liver)
    filled = organ.copy()
    for k in range(organ.shape[2] if fill_holes else 0):
        filled[:, :, k] = ndimage.binary_fill_holes(organ[:, :, k])
    sub_out = np.zeros_like(sub)
    sub_out[filled] = liver
    sub_out[filled & (sub == tumour)] = tumour
    out = np.zeros_like(labels)
    out[box] = filter_tumours(sub_out, min_tumour_voxels, tumour_liver_contact, liver, tumour)
    return out


def grow_tumours(labels: np.ndarray, image: np.ndarray, spacing, steps: int, sigma_mm: float = 1.5,
                 min_contrast: float = 0.0, shell: int = 4, beyond: int = 2, liver: int = 1,
                 tumour: int = 2) -> np.ndarray:
    """Let each tumour component take in the neighbouring voxels that look like it: an intensity
    refinement after the network, for the rims and end slices of a lesion that the model, which sees
    one slice and its two neighbours, calls liver (or, at the organ's edge, background).

    Per 26-connected tumour component, on the image smoothed with a Gaussian of ``sigma_mm`` (noise
    averaged in 3-D, which the 2.5D model cannot do): ``t`` is the median of the component, ``l`` the
    median of the voxels labelled liver in a ``shell`` voxels thick ring just past the ``steps`` it may
    grow (a rim the model missed does not darken the reference).  Skipped when ``l - t`` is under
    ``min_contrast`` (not a hypodense lesion, or too faint to tell).  Otherwise it grows by up to
    ``steps`` face-neighbour steps into voxels whose value lies in ``t +- (l - t) / 2`` (nearer the
    lesion than the liver, and not much darker than it), inside the organ (liver or tumour labels) or
    at most ``beyond`` voxels outside its outline.  That band is judged on the image smoothed the same
    way but without the voxels more than ``l - t`` darker than the lesion (fat, air), which are never
    taken: smoothed with them, the organ's blurred edge would fall in the band and be grown along.

    ``image`` is in any intensity unit linear in HU (HU, or the windowed uint8 the model sees);
    ``min_contrast`` is in that unit.  ``spacing`` is the voxel size in mm along each axis.  Our own
    code: neither MONAI nor scipy offers a seeded, contrast-relative region growing (MONAI's CRF needs
    its compiled extension).  Returns ``labels`` itself when ``steps`` is 0 or there is no tumour."""
    if steps <= 0:
        return labels
    tumour_box = bounding_box(labels == tumour)
    if tumour_box is None:
        return labels
    sigma = np.array([sigma_mm / max(float(s), 1e-6) for s in spacing])
    reach = np.ceil(4.0 * sigma).astype(int)  # scipy's Gaussian is truncated at 4 sigma
    margin = shell + steps + beyond
    # work inside the tumours' bounding box widened by every window below (margin + 4 sigma + 1): within
    # it, each lesion's window is clipped only where the volume itself ends, so the result is the same
    crop = tuple(slice(max(0, b.start - margin - r - 1), b.stop + margin + r + 1) for b, r in zip(tumour_box, reach))
    out = labels.copy()
    out[crop] = _grow_tumours_in(labels[crop], image[crop], sigma, reach, steps, min_contrast, shell, beyond, liver,
                                 tumour)
    return out


def _grow_tumours_in(labels, image, sigma, reach, steps, min_contrast, shell, beyond, liver, tumour):
    """:func:`grow_tumours` on a crop holding every tumour with its windows."""
    comp, _ = ndimage.label(labels == tumour, structure=_CONN26)
    organ = labels >= liver
    face = ndimage.generate_binary_structure(3, 1)
    out = labels.copy()
    margin = shell + steps + beyond
    for i, box in enumerate(ndimage.find_objects(comp), start=1):
        # smoothed only around this lesion (a whole 512x512x600 float copy would be 630 MB); the window
        # reaches 4 sigma past the working margin, so inside it the values equal a whole-volume filter
        pad = tuple(slice(max(0, s.start - margin - r), s.stop + margin + r) for s, r in zip(box, reach))
        raw = image[pad].astype(np.float32)
        smooth = ndimage.gaussian_filter(raw, sigma)
        seed = comp[pad] == i
        near = ndimage.binary_dilation(seed, face, iterations=steps)  # what growing may reach
        ring = ndimage.binary_dilation(near, face, iterations=shell) & ~near & (labels[pad] == liver)
        if ring.sum() < 10:
            continue
        t, lv = float(np.median(smooth[seed])), float(np.median(smooth[ring]))
        gap = lv - t
        if gap <= 0 or gap < min_contrast:
            continue
        region = organ[pad] if beyond <= 0 else ndimage.binary_dilation(organ[pad], face, iterations=beyond)
        # the band, on the image smoothed without what is much darker than the lesion (fat, air)
        tissue = raw > t - gap
        weight = ndimage.gaussian_filter(tissue.astype(np.float32), sigma)
        tissue_smooth = ndimage.gaussian_filter(np.where(tissue, raw, 0), sigma) / np.maximum(weight, 1e-3)
        allowed = region & tissue & (np.abs(tissue_smooth - t) < gap / 2) & (out[pad] != tumour)
        grown = seed.copy()
        for _ in range(steps):
            new = ndimage.binary_dilation(grown, face) & allowed & ~grown
            if not new.any():
                break
            grown |= new
        out[pad][grown] = tumour
    return out
