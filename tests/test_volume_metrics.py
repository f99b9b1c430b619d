"""Volume-level LiTS metrics: overlap, surface distances in mm, empty cases, aggregation, folders."""
from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest

from flexunet.errors import DataError
from flexunet.metrics.volume import aggregate, case_metrics, surface_distances
from flexunet.metrics.volume_eval import CSV_COLUMNS, evaluate_volume_dirs, format_table


def _cube(shape, lo, hi, value=1):
    a = np.zeros(shape, dtype=np.uint8)
    a[tuple(slice(l, h) for l, h in zip(lo, hi))] = value
    return a


def _brute_force(p, g, spacing):
    """Directed surface distances by explicit pairwise distances between surface voxel centres."""
    from scipy import ndimage as ndi

    def surf(m):
        return m & ~ndi.binary_erosion(m, structure=ndi.generate_binary_structure(3, 1), border_value=0)

    sp = np.asarray(spacing)
    cp = np.argwhere(surf(p)) * sp
    cg = np.argwhere(surf(g)) * sp
    d = np.sqrt(((cp[:, None, :] - cg[None, :, :]) ** 2).sum(-1))
    return d.min(1), d.min(0)


# --------------------------------------------------------------------------- overlap


def test_hand_computed_overlap():
    gt = np.zeros((4, 4, 1), np.uint8)
    pred = np.zeros((4, 4, 1), np.uint8)
    gt[0, 0:4, 0] = 2           # 4 voxels
    pred[0, 1:4, 0] = 2         # 3 of them ...
    pred[1, 0:2, 0] = 2         # ... plus 2 false positives
    r = case_metrics(pred, gt, (1.0, 1.0, 1.0))["classes"]["tumour"]
    assert (r["tp"], r["fp"], r["fn"]) == (3, 2, 1)
    assert r["dice"] == pytest.approx(6 / 9)
    assert r["iou"] == pytest.approx(3 / 6)
    assert r["voe"] == pytest.approx(0.5)
    assert r["rvd"] == pytest.approx((5 - 4) / 4)
    assert r["status"] == "tp"


def test_liver_class_includes_tumour():
    gt = _cube((10, 10, 10), (2, 2, 2), (8, 8, 8), 1)
    gt[4:6, 4:6, 4:6] = 2
    pred = (gt > 0).astype(np.uint8)  # whole liver predicted as label 1, tumour missed
    res = case_metrics(pred, gt, (1, 1, 1))
    liver, tumour = res["classes"]["liver"], res["classes"]["tumour"]
    assert liver["dice"] == 1.0 and liver["region"] == "label>=1"
    assert liver["gt_voxels"] == 216
    assert tumour["status"] == "false_negative" and tumour["dice"] == 0.0 and tumour["rvd"] == -1.0
    assert math.isnan(tumour["assd_mm"]) and math.isnan(tumour["hd95_mm"])


def test_empty_cases():
    z = np.zeros((5, 5, 5), np.uint8)
    one = _cube((5, 5, 5), (1, 1, 1), (3, 3, 3), 2)
    both = case_metrics(z, z, (1, 1, 1))["classes"]
    for r in both.values():
        assert r["status"] == "both_empty"
        assert (r["dice"], r["iou"], r["voe"], r["rvd"], r["assd_mm"], r["hd95_mm"]) == (1, 1, 0, 0, 0, 0)
    fp = case_metrics(one, z, (1, 1, 1))["classes"]["tumour"]
    assert fp["status"] == "false_positive" and fp["dice"] == 0 and fp["voe"] == 1
    assert math.isnan(fp["rvd"]) and math.isnan(fp["assd_mm"]) and math.isnan(fp["hd95_mm"])
    fn = case_metrics(z, one, (1, 1, 1))["classes"]["tumour"]
    assert fn["status"] == "false_negative" and fn["rvd"] == -1.0 and math.isnan(fn["hd95_mm"])


# --------------------------------------------------------------------------- distances


@pytest.mark.parametrize("axis,expected", [(0, 2 * 0.5), (1, 2 * 2.0), (2, 2 * 3.0)])
def test_parallel_plates_exact_distance_with_anisotropic_spacing(axis, expected):
    spacing = (0.5, 2.0, 3.0)
    shape = (12, 12, 12)
    lo, hi = [1, 1, 1], [11, 11, 11]
    lo_b, hi_b = list(lo), list(hi)
    lo[axis], hi[axis] = 4, 5          # one-voxel-thick plate: its own surface
    lo_b[axis], hi_b[axis] = 6, 7      # the same plate two voxels further along `axis`
    a, b = _cube(shape, lo, hi, 2), _cube(shape, lo_b, hi_b, 2)
    r = case_metrics(b, a, spacing)["classes"]["tumour"]
    assert r["assd_mm"] == pytest.approx(expected)
    assert r["hd95_mm"] == pytest.approx(expected)
    assert r["hd_mm"] == pytest.approx(expected)
    assert r["dice"] == 0.0 and r["status"] == "tp"


def test_offset_cubes_match_brute_force():
    spacing = (0.8, 1.2, 2.5)
    shape = (24, 24, 16)
    g = _cube(shape, (5, 5, 3), (15, 15, 10)).astype(bool)
    p = _cube(shape, (7, 5, 4), (17, 15, 11)).astype(bool)  # offset 2 voxels in i, 1 in k
    d_pg, d_gp = surface_distances(p, g, spacing)
    b_pg, b_gp = _brute_force(p, g, spacing)
    assert np.allclose(np.sort(d_pg), np.sort(b_pg)) and np.allclose(np.sort(d_gp), np.sort(b_gp))
    r = case_metrics(p.astype(np.uint8) * 2, g.astype(np.uint8) * 2, spacing)["classes"]["tumour"]
    both = np.concatenate([b_pg, b_gp])
    assert r["assd_mm"] == pytest.approx(both.mean())
    assert r["hd95_mm"] == pytest.approx(max(np.percentile(b_pg, 95), np.percentile(b_gp, 95)))
    # the largest distance is the offset itself: sqrt((2*0.8)^2 + (1*2.5)^2) at the shifted corners
    assert r["hd_mm"] == pytest.approx(both.max())
    assert r["hd_mm"] <= math.hypot(2 * 0.8, 2.5) + 1e-9
    # spacing matters: isotropic 1 mm gives other numbers
    r_iso = case_metrics(p.astype(np.uint8) * 2, g.astype(np.uint8) * 2, (1, 1, 1))["classes"]["tumour"]
    assert r_iso["assd_mm"] != pytest.approx(r["assd_mm"])


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_offset_cubes_agree_with_monai():
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    spacing = (0.8, 1.2, 2.5)
    g = _cube((24, 24, 16), (5, 5, 3), (15, 15, 10)).astype(bool)
    p = _cube((24, 24, 16), (7, 5, 4), (17, 15, 11)).astype(bool)
    r = case_metrics(p.astype(np.uint8) * 2, g.astype(np.uint8) * 2, spacing)["classes"]["tumour"]
    yp = torch.from_numpy(p[None, None].astype(np.float32))
    yg = torch.from_numpy(g[None, None].astype(np.float32))
    m_assd = monai_metrics.compute_average_surface_distance(yp, yg, include_background=True, symmetric=True,
                                                             spacing=list(spacing)).item()
    m_hd95 = monai_metrics.compute_hausdorff_distance(yp, yg, include_background=True, percentile=95,
                                                      spacing=list(spacing)).item()
    assert r["assd_mm"] == pytest.approx(m_assd, rel=1e-5)
    assert r["hd95_mm"] == pytest.approx(m_hd95, rel=1e-5)


def test_distances_do_not_depend_on_cropping_near_the_border():
    # masks touching the array edge: the outside counts as background
    spacing = (1.0, 1.0, 2.0)
    g = _cube((10, 10, 6), (0, 0, 0), (5, 10, 6)).astype(bool)
    p = _cube((10, 10, 6), (0, 0, 0), (6, 10, 6)).astype(bool)
    d_pg, d_gp = surface_distances(p, g, spacing)
    b_pg, b_gp = _brute_force(p, g, spacing)
    assert np.allclose(np.sort(d_pg), np.sort(b_pg)) and np.allclose(np.sort(d_gp), np.sort(b_gp))


# --------------------------------------------------------------------------- volumetry and aggregation


def test_volumetry_ml_and_tumour_components():
    gt = _cube((20, 20, 10), (0, 0, 0), (10, 10, 10), 1)  # 1000 voxels of liver incl. tumour
    gt[1:3, 1:3, 1:3] = 2                                  # tumour A (8 voxels)
    gt[3, 3, 3] = 2                                        # diagonal neighbour: same component (26-conn)
    gt[6:8, 6:8, 6:8] = 2                                  # tumour B
    res = case_metrics(gt, gt, (1.0, 2.0, 0.5))
    v = res["volumetry"]["gt"]
    assert v["liver_ml"] == pytest.approx(1000 * 1.0 / 1000)
    assert v["tumour_ml"] == pytest.approx(17 * 1.0 / 1000)
    assert v["tumour_pct_of_liver"] == pytest.approx(1.7)
    assert v["n_tumours"] == 2
    assert res["classes"]["tumour"]["gt_components"] == 2
    assert res["classes"]["liver"]["gt_ml"] == pytest.approx(1.0)
    empty = case_metrics(np.zeros_like(gt), gt, (1, 1, 1))["volumetry"]["pred"]
    assert empty["liver_ml"] == 0 and math.isnan(empty["tumour_pct_of_liver"]) and empty["n_tumours"] == 0


def test_global_dice_differs_from_per_case_mean():
    big = _cube((20, 20, 20), (0, 0, 0), (10, 10, 10), 1)      # 1000 voxels, predicted perfectly
    small = _cube((20, 20, 20), (0, 0, 0), (2, 2, 2), 1)       # 8 voxels, missed entirely
    c1 = case_metrics(big, big, (1, 1, 1))
    c2 = case_metrics(np.zeros_like(small), small, (1, 1, 1))
    agg = aggregate([c1, c2])["liver"]
    assert agg["dice_mean"] == pytest.approx(0.5)
    assert agg["dice_median"] == pytest.approx(0.5)
    assert agg["dice_std"] == pytest.approx(0.5)
    assert agg["dice_global"] == pytest.approx(2000 / (2000 + 8))
    assert (agg["tp"], agg["fp"], agg["fn"]) == (1000, 0, 8)
    assert agg["assd_mm_mean"] == 0.0 and agg["assd_mm_n"] == 1  # the NaN of the missed case is left out
    assert agg["status"]["false_negative"] == 1 and agg["status"]["tp"] == 1
    # tumour: both cases empty -> both_empty, Dice 1
    tum = aggregate([c1, c2])["tumour"]
    assert tum["dice_mean"] == 1.0 and tum["dice_global"] == 1.0 and tum["status"]["both_empty"] == 2
    # pooled counts given from outside take precedence
    pooled = aggregate([c1, c2], {"liver": {"tp": 10, "fp": 0, "fn": 10}})["liver"]
    assert pooled["dice_global"] == pytest.approx(20 / 30)


def test_aggregate_all_nan_distances_give_nan_without_warning(recwarn):
    z = np.zeros((4, 4, 4), np.uint8)
    one = _cube((4, 4, 4), (1, 1, 1), (2, 2, 2), 2)
    agg = aggregate([case_metrics(z, one, (1, 1, 1))])["tumour"]
    assert math.isnan(agg["assd_mm_mean"]) and agg["assd_mm_n"] == 0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_shape_mismatch_and_bad_dtype():
    with pytest.raises(DataError):
        case_metrics(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 4), np.uint8), (1, 1, 1))
    with pytest.raises(DataError):
        case_metrics(np.zeros((3, 3, 3), np.float32), np.zeros((3, 3, 3), np.uint8), (1, 1, 1))
    with pytest.raises(DataError):
        case_metrics(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 3), np.uint8), (1, 0, 1))


# --------------------------------------------------------------------------- folders


def _save(path, arr, spacing=(1.0, 1.0, 2.0), shift=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag(list(spacing) + [1.0])
    aff[0, 3] = shift
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), aff), str(path))


def _volumes():
    shape = (16, 16, 8)
    gt_a = _cube(shape, (2, 2, 1), (12, 12, 7), 1)
    gt_a[4:7, 4:7, 2:5] = 2
    pred_a = gt_a.copy()
    pred_a[4:7, 4:7, 2:5] = 1  # tumour missed
    gt_b = _cube(shape, (3, 3, 2), (10, 10, 6), 1)
    pred_b = _cube(shape, (4, 3, 2), (11, 10, 6), 1)
    gt_c = _cube(shape, (1, 1, 1), (8, 8, 5), 1)
    gt_c[2:4, 2:4, 2:4] = 2
    return {"case_a": (pred_a, gt_a), "case_b": (pred_b, gt_b), "case_c": (gt_c.copy(), gt_c)}


def test_evaluate_volume_dirs_canonical_tree(tmp_path):
    vols = _volumes()
    gt_dir, pred_dir, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    for case, (p, g) in vols.items():
        _save(gt_dir / case / "label.nii.gz", g)
    _save(pred_dir / "case_a.nii.gz", vols["case_a"][0])            # <case>.nii.gz
    _save(pred_dir / "case_b_pred.nii.gz", vols["case_b"][0])       # <case>_pred.nii.gz
    _save(pred_dir / "case_c" / "label.nii.gz", vols["case_c"][0])  # <case>/label.nii.gz
    _save(pred_dir / "stray.nii.gz", vols["case_a"][0])
    (gt_dir / "manifest.csv").write_text("case_id\n")

    res = evaluate_volume_dirs(pred_dir, gt_dir, out)
    assert [c["case_id"] for c in res["cases"]] == ["case_a", "case_b", "case_c"]
    assert res["unmatched_predictions"] == [str(pred_dir / "stray.nii.gz")]
    a = res["cases"][0]
    assert a["classes"]["liver"]["dice"] == 1.0
    assert a["classes"]["tumour"]["status"] == "false_negative"
    b = res["cases"][1]["classes"]["liver"]
    assert b["dice"] == pytest.approx(2 * 42 / (49 + 49) * 1.0)  # 6x7 overlap columns of 7x7, 4 slices
    assert res["cases"][0]["spacing"] == [1.0, 1.0, 2.0]
    assert res["cases"][0]["volumetry"]["gt"]["liver_ml"] == pytest.approx(600 * 2.0 / 1000)

    rows = list(csv.DictReader((out / "volume_metrics.csv").open()))
    assert len(rows) == 3 * 2
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1]["class_name"] == "tumour" and rows[1]["status"] == "false_negative"
    assert rows[1]["assd_mm"] == "nan"
    data = json.loads((out / "volume_metrics.json").read_text())  # strict JSON: NaN written as null
    assert data["cases"][0]["classes"]["tumour"]["assd_mm"] is None
    assert data["aggregate"]["liver"]["dice_global"] == pytest.approx(res["aggregate"]["liver"]["dice_global"])
    assert data["aggregate"]["n_cases"] == 3 and "liver_ml_abs_diff_mean" in data["aggregate"]["volumetry"]
    table = format_table(res)
    assert "liver" in table and "tumour" in table and "case_b" in table and "global" in table
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_evaluate_volume_dirs_flat_gt(tmp_path):
    vols = _volumes()
    for case, (p, g) in vols.items():
        _save(tmp_path / "gt" / f"{case}.nii.gz", g)
        _save(tmp_path / "pred" / f"{case}.nii", p)
    res = evaluate_volume_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "pred")
    assert len(res["cases"]) == 3 and res["unmatched_predictions"] == []
    assert (tmp_path / "pred" / "volume_metrics.csv").is_file()


def test_evaluate_volume_dirs_errors_name_both_files(tmp_path):
    vols = _volumes()
    p, g = vols["case_a"]
    _save(tmp_path / "gt" / "case_a" / "label.nii.gz", g)
    _save(tmp_path / "pred" / "case_a.nii.gz", p[:, :, :7])
    with pytest.raises(DataError) as e:
        evaluate_volume_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "out")
    assert "case_a.nii.gz" in str(e.value) and "label.nii.gz" in str(e.value) and "shape" in str(e.value)
    _save(tmp_path / "pred" / "case_a.nii.gz", p, shift=5.0)
    with pytest.raises(DataError) as e:
        evaluate_volume_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "out")
    assert "case_a.nii.gz" in str(e.value) and "label.nii.gz" in str(e.value) and "affine" in str(e.value)
    assert "\n" not in str(e.value)
    # missing prediction
    _save(tmp_path / "gt" / "case_b" / "label.nii.gz", vols["case_b"][1])
    _save(tmp_path / "pred" / "case_a.nii.gz", p)
    with pytest.raises(DataError, match="case_b"):
        evaluate_volume_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "out")
    # two predictions for one case
    _save(tmp_path / "pred" / "case_b.nii.gz", vols["case_b"][0])
    _save(tmp_path / "pred" / "case_b_pred.nii.gz", vols["case_b"][0])
    with pytest.raises(DataError, match="several predictions"):
        evaluate_volume_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "out")
    # label values outside the classes
    (tmp_path / "pred" / "case_b_pred.nii.gz").unlink()
    bad = vols["case_b"][0].copy()
    bad[0, 0, 0] = 7
    _save(tmp_path / "pred" / "case_b.nii.gz", bad)
    with pytest.raises(DataError, match="7"):
        evaluate_volume_dirs(tmp_path / "pred", tmp_path / "gt", tmp_path / "out")
    # empty / missing folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        evaluate_volume_dirs(tmp_path / "pred", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DataError):
        evaluate_volume_dirs(tmp_path / "nope", tmp_path / "gt", tmp_path / "out")
