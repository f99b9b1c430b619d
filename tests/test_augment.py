"""Online augmentation (flexunet.data.augment): geometry shared by image and mask, ids kept, determinism,
config validation, preview."""
from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexunet.config import config_from_dict
from flexunet.data.augment import GEOMETRIC, INTENSITY, TRANSFORMS, Augmenter, build_augmenter
from flexunet.data.preview import augment_preview
from flexunet.errors import ConfigError, DataError

SIZE = 96
BG, FG = 0.2, 0.8


def make_cfg(augmentor=None, generator=True, **sections):
    raw = {"model": {"generator": generator}, "augmentor": {"probability": 1.0, **(augmentor or {})}}
    raw.update(sections)
    return config_from_dict(raw, source="<test>")


def square_sample(channels=3, size=SIZE):
    """Bright off-centre square in the image == class 1 in the mask; a small class-2 square elsewhere."""
    img = np.full((channels, size, size), BG, np.float32)
    mask = np.zeros((size, size), np.int64)
    r0, r1, c0, c1 = size * 20 // 96, size * 52 // 96, size * 22 // 96, size * 56 // 96
    img[:, r0:r1, c0:c1] = FG
    mask[r0:r1, c0:c1] = 1
    mask[size * 70 // 96:size * 80 // 96, size * 70 // 96:size * 82 // 96] = 2
    return img, mask


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def centroid(a):
    ys, xs = np.nonzero(a)
    return np.array([ys.mean(), xs.mean()])


# every transform alone, with parameters strong enough to move the square visibly
CASES = {
    "hflip": ({"hflip": True}, {}),
    "vflip": ({"vflip": True}, {}),
    "rotation": ({"rotation": True, "angles": [30, 330]}, {}),
    "shears": ({"shears": [0.2]}, {}),
    "shrinks": ({"shrinks": [0.7]}, {}),
    "scaling": ({"scaling": True, "scaling_range": (1.15, 1.25)}, {}),
    "deformation": ({"deformation": True}, {"deformation": {"alpah": 3000, "sigmoids": [6.0]}}),
    "distortion": ({"distortion": True}, {"distortion": {"gaussian_filter_rsigma": 10, "gaussian_filter_sigma": 0.5,
                                                         "distortions": [0.04]}}),
    "barrdistortion": ({"barrdistortion": True},
                       {"barrdistortion": {"radius": 0.35, "amount": 0.5, "centers": [(0.4, 0.38)]}}),
    "pincdistortion": ({"pincdistortion": True},
                       {"pincdistortion": {"radius": 0.35, "amount": -0.5, "centers": [(0.4, 0.38)]}}),
    "sharpening": ({"sharpening": True}, {"sharpening": {"k": 1.0}}),
    "brightening": ({"brightening": True}, {"brightening": {"alpha": 1.2, "beta": 10}}),
    "gaussian_noise": ({"gaussian_noise": True, "noise_std": (0.03, 0.05)}, {}),
    "gaussian_blur": ({"gaussian_blur": True, "blur_sigma": (0.8, 1.2)}, {}),
    "brightness_multiplicative": ({"brightness_multiplicative": True, "brightness_range": (0.8, 0.9)}, {}),
    "contrast": ({"contrast": True, "contrast_range": (1.2, 1.3)}, {}),
    "low_resolution": ({"low_resolution": True, "low_resolution_zoom": (0.4, 0.5)}, {}),
    "gamma": ({"gamma": True, "gamma_range": (1.3, 1.5)}, {}),
}


def test_cases_cover_every_transform():
    assert set(CASES) == set(TRANSFORMS)
    assert set(GEOMETRIC) | set(INTENSITY) == set(TRANSFORMS)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_transform_moves_image_and_mask_together(name, channels):
    aug_kw, sections = CASES[name]
    aug = build_augmenter(make_cfg(aug_kw, **sections))
    assert aug is not None and aug.enabled == (name,)
    img0, mask0 = square_sample(channels)
    img, mask, applied = aug.apply(img0, mask0, np.random.default_rng(1))
    assert applied == (name,)
    assert img.shape == img0.shape and img.dtype == np.float32
    assert mask.shape == mask0.shape and mask.dtype == np.int64
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert set(np.unique(mask)) <= {0, 1, 2}
    assert not np.array_equal(img, img0), "transform changed nothing"
    bright, sq = img.mean(axis=0) > 0.5, mask == 1
    assert sq.sum() > 100
    assert iou(bright, sq) > 0.9, f"{name}: image and mask disagree (IoU {iou(bright, sq):.3f})"
    assert np.abs(centroid(bright) - centroid(sq)).max() < 1.0
    if name in GEOMETRIC:
        assert not np.array_equal(mask, mask0), "geometric transform left the mask unchanged"
        # the square really moved or changed shape
        assert iou(sq, mask0 == 1) < 0.97
    else:
        assert np.array_equal(mask, mask0), "intensity transform changed the mask"


def test_flip_and_rotation_conventions_are_exact():
    img0, mask0 = square_sample(1)
    rng = np.random.default_rng(0)
    _, m = build_augmenter(make_cfg({"hflip": True}))(img0, mask0, rng)
    assert np.array_equal(m, mask0[:, ::-1])
    _, m = build_augmenter(make_cfg({"vflip": True}))(img0, mask0, rng)
    assert np.array_equal(m, mask0[::-1])
    img, m = build_augmenter(make_cfg({"rotation": True, "angles": [90]}))(img0, mask0, rng)
    # positive angles turn counter-clockwise as displayed (cv2.getRotationMatrix2D's convention)
    assert np.array_equal(m, np.rot90(mask0, 1))
    np.testing.assert_allclose(img, np.rot90(img0, 1, axes=(1, 2)), atol=1e-5)


def test_shrink_pads_with_background():
    img0, mask0 = square_sample(3)
    img0[:] = 0.9
    mask0[:] = 1
    img, mask = build_augmenter(make_cfg({"shrinks": [0.5]}))(img0, mask0, np.random.default_rng(0))
    assert mask[0, 0] == 0 and mask[SIZE // 2, SIZE // 2] == 1
    assert img[:, 0, 0].max() == 0.0 and img[:, SIZE // 2, SIZE // 2].min() == pytest.approx(0.9)
    assert (mask == 1).sum() == pytest.approx((SIZE // 2) ** 2, rel=0.1)


ALL_ON = {k: v for kw, _ in CASES.values() for k, v in kw.items()}
ALL_SECTIONS = {k: v for _, s in CASES.values() for k, v in s.items()}


def test_same_seed_same_output_different_seed_different():
    aug = build_augmenter(make_cfg(ALL_ON, **ALL_SECTIONS))
    img0, mask0 = square_sample(3)
    a = aug(img0, mask0, np.random.default_rng(7))
    b = aug(img0, mask0, np.random.default_rng(7))
    c = aug(img0, mask0, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # a pickled copy (DataLoader worker) gives the same result
    d = pickle.loads(pickle.dumps(aug))(img0, mask0, np.random.default_rng(7))
    assert np.array_equal(a[0], d[0]) and np.array_equal(a[1], d[1])


def test_inputs_not_modified():
    aug = build_augmenter(make_cfg(ALL_ON, **ALL_SECTIONS))
    img0, mask0 = square_sample(3)
    ic, mc = img0.copy(), mask0.copy()
    aug(img0, mask0, np.random.default_rng(0))
    assert np.array_equal(img0, ic) and np.array_equal(mask0, mc)


def test_probability_is_per_transform_per_sample():
    aug = build_augmenter(make_cfg({"hflip": True, "vflip": True, "probability": 0.3}))
    img0, mask0 = square_sample(1, size=16)
    rng = np.random.default_rng(0)
    counts = {"hflip": 0, "vflip": 0}
    n = 400
    for _ in range(n):
        for name in aug.apply(img0, mask0, rng)[2]:
            counts[name] += 1
    for name, c in counts.items():
        assert 0.22 < c / n < 0.38, (name, c)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.sets(st.sampled_from(TRANSFORMS), min_size=1), p=st.floats(0.05, 1.0),
       seed=st.integers(0, 2 ** 32 - 1), channels=st.sampled_from([1, 3]), n_ids=st.integers(1, 4),
       hw=st.sampled_from([(48, 48), (40, 56)]))
def test_property_shapes_range_and_ids(names, p, seed, channels, n_ids, hw):
    aug_kw = {"probability": p}
    sections = {}
    for name in names:
        aug_kw.update(CASES[name][0])
        sections.update(CASES[name][1])
    aug = build_augmenter(make_cfg(aug_kw, **sections))
    rng = np.random.default_rng(seed)
    h, w = hw
    img0 = rng.random((channels, h, w), dtype=np.float32)
    mask0 = rng.integers(0, n_ids + 1, (h, w)).astype(np.int64)
    mask0[h // 4:h // 2, w // 4:w // 2] = n_ids  # a blob
    img, mask = aug(img0, mask0, rng)
    assert img.shape == img0.shape and img.dtype == np.float32 and img.flags.c_contiguous
    assert mask.shape == mask0.shape and mask.dtype == np.int64
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    assert set(np.unique(mask).tolist()) <= set(range(n_ids + 1))


def test_none_when_generator_off_or_nothing_enabled():
    assert build_augmenter(make_cfg({"hflip": True}, generator=False)) is None
    assert build_augmenter(make_cfg({})) is None
    assert build_augmenter(make_cfg({"hflip": True, "probability": 0.0})) is None
    # bad values of a transform that is off are not an error (the original ignores them too)
    assert build_augmenter(make_cfg({"hflip": True, "rotation": False, "angles": []})) is not None
    assert isinstance(build_augmenter(make_cfg({"hflip": True})), Augmenter)


@pytest.mark.parametrize("aug_kw, sections, where", [
    ({"rotation": True, "angles": []}, {}, "[augmentor] angles"),
    ({"shrinks": [0.8, 0.0]}, {}, "[augmentor] shrinks"),
    ({"shrinks": [-0.5]}, {}, "[augmentor] shrinks"),
    ({"shears": [3.0]}, {}, "[augmentor] shears"),
    ({"barrdistortion": True}, {"barrdistortion": {"radius": 0.0}}, "[barrdistortion] radius"),
    ({"pincdistortion": True}, {"pincdistortion": {"radius": -1.0}}, "[pincdistortion] radius"),
    ({"pincdistortion": True}, {"pincdistortion": {"amount": -1.5}}, "[pincdistortion] amount"),
    ({"barrdistortion": True}, {"barrdistortion": {"centers": []}}, "[barrdistortion] centers"),
    ({"deformation": True}, {"deformation": {"sigmoids": []}}, "[deformation] sigmoids"),
    ({"deformation": True}, {"deformation": {"alpah": -5}}, "[deformation] alpha"),
    ({"distortion": True}, {"distortion": {"gaussian_filter_rsigma": 0}}, "[distortion] gaussian_filter_rsigma"),
    ({"distortion": True}, {"distortion": {"distortions": [2.0]}}, "[distortion] distortions"),
    ({"sharpening": True}, {"sharpening": {"k": -1.0}}, "[sharpening] k"),
    ({"brightening": True}, {"brightening": {"alpha": 0.0}}, "[brightening] alpha"),
    ({"gaussian_noise": True, "noise_std": (0.2, 0.1)}, {}, "[augmentor] noise_std"),
    ({"gaussian_blur": True, "blur_sigma": (-1.0, 1.0)}, {}, "[augmentor] blur_sigma"),
    ({"gamma": True, "gamma_range": (0.0, 1.0)}, {}, "[augmentor] gamma_range"),
    ({"low_resolution": True, "low_resolution_zoom": (0.5, 2.0)}, {}, "[augmentor] low_resolution_zoom"),
    ({"scaling": True, "scaling_range": (1.0,)}, {}, "[augmentor] scaling_range"),
    ({"contrast": True, "contrast_range": (-1.0, 1.0)}, {}, "[augmentor] contrast_range"),
])
def test_config_errors_name_section_and_key(aug_kw, sections, where):
    with pytest.raises(ConfigError) as exc:
        build_augmenter(make_cfg(aug_kw, **sections))
    msg = str(exc.value)
    assert where in msg and "<test>" in msg and "expected" in msg and "\n" not in msg


def test_negative_probability():
    with pytest.raises(ConfigError, match=r"\[augmentor\] probability"):
        make_cfg({"hflip": True, "probability": -0.1})  # the loader already rejects it
    cfg = make_cfg({"hflip": True})
    bad = dataclasses.replace(cfg, augmentor=dataclasses.replace(cfg.augmentor, probability=-0.1))
    with pytest.raises(ConfigError, match=r"\[augmentor\] probability = -0.1: expected"):
        build_augmenter(bad)


def test_shape_mismatch_is_a_data_error():
    aug = build_augmenter(make_cfg({"hflip": True}))
    img, mask = square_sample(3)
    with pytest.raises(DataError):
        aug(img, mask[:-1], np.random.default_rng(0))


def test_augment_preview_writes_png_atomically(tmp_path):
    from PIL import Image

    cfg = make_cfg(ALL_ON, generator=False, **ALL_SECTIONS)  # the preview ignores the generator flag
    pairs = [square_sample(3, size=48), square_sample(1, size=48)]
    out = tmp_path / "sub" / "preview.png"
    path = augment_preview(cfg, pairs, n=4, out_png=out, seed=3)
    assert path == str(out) and out.is_file()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert os.listdir(out.parent) == ["preview.png"]  # no temp file left behind
    first = out.read_bytes()
    augment_preview(cfg, pairs, n=4, out_png=out, seed=3)
    assert out.read_bytes() == first  # same seed -> same picture
    # nothing enabled: still writes the un-augmented samples
    augment_preview(make_cfg({}), pairs, n=2, out_png=tmp_path / "plain.png")
    assert (tmp_path / "plain.png").is_file()


def test_field_magnitudes_match_the_original():
    from flexunet.data.augment import _distortion_field, _elastic_field

    rng = np.random.default_rng(0)
    # the original's alpah=1300, sigmoids=[8] moves pixels ~2.3 px (std) on a 3-channel image
    stds = [_elastic_field(rng, 256, 256, 1300.0, 8.0).data[:, 8:-8, 8:-8].std() for _ in range(4)]
    assert 1.7 < float(np.mean(stds)) < 2.9
    # distortion: the largest displacement of each component is distortions * size
    f = _distortion_field(rng, 128, 96, 40.0, 0.03)
    np.testing.assert_allclose(np.abs(f.data).max(axis=(1, 2)), [0.03 * 128] * 2, rtol=1e-5)
