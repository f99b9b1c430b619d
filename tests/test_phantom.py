"""Synthetic CT phantom: determinism, labels, anatomy, intensities, files."""
from __future__ import annotations

import csv
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from flexunet.data.phantom import _phantom, generate_phantom, phantom_affine, write_phantoms
from flexunet.errors import ConfigError, DataError

# Same 384 mm field of view as the default 256x256x48 @ 1.5x1.5x3 mm, 8x fewer voxels.
SMALL = (128, 128, 24)
SMALL_SP = (3.0, 3.0, 6.0)
TINY = (96, 96, 16)
TINY_SP = (4.0, 4.0, 9.0)
_CONN26 = np.ones((3, 3, 3), dtype=bool)


@pytest.fixture(scope="module")
def small_cases():
    return [_phantom(seed, SMALL, SMALL_SP) for seed in range(6)]


def test_deterministic_for_a_seed():
    a = generate_phantom(7, SMALL, SMALL_SP)
    b = generate_phantom(7, SMALL, SMALL_SP)
    c = generate_phantom(8, SMALL, SMALL_SP)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])


def test_types_values_and_affine(small_cases):
    for img, lab, aff, _ in small_cases:
        assert img.shape == SMALL and lab.shape == SMALL
        assert img.dtype == np.float32 and lab.dtype == np.uint8
        assert set(np.unique(lab).tolist()) <= {0, 1, 2}
        assert np.array_equal(img, np.rint(img))  # whole HU, so int16 files are lossless
        assert img.min() >= -1024 and img.max() <= 3071
        assert np.allclose(np.diag(aff)[:3], SMALL_SP)
        assert nib.aff2axcodes(aff) == ("R", "A", "S")
    assert np.allclose(phantom_affine(SMALL, SMALL_SP)[:3, 3], -0.5 * (np.array(SMALL) - 1) * np.array(SMALL_SP))


def test_tumour_counts_zero_to_four_across_seeds():
    counts = set()
    for seed in range(40):
        _, lab, _ = generate_phantom(seed, TINY, TINY_SP)
        n = ndi.label(lab == 2, structure=_CONN26)[1]
        assert 0 <= n <= 4
        if n:  # tumours lie inside the liver: their rim is mostly liver, not background
            rim = ndi.binary_dilation(lab == 2) & (lab != 2)
            assert np.count_nonzero(lab[rim] == 1) > 0.6 * np.count_nonzero(rim)
        counts.add(n)
        if counts == {0, 1, 2, 3, 4}:
            break
    assert counts == {0, 1, 2, 3, 4}


def test_small_and_large_tumours_occur(small_cases):
    # tumour radii range from 2-3 voxels in-plane (a few dozen voxels) to large masses
    sizes = []
    for _, lab, _, _ in small_cases:
        cc, _ = ndi.label(lab == 2, structure=_CONN26)
        sizes += np.bincount(cc.ravel())[1:].tolist()
    assert sizes and min(sizes) < 50 and max(sizes) > 1000


def test_liver_in_contiguous_slices_not_all(small_cases):
    for _, lab, _, _ in small_cases:
        ks = np.flatnonzero((lab >= 1).any(axis=(0, 1)))
        assert len(ks) > 4
        assert np.array_equal(ks, np.arange(ks[0], ks[-1] + 1))  # contiguous
        assert len(ks) < SMALL[2]  # not every slice
        assert ndi.label(lab >= 1, structure=_CONN26)[1] == 1  # one organ


def test_orientation_liver_right_spleen_left_spine_posterior(small_cases):
    nx, ny, _ = SMALL
    for img, lab, _, info in small_cases:
        li, _, _ = ndi.center_of_mass(lab >= 1)
        si, _, _ = ndi.center_of_mass(info["spleen"])
        assert li > (nx - 1) / 2 + 5, "liver must lie on the patient's right = high i in RAS+"
        assert si < (nx - 1) / 2 - 5, "spleen must lie on the patient's left = low i"
        bone = img > 500
        bi, bj, _ = ndi.center_of_mass(bone)
        assert bj < (ny - 1) / 2, "spine/bone must be posterior = low j"
        assert abs(bi - (nx - 1) / 2) < 10


def test_intensities_plausible(small_cases):
    diffs = []
    for img, lab, _, info in small_cases:
        liver = img[lab == 1].mean()
        assert 40 <= liver <= 90
        assert abs(img[info["spleen"]].mean() - liver) < 20, "spleen is a near-liver-intensity distractor"
        assert 20 <= img[info["kidneys"]].mean() <= 120
        assert img[:4, :4, :].mean() < -950  # air in the corners
        assert img.max() > 400  # bone
        noise = img[:20, :20, :].std()  # air: pure noise
        assert 8 <= noise <= 22
        if (lab == 2).any():
            diffs.append(liver - img[lab == 2].mean())
    assert diffs, "some of the seeds must have tumours"
    assert min(diffs) > 15, f"tumours must be clearly hypodense, got {diffs}"


def test_fat_and_muscle_layers():
    img, _, _, _ = _phantom(3, SMALL, SMALL_SP)
    hist_vals = img[(img > -300) & (img < 200)]
    # a fat peak around -100 and a soft-tissue peak around +50 both exist
    assert np.count_nonzero((hist_vals > -130) & (hist_vals < -70)) > 0.05 * hist_vals.size
    assert np.count_nonzero((hist_vals > 20) & (hist_vals < 90)) > 0.15 * hist_vals.size


def test_write_phantoms_files_and_manifest(tmp_path):
    manifest = write_phantoms(tmp_path / "ph", cases=2, seed=5, shape=TINY, spacing=TINY_SP)
    assert manifest == tmp_path / "ph" / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    assert [r["case_id"] for r in rows] == ["phantom_000", "phantom_001"]
    assert list(rows[0]) == ["case_id", "image", "label", "shape", "spacing", "n_liver", "n_tumour", "source", "notes"]
    for n, row in enumerate(rows):
        img_f = manifest.parent / row["image"]
        lab_f = manifest.parent / row["label"]
        assert img_f == tmp_path / "ph" / f"phantom_{n:03d}" / "image.nii.gz"
        img, lab = nib.load(img_f), nib.load(lab_f)
        assert np.allclose(img.header.get_zooms()[:3], TINY_SP)
        assert np.allclose(np.diag(img.affine)[:3], TINY_SP) and np.allclose(lab.affine, img.affine)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert np.asanyarray(lab.dataobj).dtype == np.uint8
        ref_img, ref_lab, _ = generate_phantom((5, n), TINY, TINY_SP)
        assert np.array_equal(np.asanyarray(lab.dataobj), ref_lab)
        assert np.array_equal(img.get_fdata(dtype=np.float32), ref_img)
        assert row["shape"] == "96x96x16" and row["spacing"] == "4x4x9"
        assert int(row["n_liver"]) == int((ref_lab == 1).sum())
        assert int(row["n_tumour"]) == int((ref_lab == 2).sum())
        assert int(row["notes"].split()[0]) == ndi.label(ref_lab == 2, structure=_CONN26)[1]
    assert not [p for p in (tmp_path / "ph").rglob(".*")], "no temporary files left behind"


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError):
        generate_phantom(0, (10, 10, 2), SMALL_SP)
    with pytest.raises(ConfigError):
        generate_phantom(0, SMALL, (1.0, -1.0, 1.0))
    with pytest.raises(ConfigError):
        generate_phantom(-1, SMALL, SMALL_SP)
    with pytest.raises(ConfigError):
        write_phantoms(tmp_path, cases=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError):
        write_phantoms(tmp_path / "file", cases=1, shape=TINY, spacing=TINY_SP)


@pytest.mark.slow
def test_eight_full_size_cases_fast_enough():
    t0 = time.perf_counter()
    for n in range(8):
        generate_phantom((0, n))
    assert time.perf_counter() - t0 < 20
