"""flexunet.data.images: pairing, image loading and mask decoding."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from scipy import ndimage

from flexunet.config import config_from_dict
from flexunet.data.images import (IMAGE_EXTS, check_same_size, colorize, decode_mask, find_pairs, list_images,
                                  load_image, normalize_image, overlay)
from flexunet.errors import DataError

COLOURS = {0: (0, 0, 0), 1: (0, 0, 255), 2: (255, 0, 0)}


def make_cfg(tmp_path, channels=3, size=64, **sections):
    raw = {"model": {"image_width": size, "image_height": size, "num_layers": 3, "image_channels": channels}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw, base_dir=tmp_path)


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    lut = np.array([COLOURS[i] for i in range(3)], dtype=np.uint8)
    return lut[ids]


def save_rgb(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- folders and pairing


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ["b.png", "a.JPG", "c.tif", "notes.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.tif"]
    assert ".png" in IMAGE_EXTS and ".bmp" in IMAGE_EXTS


def test_list_images_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no images \(\.png, \.jpg"):
        list_images(tmp_path / "empty")


def _pair_dirs(tmp_path):
    img_dir, mask_dir = tmp_path / "images", tmp_path / "masks"
    img_dir.mkdir()
    mask_dir.mkdir()
    return img_dir, mask_dir


def test_find_pairs_by_stem_not_by_order(tmp_path):
    img_dir, mask_dir = _pair_dirs(tmp_path)
    stems = [f"case{i:02d}_slice{(i * 37) % 11}" for i in range(12)]
    shuffled = stems[:]
    random.Random(3).shuffle(shuffled)
    # images are .jpg; masks are .png or .npz, written in another order, so list positions do not line up
    for i, s in enumerate(stems):
        save_rgb(img_dir / f"{s}.jpg", np.full((8, 8, 3), i, np.uint8))
    for k, s in enumerate(shuffled):
        if k % 2:
            save_rgb(mask_dir / f"{s}.png", np.zeros((8, 8, 3), np.uint8))
        else:
            np.savez(mask_dir / f"{s}.npz", mask=np.zeros((8, 8), np.int64))
    pairs = find_pairs(img_dir, mask_dir, ".png")
    assert len(pairs) == len(stems)
    for img, mask in pairs:
        assert img.stem == mask.stem
        assert img.parent == img_dir and mask.parent == mask_dir
    assert [p[0].name for p in pairs] == sorted(f"{s}.jpg" for s in stems)


def test_find_pairs_prefers_mask_ext(tmp_path):
    img_dir, mask_dir = _pair_dirs(tmp_path)
    save_rgb(img_dir / "a.png", np.zeros((4, 4, 3)))
    save_rgb(mask_dir / "a.png", np.zeros((4, 4, 3)))
    np.savez(mask_dir / "a.npz", mask=np.zeros((4, 4), np.int64))
    assert find_pairs(img_dir, mask_dir, ".npz")[0][1].name == "a.npz"
    assert find_pairs(img_dir, mask_dir, ".png")[0][1].name == "a.png"
    with pytest.raises(DataError, match="share the stem 'a'"):
        find_pairs(img_dir, mask_dir, ".tif")


def test_find_pairs_unpaired_lists_names(tmp_path):
    img_dir, mask_dir = _pair_dirs(tmp_path)
    for s in ["a", "b", "c", "x1", "x2", "x3", "x4", "x5", "x6"]:
        save_rgb(img_dir / f"{s}.png", np.zeros((4, 4, 3)))
    for s in ["a", "b", "c", "orphan"]:
        save_rgb(mask_dir / f"{s}.png", np.zeros((4, 4, 3)))
    with pytest.raises(DataError) as exc:
        find_pairs(img_dir, mask_dir, ".png")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "6 of 9 images" in msg and "1 of 4 masks" in msg
    assert "x1.png, x2.png, x3.png, x4.png, x5.png" in msg and "x6.png" not in msg and "+1 more" in msg
    assert "orphan.png" in msg


def test_find_pairs_missing_mask_folder(tmp_path):
    img_dir, _ = _pair_dirs(tmp_path)
    save_rgb(img_dir / "a.png", np.zeros((4, 4, 3)))
    with pytest.raises(DataError, match="not found"):
        find_pairs(img_dir, tmp_path / "nomasks", ".png")


# --------------------------------------------------------------------------- images


def test_load_image_rgb_grey_resize(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    save_rgb(tmp_path / "c.png", rgb)
    cfg3 = make_cfg(tmp_path, channels=3)
    img = load_image(tmp_path / "c.png", cfg3)
    assert img.dtype == np.float32 and img.shape == (3, 64, 64)
    assert np.allclose(img[:, 10, 10], [1.0, 128 / 255, 0.0], atol=1e-3)
    bgr = load_image(tmp_path / "c.png", make_cfg(tmp_path, channels=3, image={"color_order": "BGR"}))
    assert np.allclose(bgr, img[::-1])

    native = load_image(tmp_path / "c.png", cfg3, resize=False)
    assert native.shape == (3, 32, 48) and native.dtype == np.float32

    cfg1 = make_cfg(tmp_path, channels=1)
    grey = load_image(tmp_path / "c.png", cfg1)
    assert grey.shape == (1, 64, 64) and 0.0 <= grey.min() <= grey.max() <= 1.0

    Image.fromarray(np.full((64, 64), 51, np.uint8)).save(tmp_path / "g.png")
    g3 = load_image(tmp_path / "g.png", cfg3)
    assert g3.shape == (3, 64, 64) and np.allclose(g3, 0.2, atol=1e-6)


def test_load_image_16bit(tmp_path):
    arr = np.full((64, 64), 65535 // 2, np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    img = load_image(tmp_path / "d.png", make_cfg(tmp_path, channels=1))
    assert img.shape == (1, 64, 64) and np.allclose(img, 0.5, atol=1e-3)


def test_truncated_png_is_data_error(tmp_path):
    rng = np.random.default_rng(0)
    save_rgb(tmp_path / "full.png", rng.integers(0, 255, (64, 64, 3)))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    cfg = make_cfg(tmp_path)
    with pytest.raises(DataError, match=r"cannot decode image: .*cut\.png"):
        load_image(tmp_path / "cut.png", cfg)
    with pytest.raises(DataError, match=r"cannot decode mask: .*cut\.png"):
        decode_mask(tmp_path / "cut.png", cfg)
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="cannot decode image"):
        load_image(tmp_path / "junk.png", cfg)


def test_normalize_image(tmp_path):
    arr = np.random.default_rng(1).random((3, 16, 16)).astype(np.float32)
    assert normalize_image(arr, make_cfg(tmp_path).model.input_normalize) is arr
    out = normalize_image(arr, make_cfg(tmp_path, model={"input_normalize": True}).model.input_normalize)
    assert out.dtype == np.float32
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-3


# --------------------------------------------------------------------------- masks


def _shapes_ids(size: int) -> np.ndarray:
    """Class ids of a blue disc holding a red disc, drawn at ``size``."""
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    d.ellipse((size * 0.2, size * 0.2, size * 0.8, size * 0.8), fill=1)
    d.ellipse((size * 0.4, size * 0.4, size * 0.6, size * 0.6), fill=2)
    return np.asarray(img).astype(np.int64)


def test_antialiased_colour_mask(tmp_path):
    big = _shapes_ids(1024)
    # antialiased downscale then smooth upscale: hundreds of in-between colours along the edges
    small = Image.fromarray(ids_to_rgb(big)).resize((256, 256), Image.LANCZOS).resize((512, 512), Image.BICUBIC)
    small.save(tmp_path / "aa.png")
    assert len(np.unique(np.asarray(small).reshape(-1, 3), axis=0)) > 200
    cfg = make_cfg(tmp_path)
    ids = decode_mask(tmp_path / "aa.png", cfg, resize=False)
    assert ids.dtype == np.int64 and ids.shape == (512, 512)
    want = np.asarray(Image.fromarray(big.astype(np.uint8)).resize((512, 512), Image.NEAREST)).astype(np.int64)
    edges = ndimage.binary_dilation(ndimage.morphological_gradient(want, size=3) > 0, iterations=3)
    assert np.array_equal(ids[~edges], want[~edges])
    assert edges.mean() < 0.1
    assert (ids[edges] == want[edges]).mean() > 0.8


def test_far_colour_error_names_colour_and_count(tmp_path):
    ids = np.zeros((64, 64), np.int64)
    ids[10:30, 10:30] = 1
    rgb = ids_to_rgb(ids)
    rgb[40:60, 40:60] = (0, 255, 0)  # 400 green pixels, ~10% of the mask
    save_rgb(tmp_path / "bad.png", rgb)
    with pytest.raises(DataError) as exc:
        decode_mask(tmp_path / "bad.png", make_cfg(tmp_path))
    msg = str(exc.value)
    assert "bad.png" in msg and "400 pixels of colour (0,255,0)" in msg and "farther than 60" in msg
    assert "color_tolerance" in msg and "\n" not in msg


def test_few_far_pixels_are_tolerated(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[0, :20] = (0, 255, 0)  # 20 / 4096 < 1 %
    save_rgb(tmp_path / "ok.png", rgb)
    ids = decode_mask(tmp_path / "ok.png", make_cfg(tmp_path))
    assert set(np.unique(ids)) <= {0, 1, 2}


def test_size_mismatch(tmp_path):
    save_rgb(tmp_path / "img.png", np.zeros((40, 50, 3)))
    save_rgb(tmp_path / "m.png", np.zeros((40, 48, 3)))
    with pytest.raises(DataError, match=r"image .*img\.png is 50x40 but its mask .*m\.png is 48x40; "
                                        r"expected the same size"):
        check_same_size(tmp_path / "img.png", tmp_path / "m.png")
    np.savez(tmp_path / "n.npz", mask=np.zeros((40, 50), np.int64))
    check_same_size(tmp_path / "img.png", tmp_path / "n.npz")
    np.save(tmp_path / "n.npy", np.zeros((1, 41, 50), np.uint8))
    with pytest.raises(DataError, match="is 50x41"):
        check_same_size(tmp_path / "img.png", tmp_path / "n.npy")


def test_npz_and_npy_masks(tmp_path):
    cfg = make_cfg(tmp_path, size=32)
    ids = np.random.default_rng(2).integers(0, 3, (32, 32))
    np.savez_compressed(tmp_path / "a.npz", label=ids.astype(np.uint8))
    np.savez(tmp_path / "b.npz", ids)  # arr_0
    np.savez(tmp_path / "c.npz", whatever=ids.astype(np.int16))  # first array
    np.save(tmp_path / "d.npy", ids.astype(np.int32))
    for name in ["a.npz", "b.npz", "c.npz", "d.npy"]:
        out = decode_mask(tmp_path / name, cfg)
        assert out.dtype == np.int64 and np.array_equal(out, ids), name
    np.savez(tmp_path / "bad.npz", mask=np.full((32, 32), 7))
    with pytest.raises(DataError, match=r"bad\.npz holds class ids \[7\].*expected class ids 0\.\.2"):
        decode_mask(tmp_path / "bad.npz", cfg)
    np.save(tmp_path / "float.npy", np.full((32, 32), 0.5))
    with pytest.raises(DataError, match="non-integer"):
        decode_mask(tmp_path / "float.npy", cfg)


def test_palette_masks(tmp_path):
    cfg = make_cfg(tmp_path, size=16)
    ids = np.zeros((16, 16), np.uint8)
    ids[2:8, 2:8] = 1
    ids[10:14, 10:14] = 2
    # palette colours in another order than the class ids: index 1 is red (class 2), index 2 is blue (class 1)
    img = Image.fromarray(ids)
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    img.save(tmp_path / "p_colour.png")
    swapped = np.choose(ids, [0, 2, 1])
    assert np.array_equal(decode_mask(tmp_path / "p_colour.png", cfg), swapped)
    # palette that is not the rgb_map (grey ramp): indices are class ids
    img = Image.fromarray(ids)
    img.putpalette([v for i in range(256) for v in (i, i, i)])
    img.save(tmp_path / "p_index.png")
    with Image.open(tmp_path / "p_index.png") as reread:
        assert reread.mode == "P"
    assert np.array_equal(decode_mask(tmp_path / "p_index.png", cfg), ids)


def test_greyscale_masks(tmp_path):
    cfg = make_cfg(tmp_path, size=16)
    ids = np.zeros((16, 16), np.uint8)
    ids[2:8, 2:8] = 1
    ids[10:14, 10:14] = 2
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert np.array_equal(decode_mask(tmp_path / "ids.png", cfg), ids)

    cfg2 = make_cfg(tmp_path, size=16, mask={"rgb_map": {(0, 0, 0): 0, (0, 255, 0): 1}}, model={"num_classes": 2})
    binary = (ids > 0).astype(np.uint8) * 255
    Image.fromarray(binary).save(tmp_path / "bin.png")
    assert np.array_equal(decode_mask(tmp_path / "bin.png", cfg2), (ids > 0).astype(np.int64))

    # ids saved as an RGB file with equal channels are ids too (not "near black")
    save_rgb(tmp_path / "ids_rgb.png", np.repeat(ids[..., None], 3, axis=2))
    assert np.array_equal(decode_mask(tmp_path / "ids_rgb.png", cfg), ids)

    # grey values that are neither ids nor binary: nearest rgb_map colour (grey replicated)
    cfg_grey = make_cfg(tmp_path, size=16, mask={"rgb_map": {(0, 0, 0): 0, (128, 128, 128): 1, (255, 255, 255): 2}})
    grey = np.choose(ids, [0, 130, 250]).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert np.array_equal(decode_mask(tmp_path / "grey.png", cfg_grey), ids)
    # and a far grey is an error
    with pytest.raises(DataError, match=r"colour \(130,130,130\)"):
        decode_mask(tmp_path / "grey.png", cfg)


def test_resize_nearest_keeps_valid_ids(tmp_path):
    big = _shapes_ids(512)
    img = Image.fromarray(ids_to_rgb(big)).resize((200, 200), Image.LANCZOS)
    img.save(tmp_path / "aa.png")
    cfg = make_cfg(tmp_path)
    out = decode_mask(tmp_path / "aa.png", cfg, size=(37, 53))
    assert out.shape == (37, 53) and out.dtype == np.int64
    assert set(np.unique(out)) == {0, 1, 2}
    default = decode_mask(tmp_path / "aa.png", cfg)
    assert default.shape == (64, 64) and set(np.unique(default)) == {0, 1, 2}


def test_colorize_writes_only_palette_colours(tmp_path):
    cfg = make_cfg(tmp_path, size=32)
    labels = np.random.default_rng(5).integers(0, 3, (32, 32))
    img = colorize(labels, cfg)
    assert img.mode == "P"
    img.save(tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as back:
        back.load()
    assert back.mode == "P"
    pal = np.array(back.getpalette()).reshape(-1, 3)
    for cid, colour in COLOURS.items():
        assert tuple(pal[cid]) == colour
    rgb = np.asarray(back.convert("RGB")).reshape(-1, 3)
    assert {tuple(c) for c in np.unique(rgb, axis=0)} <= set(COLOURS.values())
    assert np.array_equal(np.asarray(back), labels)
    assert np.array_equal(decode_mask(tmp_path / "out.png", cfg), labels)


def test_overlay_blends_foreground_only(tmp_path):
    cfg = make_cfg(tmp_path, size=16)
    image = np.full((3, 16, 16), 0.5, np.float32)
    labels = np.zeros((16, 16), np.int64)
    labels[4:8, 4:8] = 2
    out = np.asarray(overlay(image, labels, cfg, alpha=0.5))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (128, 128, 128)
    assert tuple(out[5, 5]) == (191, 64, 64)
    grey = np.asarray(overlay(image[:1], labels, cfg))
    assert grey.shape == (16, 16, 3)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_near_colours_map_to_their_class(tmp_path_factory, data):
    cfg = make_cfg(tmp_path_factory.getbasetemp(), size=8)
    tol = cfg.mask.color_tolerance
    n = 8 * 8
    classes = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    rgb = np.zeros((n, 3), np.uint8)
    for k, cid in enumerate(classes):
        base = np.array(COLOURS[cid], dtype=np.int64)
        # an offset of at most tol/sqrt(3) per channel keeps the colour within tol of its class colour
        lim = int(tol / np.sqrt(3)) - 1
        off = np.array(data.draw(st.tuples(*[st.integers(-lim, lim)] * 3)))
        rgb[k] = np.clip(base + off, 0, 255)
    path = Path(tmp_path_factory.mktemp("prop")) / "m.png"
    save_rgb(path, rgb.reshape(8, 8, 3))
    ids = decode_mask(path, cfg, resize=False)
    assert np.array_equal(ids.ravel(), np.array(classes))
