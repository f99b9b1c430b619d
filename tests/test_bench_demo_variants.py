"""bench/demo_variants.py helpers: the demo.cases pseudo key and the selection-set summary."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def dv():
    from conftest import load_bench_module

    return load_bench_module("demo_variants")


def test_demo_cases_becomes_cases_and_a_train_list_without_valid_and_test(dv):
    extra, sets = dv._demo_sets(["demo.cases=12", "train.seed=7"])
    assert extra == ["--cases", "12"]
    train = sets[0].partition("=")[2]
    names = json.loads(train)
    assert len(names) == 9 and not {"phantom_005", "phantom_006", "phantom_007"} & set(names)
    assert sets[1] == "train.seed=7"
    assert dv._demo_sets(["model.loss=dice_ce"]) == ([], ["model.loss=dice_ce"])


@pytest.mark.parametrize("n", [5, 21, 30])
def test_demo_cases_may_not_reach_the_selection_set(dv, n):
    with pytest.raises(SystemExit, match="phantom_020"):
        dv._demo_sets([f"demo.cases={n}"])


def test_selection_summary_pools_only_cases_with_tumour(dv, tmp_path, monkeypatch):
    cases = [  # two cases with tumour, one without (a false positive there)
        {"case_id": "a", "classes": {"liver": {"dice": 0.9}, "tumour": {"dice": 0.5, "pred_ml": 1.0, "gt_ml": 3.0,
                                                                       "status": "tp"}}},
        {"case_id": "b", "classes": {"liver": {"dice": 0.8}, "tumour": {"dice": 1.0, "pred_ml": 1.0, "gt_ml": 1.0,
                                                                       "status": "tp"}}},
        {"case_id": "c", "classes": {"liver": {"dice": 0.7}, "tumour": {"dice": 0.0, "pred_ml": 0.5, "gt_ml": 0.0,
                                                                       "status": "false_positive"}}},
    ]
    d = tmp_path / "run"
    (d / "eval_select").mkdir(parents=True)
    (d / "eval_select" / "volume_metrics.json").write_text(json.dumps({"cases": cases, "aggregate": {}}))
    monkeypatch.setattr(dv, "SELECT", ["a", "b", "c"])
    monkeypatch.setattr(dv, "_flexunet", lambda *a: None)  # no inference: the metrics file is given
    sel = tmp_path / "sel"
    for c in "abc":
        (sel / c).mkdir(parents=True)
        (sel / c / "label.nii.gz").write_bytes(b"")
    s = dv.score_selection(d, [], sel)
    assert s["tumour_mean"] == pytest.approx(0.75)
    assert s["tumour_pooled"] == pytest.approx(2 * (1.0 + 1.0) / (4.0 + 2.0))  # 2*sum(I)/sum(P+G)
    assert s["liver_mean"] == pytest.approx(0.8)
    assert (s["n_with_tumour"], s["fp_on_tumour_free"], s["n_tumour_free"]) == (2, 1, 1)


def test_post_variant_refuses_settings_that_need_training(dv, tmp_path):
    base = {"name": "shipped", "sets": [], "seconds": 1.0, "ok": True, "test": {"cases": {}}}
    with pytest.raises(SystemExit, match="expected \\[infer\\] keys only"):
        dv.post_variant("x", base, ["infer.min_tumour_mm3=300", "train.seed=7"], tmp_path)
    with pytest.raises(SystemExit, match="its own name"):
        dv.post_variant("shipped", base, ["infer.min_tumour_mm3=300"], tmp_path)


def test_post_variant_reuses_the_base_model_and_adds_its_settings(dv, tmp_path, monkeypatch):
    out = tmp_path / "out"
    b = out / "runs" / "shipped"
    (b / "models").mkdir(parents=True)
    (b / "cases" / "phantom_006").mkdir(parents=True)
    (b / "cases" / "phantom_006" / "label.nii.gz").write_bytes(b"x")
    (b / "train_eval_infer.config").write_text("[model]\n")
    calls = []
    monkeypatch.setattr(dv, "_flexunet", lambda *a: calls.append(a))
    monkeypatch.setattr(dv, "score_run", lambda d, sets_args, o: {"sets_args": sets_args})
    base = {"name": "shipped", "sets": ["train.seed=7"], "seconds": 5.0, "ok": True, "epochs": 9,
            "test": {"cases": {"phantom_006": {}}}}
    row = dv.post_variant("pp", base, ["infer.min_tumour_mm3=300"], out)
    d = out / "runs" / "pp"
    assert (d / "models").resolve() == (b / "models").resolve() and (d / "gt" / "phantom_006" / "label.nii.gz").exists()
    assert row["sets"] == ["train.seed=7", "infer.min_tumour_mm3=300"] and row["post_of"] == "shipped"
    assert row["epochs"] == 9 and row["sets_args"] == ["--set", "train.seed=7", "--set", "infer.min_tumour_mm3=300"]
    assert calls[0][0] == "infer-volume" and calls[0][-2:] == ("--set", "infer.min_tumour_mm3=300")
    assert calls[1][0] == "evaluate-volume"
    # the row's sets are relative to today's demo config, so that is the config it is scored with
    from flexunet.demo import DEMO_CONFIG

    assert (d / "train_eval_infer.config").read_text() == DEMO_CONFIG.read_text()


def test_a_post_of_a_post_links_the_trained_run_and_survives_renaming_the_middle_row(dv, tmp_path, monkeypatch):
    out = tmp_path / "out"
    b = out / "runs" / "trained"
    (b / "models").mkdir(parents=True)
    (b / "models" / "best.pt").write_bytes(b"w")
    (b / "cases" / "phantom_006").mkdir(parents=True)
    (b / "cases" / "phantom_006" / "label.nii.gz").write_bytes(b"x")
    monkeypatch.setattr(dv, "_flexunet", lambda *a: None)
    monkeypatch.setattr(dv, "score_run", lambda d, sets_args, o: {})
    base = {"name": "trained", "sets": [], "seconds": 5.0, "ok": True, "epochs": 9,
            "test": {"cases": {"phantom_006": {}}}}
    mid = dv.post_variant("mid", base, ["infer.tumour_grow=1"], out)
    mid["test"] = base["test"]  # what score_run (stubbed here) would have added
    dv.post_variant("top", mid, ["infer.tumour_grow=3"], out)
    top = out / "runs" / "top"
    assert not (top / "models").resolve().is_relative_to((out / "runs" / "mid").resolve())
    (out / "runs" / "mid").rename(out / "runs" / "renamed")
    assert (top / "models" / "best.pt").read_bytes() == b"w"  # still reaches the trained run's weights
    assert not Path(os.readlink(top / "models")).is_absolute()


def test_finish_variant_scores_the_saved_model_of_a_stopped_demo(dv, tmp_path, monkeypatch):
    out = tmp_path / "out"
    d = out / "runs" / "v"
    row = {"name": "v", "sets": ["train.seed=7"], "seconds": 500.0, "ok": False, "error": ["boom"]}
    with pytest.raises(SystemExit, match="training finished"):
        dv.finish_variant(row, out)
    (d / "models").mkdir(parents=True)
    (d / "models" / "best.pt").write_bytes(b"x")
    (d / "gt" / "phantom_006").mkdir(parents=True)
    (d / "eval").mkdir()
    (d / "eval" / "train_losses.csv").write_text("epoch, loss, val_loss\n0, 1, 1\n1, 0.5, 0.4\n")
    (d / "history.json").write_text(json.dumps({"val_loss": [1.0, 0.4]}))
    calls = []
    monkeypatch.setattr(dv, "_flexunet", lambda *a: calls.append(a))
    monkeypatch.setattr(dv, "score_run", lambda d, sets_args, o: {"sets_args": sets_args})
    new = dv.finish_variant(row, out)
    assert new["ok"] and new["finished_later"] and "error" not in new and new["epochs"] == 2 and new["best_epoch"] == 2
    assert new["sets_args"] == ["--set", "train.seed=7"] and new["seconds"] == 500.0
    assert calls[0][0] == "infer-volume" and str(d / "cases" / "phantom_006" / "image.nii.gz") in calls[0]
    assert calls[0][-2:] == ("--set", "train.seed=7") and calls[1][0] == "evaluate-volume"


def test_lesion_summary_splits_small_and_large(dv):
    rows = [{"voxels": 20, "found": 0.6, "background": 0.0, "surface": 0.0},
            {"voxels": 150, "found": 0.2, "background": 0.7, "surface": 0.2},
            {"voxels": 500, "found": 0.5, "background": 0.1, "surface": 0.0},
            {"voxels": 99, "found": 0.0, "background": 0.0, "surface": 0.3}]
    s = dv.lesion_summary(rows)
    assert s == {"small": {"n": 2, "found": 1, "background": 0, "background_at_surface": 0},
                 "large": {"n": 2, "found": 1, "background": 1, "background_at_surface": 1}}
    assert dv._found({"select_lesions": s}) == "1 / 1 (1 at the liver's surface) of 2" and dv._found({}) == "-"


def test_false_tumour_lists_predicted_components_that_are_not_tumour(dv, tmp_path):
    import nibabel as nib
    import numpy as np

    d = tmp_path / "run"
    (d / "cases" / "c").mkdir(parents=True)
    (d / "pred").mkdir()
    lab = np.zeros((20, 20, 4), np.uint8)
    lab[2:15, 2:15, :] = 1
    lab[4:8, 4:8, 1:3] = 2
    pred = lab.copy()
    pred[10:12, 10:12, 1] = 2          # 4 voxels of liver called tumour
    pred[16:19, 16:19, 2] = 2          # 9 voxels of background called tumour
    img = np.full(lab.shape, 60.0, np.float32)
    img[16:19, 16:19, 2] = -5.0
    for name, arr in (("cases/c/image.nii.gz", img), ("cases/c/label.nii.gz", lab), ("pred/c.nii.gz", pred)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), d / name)
    rows = sorted(dv.false_tumour(d, ["c"]), key=lambda r: r["voxels"])
    assert [r["voxels"] for r in rows] == [4, 9]  # the true lesion is not listed
    assert rows[0]["label_liver"] == 1.0 and rows[1]["label_background"] == 1.0 and rows[1]["hu"] == -5.0
    les = dv.lesions(d, ["c"])
    assert len(les) == 1 and les[0]["voxels"] == 32 and les[0]["found"] == 1.0 and les[0]["surface"] == 0.0


def test_best_epoch_is_the_lowest_valid_loss(dv, tmp_path):
    assert dv._best_epoch(tmp_path) is None
    (tmp_path / "history.json").write_text(json.dumps({"val_loss": [0.5, 0.3, 0.4, 0.31]}))
    assert dv._best_epoch(tmp_path) == 2



def test_best_epoch_of_a_post_row_is_its_trained_models(dv, tmp_path):
    (tmp_path / "trained" / "models").mkdir(parents=True)
    (tmp_path / "trained" / "history.json").write_text(json.dumps({"val_loss": [0.5, 0.2, 0.4]}))
    (tmp_path / "post").mkdir()
    (tmp_path / "post" / "models").symlink_to(tmp_path / "trained" / "models", target_is_directory=True)
    assert dv._best_epoch(tmp_path / "post") == 2
    # a post row of that post row (relative link to a link)
    (tmp_path / "post2").mkdir()
    (tmp_path / "post2" / "models").symlink_to("../post/models", target_is_directory=True)
    assert dv._best_epoch(tmp_path / "post2") == 2
    # a trained run's own history wins, wherever its models/ points
    (tmp_path / "post" / "history.json").write_text(json.dumps({"val_loss": [0.1, 0.2]}))
    assert dv._best_epoch(tmp_path / "post") == 1


def test_demo_steps_reads_the_step_table_after_the_summary(dv):
    text = ("== train: flexunet train x\n  not a step 1.0 s\n== demo summary\nliver   per-case Dice 0.9\n"
            "  phantom                 1.5 s\n  infer (2D overlays)    12.0 s\n  total                 13.5 s\n")
    assert dv.demo_steps(text) == {"phantom": 1.5, "infer (2D overlays)": 12.0, "total": 13.5}
    assert dv.demo_steps("no summary") == {}


def test_run_variant_records_each_demo_s_own_peak_memory_and_steps(dv, tmp_path, monkeypatch):
    script = tmp_path / "fake_demo.py"  # a "demo" holding MB megabytes, then failing
    script.write_text("import os, sys\nx = b'x' * (int(os.environ['MB']) * 10**6)\nprint('== demo summary')\n"
                      "print('  train                   7.0 s')\nsys.exit(3)\n")
    real_run = dv._common.run_peak_rss
    monkeypatch.setattr(dv._common, "run_peak_rss", lambda cmd, log, env: real_run([cmd[0], str(script)], log, env))
    ballast = b"x" * 500_000_000  # this process bigger than either child: its high-water mark must not count
    rows = {}
    for name, mb in (("big", "400"), ("small", "10")):  # the big one first: a running maximum would repeat it
        monkeypatch.setitem(dv._ENV, "MB", mb)
        rows[name] = dv.run_variant(name, [], tmp_path / "out", None)
    assert rows["small"]["ok"] is False and rows["small"]["steps"] == {"train": 7.0}
    assert rows["big"]["peak_rss_gb"] > 0.4 > 0.2 > rows["small"]["peak_rss_gb"]
    assert (tmp_path / "out" / "logs" / "small.log").read_text().startswith("== demo summary")
    assert len(ballast) and not list((tmp_path / "out" / "logs").glob("*.maxrss"))


def test_post_infer_settings_is_every_infer_setting_on_every_seed_s_run(dv):
    specs = dv.infer_post_specs()
    assert len(specs) == len(dv.INFER_SETTINGS) * len(dv.SEEDS) == 15
    assert specs[:2] == ['best1=shipped:infer.weights=["best.pt"]', 'best1_seed7=seed7:infer.weights=["best.pt"]']
    assert "nogrow_seed123=seed123:" + ";".join(dv.INFER_SETTINGS["nogrow"]) in specs
    assert {s.partition("=")[0] for s in specs} <= set(dv.VARIANTS)  # the rows' names are the table's variants


def test_render_marks_rows_without_training_figures(dv):
    case = {"liver": {"dice": 0.9}, "tumour": {"dice": 0.5}}
    row = {"name": "best1", "sets": ['infer.weights=["best.pt"]'], "ok": True, "seconds": 60.0, "epochs": 3,
           "valid": {"cases": {"phantom_005": case}}, "test": {"cases": {"phantom_006": case},
                                                              "aggregate": {"liver": 0.9, "tumour": 0.5}}}
    failed = {"name": "seed7", "sets": ["train.seed=7"], "ok": False}
    report = {"meta": {"command": "python bench/demo_variants.py", "later_commands": ["python x --post a"],
                       "machine": {}}, "runs": [row, failed]}
    text = dv.render(report)
    assert "- also (rows kept from or added by): `python x --post a`" in text
    best1 = [line for line in text.splitlines() if line.startswith("| best1")][0]
    assert best1.rstrip(" |").endswith("| 1.0 | - | -")
    widths = {line.count("|") for line in text.splitlines() if line.startswith("| ")}
    assert len(widths) == 1  # the failed row has every column
