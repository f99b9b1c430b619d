"""Reading images and masks from disk: pure numpy/PIL, no torch.

Three fixes over the original TensorFlowFlexUNet:

* images and masks are paired by file **stem**, never by list position
  (:func:`find_pairs`);
* colour masks are decoded to class ids at their **native** resolution and
  only the ids are resized (nearest neighbour), so resizing never invents
  colours (:func:`decode_mask`);
* everything is read one file at a time, so the dataset is never held in RAM
  (see :mod:`flexunet.data.dataset2d`).

Conventions
-----------
* Images are returned as ``float32`` arrays ``(C, H, W)`` in ``[0, 1]``.
* ``[image] color_order`` is the channel order the **model** sees.  Files are
  decoded as RGB; with ``BGR`` the channel axis is reversed, so channel 0 holds
  blue.  :func:`overlay` reverses it back for display.
* Masks are returned as ``int64`` arrays ``(H, W)`` of class ids
  ``0 .. num_classes-1``; class 0 is the background.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image

from ..errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

#: file extensions read as images (lower case)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: file extensions read as masks (lower case)
MASK_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npz", ".npy")
#: keys tried, in order, when a mask is an ``.npz`` archive (else its first array)
NPZ_KEYS = ("mask", "label", "arr_0")

#: extensions treated as the same format when preferring ``mask_file_format``
_EXT_FAMILY = {".jpeg": ".jpg", ".tif": ".tiff"}
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


# --------------------------------------------------------------------------- folders and pairing


def _family(ext: str) -> str:
    ext = ext.lower()
    if ext and not ext.startswith("."):
        ext = "." + ext
    return _EXT_FAMILY.get(ext, ext)


def _files_with(folder: Path, exts: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts)


def list_images(folder: PathLike) -> list[Path]:
    """The image files (:data:`IMAGE_EXTS`, any case) directly in ``folder``, sorted by name.

    Hidden files (``.name``) are skipped.  Raises :class:`DataError` when the
    folder is missing or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} not found; expected a folder of {', '.join(IMAGE_EXTS)} files")
    files = _files_with(folder, IMAGE_EXTS)
    if not files:
        raise DataError(f"image folder {folder} holds no images ({', '.join(IMAGE_EXTS)})")
    return files


def _names(paths: Sequence[Path], limit: int = 5) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    more = f", ... (+{len(paths) - limit} more)" if len(paths) > limit else ""
    return f"[{shown}{more}]"


def find_pairs(images_dir: PathLike, masks_dir: PathLike, mask_ext: str = ".png") -> list[tuple[Path, Path]]:
    """Pair every image in ``images_dir`` with the mask of the same stem in ``masks_dir``.

    Masks may have any of :data:`MASK_EXTS`; when a stem has masks in several
    formats, the one matching ``mask_ext`` (``.jpg``/``.jpeg`` and
    ``.tif``/``.tiff`` count as one format) wins.  Returns ``(image, mask)``
    pairs sorted by image name.

    Raises :class:`DataError` when a folder is missing or empty, when two
    images share a stem, when a stem has several masks none of which is
    ``mask_ext``, or when any image or mask is left unpaired (the message gives
    the counts and the first five unmatched names of each side).
    """
    images = list_images(images_dir)
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise DataError(f"mask folder {masks_dir} not found; expected a folder of masks named like the images")
    masks = _files_with(masks_dir, MASK_EXTS)
    if not masks:
        raise DataError(f"mask folder {masks_dir} holds no masks ({', '.join(MASK_EXTS)})")

    by_stem_img: dict[str, Path] = {}
    for p in images:
        if p.stem in by_stem_img:
            raise DataError(f"images {by_stem_img[p.stem].name} and {p.name} in {Path(images_dir)} share the stem "
                            f"{p.stem!r}; expected one image per stem")
        by_stem_img[p.stem] = p

    want = _family(mask_ext)
    by_stem_mask: dict[str, list[Path]] = {}
    for p in masks:
        by_stem_mask.setdefault(p.stem, []).append(p)
    chosen: dict[str, Path] = {}
    for stem, cands in by_stem_mask.items():
        if len(cands) == 1:
            chosen[stem] = cands[0]
            continue
        preferred = [c for c in cands if _family(c.suffix) == want]
        if len(preferred) != 1:
            raise DataError(f"masks {_names(cands)} in {masks_dir} share the stem {stem!r}; expected one mask per "
                            f"stem, or exactly one in mask_file_format {mask_ext}")
        chosen[stem] = preferred[0]

    lone_images = [p for s, p in by_stem_img.items() if s not in chosen]
    lone_masks = [p for s, p in sorted(chosen.items()) if s not in by_stem_img]
    if lone_images or lone_masks:
        raise DataError(
            f"{len(lone_images)} of {len(by_stem_img)} images in {Path(images_dir)} have no mask and "
            f"{len(lone_masks)} of {len(chosen)} masks in {masks_dir} have no image: "
            f"images without mask {_names(lone_images)}, masks without image {_names(lone_masks)}; "
            "expected every image and mask to share a file stem")
    return [(img, chosen[stem]) for stem, img in sorted(by_stem_img.items(), key=lambda kv: kv[1].name)]


# --------------------------------------------------------------------------- low-level reading


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path`` (so truncation is caught here)."""
    try:
        with Image.open(path) as img:  # the file is closed on exit, also when decoding fails
            img.load()
    except FileNotFoundError:
        raise DataError(f"{what} {path} not found") from None
    except _DECODE_ERRORS as exc:
        raise DataError(f"cannot decode {what}: {path} ({exc.__class__.__name__}: {exc}); "
                        "expected a readable image file") from None
    return img


def _native_size(path: Path, what: str) -> tuple[int, int]:
    """(width, height) of an image or array file, from its header where possible."""
    ext = path.suffix.lower()
    if ext in (".npy", ".npz"):
        h, w = _array_hw(_array_shape(path), path)
        return w, h
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"{what} {path} not found") from None
    except _DECODE_ERRORS as exc:
        raise DataError(f"cannot decode {what}: {path} ({exc.__class__.__name__}: {exc}); "
                        "expected a readable image file") from None


def _npz_member(names: Sequence[str]) -> Optional[str]:
    keys = [n[:-4] if n.endswith(".npy") else n for n in names]
    for k in NPZ_KEYS:
        if k in keys:
            return names[keys.index(k)]
    return names[0] if names else None


def _array_shape(path: Path) -> tuple[int, ...]:
    """Shape of the mask array in an ``.npy``/``.npz`` file without reading the data."""
    try:
        if path.suffix.lower() == ".npy":
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        with zipfile.ZipFile(path) as zf:
            member = _npz_member(zf.namelist())
            if member is None:
                raise ValueError("archive holds no arrays")
            with zf.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, _ = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, _ = np.lib.format.read_array_header_2_0(fh)
                return tuple(shape)
    except FileNotFoundError:
        raise DataError(f"mask {path} not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot decode mask: {path} ({exc.__class__.__name__}: {exc}); "
                        "expected a .npy/.npz file holding an integer array") from None


def _array_hw(shape: tuple[int, ...], path: Path) -> tuple[int, int]:
    squeezed = tuple(s for s in shape if s != 1)
    if len(shape) >= 2 and len(squeezed) <= 2:
        if len(squeezed) == 2:
            return squeezed  # type: ignore[return-value]
        return shape[-2], shape[-1]
    raise DataError(f"mask {path} holds an array of shape {shape}; expected a 2-D (H, W) array of class ids")


def _load_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                member = _npz_member(list(npz.files))
                if member is None:
                    raise ValueError("archive holds no arrays")
                arr = npz[member]
    except FileNotFoundError:
        raise DataError(f"mask {path} not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot decode mask: {path} ({exc.__class__.__name__}: {exc}); "
                        "expected a .npy/.npz file holding an integer array") from None
    h, w = _array_hw(arr.shape, path)
    return np.asarray(arr).reshape(h, w)


# --------------------------------------------------------------------------- images


def _grey_scale(arr: np.ndarray) -> float:
    """Full-scale value of a greyscale array (255, 65535, or 1 for floats already in [0,1])."""
    if arr.dtype == np.uint8 or arr.dtype == bool:
        return 255.0
    if np.issubdtype(arr.dtype, np.floating):
        top = float(np.nanmax(arr)) if arr.size else 0.0
        return 1.0 if top <= 1.0 else (255.0 if top <= 255.0 else 65535.0)
    if arr.dtype == np.uint16:
        return 65535.0
    top = int(arr.max()) if arr.size else 0
    return 255.0 if top <= 255 else 65535.0


def _resize_float(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 (C, H, W) array to ``hw``."""
    h, w = hw
    if arr.shape[1:] == (h, w):
        return arr
    out = np.empty((arr.shape[0], h, w), dtype=np.float32)
    for c in range(arr.shape[0]):
        channel = Image.fromarray(np.ascontiguousarray(arr[c], dtype=np.float32))
        out[c] = np.asarray(channel.resize((w, h), Image.BILINEAR))
    return out


def load_image(path: PathLike, cfg, *, resize: bool = True) -> np.ndarray:
    """Read one image as ``float32 (C, H, W)`` in ``[0, 1]``.

    ``C = cfg.model.image_channels``: 1 converts colour files to luma (ITU-R
    601-2, PIL's ``'L'``); 3 gives RGB, grey files replicated.  With
    ``[image] color_order = BGR`` the channel order is reversed (the order the
    model sees).  16-bit greyscale files are scaled by 65535.  Alpha is dropped.
    The image is resized bilinearly to ``(image_height, image_width)`` when its
    size differs (``resize=False`` keeps the native size).  A missing, truncated or corrupt file raises
    :class:`DataError` ("cannot decode image: ...").
    """
    path = Path(path)
    img = _open(path, "image")
    channels = cfg.model.image_channels
    mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") or mode.startswith("I;"):
        grey = np.asarray(img)
        if np.issubdtype(grey.dtype, np.floating) and not np.isfinite(grey).all():
            n_bad = int(grey.size - np.count_nonzero(np.isfinite(grey)))
            raise DataError(f"image {path} holds {n_bad} NaN/Inf pixels; expected finite values")
        grey = grey.astype(np.float32) / _grey_scale(grey)
        arr = np.repeat(grey[None], channels, axis=0) if channels == 3 else grey[None]
    elif channels == 1:
        if mode in ("P", "PA"):
            img = img.convert("RGBA")  # avoids PIL's palette-transparency warning
        arr = np.asarray(img.convert("L"), dtype=np.float32)[None] / 255.0
    else:
        if mode in ("P", "PA"):
            img = img.convert("RGBA")
        arr = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
        if cfg.image.color_order == "BGR":
            arr = arr[::-1]
    arr = np.ascontiguousarray(np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False))
    if not resize:
        return arr
    return _resize_float(arr, (cfg.model.image_height, cfg.model.image_width))


def normalize_image(arr: np.ndarray, standardize: bool) -> np.ndarray:
    """Per-image standardisation ``(x - mean) / (std + 1e-6)`` over all channels and pixels when
    ``standardize`` (``[model] input_normalize``) is on; otherwise ``arr`` unchanged."""
    if not standardize:
        return arr
    arr = np.asarray(arr, dtype=np.float32)
    mean = float(arr.mean())
    std = float(arr.std())
    return ((arr - mean) / (std + 1e-6)).astype(np.float32)


# --------------------------------------------------------------------------- masks


def _rgb_table(cfg) -> tuple[np.ndarray, np.ndarray]:
    """(colours (M, 3) float64, class ids (M,)) from ``[mask] rgb_map``."""
    items = list(cfg.mask.rgb_map.items())
    colours = np.array([c for c, _ in items], dtype=np.float64).reshape(-1, 3)
    ids = np.array([i for _, i in items], dtype=np.int64)
    return colours, ids


def match_colours(ucol: np.ndarray, colours: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Assign each colour to an ``rgb_map`` colour, reading blends of two map colours as anti-aliasing.

    A colour within ``tol`` of a map colour takes the nearest one.  Otherwise, when it lies
    within ``tol`` of the straight segment between two map colours (an edge pixel that mixes
    them, e.g. (0,0,176) between black and blue), it takes the end of that segment it is
    nearer to (of the nearest such segment).  Any other colour is unexplained.

    Args:
        ucol: (K, 3) float colours to assign.
        colours: (M, 3) float ``rgb_map`` colours.
        tol: the largest RGB distance (``[mask] color_tolerance``) from a map colour or a segment.

    Returns:
        ``(index, unexplained)``: (K,) int indices into ``colours``, and a (K,) bool array that is
        True for colours neither near a map colour nor near a blend of two.
    """
    dist = np.sqrt(((ucol[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2))  # (K, M)
    index = dist.argmin(axis=1)
    far = dist[np.arange(len(ucol)), index] > tol
    m = len(colours)
    if not far.any() or m < 2:
        return index, far
    pa, pb = np.triu_indices(m, k=1)
    a, b = colours[pa], colours[pb]                      # (P, 3) segment ends
    ab = b - a
    length2 = (ab ** 2).sum(axis=1)                      # > 0: rgb_map colours are distinct
    cand = ucol[far]                                     # (F, 3)
    t = np.clip(((cand[:, None, :] - a[None]) * ab[None]).sum(axis=2) / length2[None], 0.0, 1.0)  # (F, P)
    foot = a[None] + t[..., None] * ab[None]
    seg_dist = np.sqrt(((cand[:, None, :] - foot) ** 2).sum(axis=2))
    best = seg_dist.argmin(axis=1)
    rows = np.arange(len(cand))
    blend = seg_dist[rows, best] <= tol
    end = np.where(t[rows, best] < 0.5, pa[best], pb[best])
    far_idx = np.flatnonzero(far)
    index[far_idx[blend]] = end[blend]
    far[far_idx[blend]] = False
    return index, far


def _rgb(colour) -> str:
    return "({},{},{})".format(*(int(v) for v in colour))


def _colour_to_ids(rgb: np.ndarray, cfg, path: Path) -> np.ndarray:
    """Map every pixel of ``rgb`` (H, W, 3) to a class with :func:`match_colours`.

    Works on the unique colours only (a 512x512 anti-aliased mask has a few
    hundred), so it is fast.

    Args:
        rgb: (H, W, 3) uint8 colours.
        cfg: the config (``[mask] rgb_map``, ``color_tolerance``, ``color_outlier_fraction``).
        path: the mask file, named in errors.

    Returns:
        (H, W) int64 class ids.

    Raises:
        DataError: when more than ``color_outlier_fraction`` of the pixels have colours that are
            neither within ``color_tolerance`` of an rgb_map colour nor of a blend of two; the
            message names the most frequent such colours.
    """
    h, w = rgb.shape[:2]
    rgb = rgb.astype(np.uint32, copy=False)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    uniq, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
    ucol = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.float64)
    colours, ids = _rgb_table(cfg)
    tol = float(cfg.mask.color_tolerance)
    index, far = match_colours(ucol, colours, tol)
    if far.any():
        n_far = int(counts[far].sum())
        total = h * w
        if n_far > cfg.mask.color_outlier_fraction * total:
            order = np.flatnonzero(far)[np.argsort(-counts[far], kind="stable")]
            worst = order[0]
            others = "".join(f", {int(counts[k])} of {_rgb(ucol[k])}" for k in order[1:3])
            hint = ""
            swapped, swapped_far = match_colours(ucol[order[:3], ::-1], colours, tol)
            if not swapped_far.any():
                hint = " (with red and blue swapped they match: is the mask BGR?)"
            mapped = ", ".join(_rgb(c) for c in colours)
            raise DataError(
                f"mask {path}: {int(counts[worst])} pixels of colour {_rgb(ucol[worst])}{others} are "
                f"farther than {tol:g} from every rgb_map colour and from every blend of two of them "
                f"({n_far} such pixels in all, {100.0 * n_far / total:.2f}% > color_outlier_fraction "
                f"{cfg.mask.color_outlier_fraction:g}){hint}; expected the rgb_map colours {mapped} or "
                "anti-aliased blends of two of them (see [mask] rgb_map and color_tolerance)")
    return ids[index][inverse].reshape(h, w)


def _check_ids(arr: np.ndarray, cfg, path: Path) -> np.ndarray:
    n = cfg.model.num_classes
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"mask {path} holds non-integer values (dtype {arr.dtype}); "
                            f"expected integer class ids 0..{n - 1}")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"mask {path} has dtype {arr.dtype}; expected integer class ids 0..{n - 1}")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= n:
            bad = np.unique(arr[(arr < 0) | (arr >= n)])[:5]
            raise DataError(f"mask {path} holds class ids {[int(v) for v in bad]} (range {int(lo)}..{int(hi)}); "
                            f"expected class ids 0..{n - 1} (num_classes = {n})")
    return arr.astype(np.int64)


def _grey_to_ids(grey: np.ndarray, cfg, path: Path) -> np.ndarray:
    n = cfg.model.num_classes
    if np.issubdtype(grey.dtype, np.floating) and not np.all(grey == np.round(grey)):
        # float greyscale: scale to 0..255 and use the colour route
        scaled = np.clip(np.round(grey / _grey_scale(grey) * 255.0), 0, 255).astype(np.uint8)
        return _colour_to_ids(np.repeat(scaled[..., None], 3, axis=2), cfg, path)
    if grey.size == 0 or (grey.min() >= 0 and grey.max() < n):
        return grey.astype(np.int64)
    full = _grey_scale(grey)
    if n == 2:
        # {0, 255}-like binary mask: near 0 or near full scale (grey distance scaled like RGB distance)
        tol = cfg.mask.color_tolerance / np.sqrt(3.0) * full / 255.0
        g = grey.astype(np.float64)
        near = (g <= tol) | (g >= full - tol)
        if (~near).sum() <= cfg.mask.color_outlier_fraction * grey.size:
            return (g >= full / 2.0).astype(np.int64)
    scaled = grey.astype(np.float64) if full == 255.0 else grey.astype(np.float64) * (255.0 / full)
    scaled = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return _colour_to_ids(np.repeat(scaled[..., None], 3, axis=2), cfg, path)


def _palette_to_ids(img: Image.Image, cfg, path: Path) -> np.ndarray:
    idx = np.asarray(img)
    pal = np.array(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    used = np.unique(idx)
    colour_of = {tuple(c): i for c, i in cfg.mask.rgb_map.items()}
    if used.size and used.max() < len(pal):
        used_cols = [tuple(int(v) for v in pal[u]) for u in used]
        if all(c in colour_of for c in used_cols):
            lut = np.zeros(256, dtype=np.int64)
            for u, c in zip(used, used_cols):
                lut[u] = colour_of[c]
            return lut[idx]
    if used.size == 0 or used.max() < cfg.model.num_classes:
        return idx.astype(np.int64)
    return _colour_to_ids(np.asarray(img.convert("RGBA"))[..., :3], cfg, path)


def _resize_ids(ids: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    if ids.shape == (h, w):
        return ids
    if ids.max(initial=0) < 256:
        small = Image.fromarray(ids.astype(np.uint8))
    else:
        small = Image.fromarray(ids.astype(np.int32))
    return np.asarray(small.resize((w, h), Image.NEAREST)).astype(np.int64)


def decode_mask(path: PathLike, cfg, size: Optional[tuple[int, int]] = None, *, resize: bool = True) -> np.ndarray:
    """Read one mask as ``int64 (H, W)`` class ids ``0 .. num_classes-1``.

    Formats:

    * RGB/RGBA colour files: every pixel within ``color_tolerance`` of an
      ``rgb_map`` colour goes to the nearest one (Euclidean in RGB); a pixel
      on the segment between two ``rgb_map`` colours (an anti-aliased edge,
      e.g. (0,0,176) between black and blue) goes to the nearer end (see
      :func:`match_colours`).  More than ``color_outlier_fraction`` of pixels
      that neither explains is a :class:`DataError` naming their colours.
      Alpha is ignored.  An RGB file whose three channels are equal everywhere
      is read like a greyscale one (so ids 0,1,2 saved as RGB stay ids).
    * palette (``P``) PNGs: mapped by colour when every used palette entry is
      exactly an ``rgb_map`` colour; else the indices are the class ids when
      all are ``< num_classes``; else by nearest colour.
    * greyscale (``L``/``I``/``1``): values ``< num_classes`` are class ids;
      else, with two classes, a ``{0, 255}``-like binary mask maps to 0/1
      (threshold at half scale); else grey is treated as a colour.
    * ``.npy``/``.npz`` (key ``mask``, ``label``, ``arr_0``, else the first
      array): integer class ids; anything outside ``0..num_classes-1`` is an
      error.

    Ids are decoded at the file's native resolution, then resized with
    NEAREST to ``size`` = ``(H, W)`` (default: the model's input size).
    ``resize=False`` returns the native resolution.
    """
    path = Path(path)
    if path.suffix.lower() in (".npy", ".npz"):
        ids = _check_ids(_load_array(path), cfg, path)
    else:
        img = _open(path, "mask")
        mode = img.mode
        if mode == "P":
            ids = _palette_to_ids(img, cfg, path)
        elif mode in ("L", "1", "I", "F") or mode.startswith("I;"):
            grey = np.asarray(img)
            if grey.dtype == bool:
                grey = grey.astype(np.uint8) * 255
            ids = _grey_to_ids(grey, cfg, path)
        elif mode in ("LA", "La"):
            ids = _grey_to_ids(np.asarray(img.getchannel("L")), cfg, path)
        else:
            rgb = np.asarray(img.convert("RGB"))
            if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
                ids = _grey_to_ids(rgb[..., 0], cfg, path)  # grey stored as RGB (often ids 0,1,2)
            else:
                ids = _colour_to_ids(rgb, cfg, path)
    if not resize:
        return ids
    if size is None:
        size = (cfg.model.image_height, cfg.model.image_width)
    return _resize_ids(ids, (int(size[0]), int(size[1])))


def check_same_size(image_path: PathLike, mask_path: PathLike) -> None:
    """Raise :class:`DataError` unless image and mask have the same native size (read from headers)."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    iw, ih = _native_size(image_path, "image")
    mw, mh = _native_size(mask_path, "mask")
    if (iw, ih) != (mw, mh):
        raise DataError(f"image {image_path} is {iw}x{ih} but its mask {mask_path} is {mw}x{mh}; "
                        "expected the same size")


# --------------------------------------------------------------------------- output


def _class_colour_array(cfg) -> np.ndarray:
    return np.array(cfg.class_colors, dtype=np.uint8).reshape(-1, 3)


def colorize(labels: np.ndarray, cfg) -> Image.Image:
    """A palette (``P``) image of ``labels`` (H, W) whose palette entry ``i`` is the rgb_map colour of class ``i``."""
    labels = np.asarray(labels)
    colours = _class_colour_array(cfg)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(colours)):
        raise ValueError(f"labels hold ids {int(labels.min())}..{int(labels.max())}; "
                         f"expected 0..{len(colours) - 1}")
    img = Image.fromarray(labels.astype(np.uint8))  # 'L'; putpalette turns it into 'P'
    img.putpalette(colours.ravel().tolist(), rawmode="RGB")
    return img


def overlay(image_chw01: np.ndarray, labels: np.ndarray, cfg, alpha: float = 0.4) -> Image.Image:
    """RGB blend of an image with its mask colours; background (class 0) pixels keep the image.

    ``image_chw01`` is ``(C, H, W)`` (or ``(H, W)``) in ``[0, 1]`` in the model's channel order (as
    :func:`load_image` returns it; with ``color_order = BGR`` it is turned back to RGB); values are
    clipped to ``[0, 1]``.  ``labels`` is resized (nearest) to the image when sizes differ.
    """
    img = np.asarray(image_chw01, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    if img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    elif img.shape[0] == 3 and cfg.image.color_order == "BGR":
        img = img[::-1]
    elif img.shape[0] != 3:
        raise ValueError(f"image must have 1 or 3 channels, got shape {img.shape}")
    rgb = np.clip(img, 0.0, 1.0).transpose(1, 2, 0) * 255.0
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        labels = _resize_ids(labels.astype(np.int64), rgb.shape[:2])
    colours = _class_colour_array(cfg).astype(np.float32)
    lab = np.clip(labels, 0, len(colours) - 1).astype(np.int64)
    blend = (1.0 - alpha) * rgb + alpha * colours[lab]
    out = np.where((lab > 0)[..., None], blend, rgb)
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))
