"""Smoke tests of bench/quality.py's pipeline on tiny phantoms (the real-CT run itself: `make bench-quality`)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def quality():
    from conftest import load_bench_module

    return load_bench_module("quality")


# a model small enough that a few seconds of training and a 16-slice volume take seconds
TINY = {
    "model.image_width": 64, "model.image_height": 64, "model.base_filters": 4, "model.base_kernels": (3, 3),
    "model.num_layers": 3, "train.batch_size": 4, "train.num_workers": 0, "train.precision": "32",
    "train.epochs": 2, "train.max_steps_per_epoch": 2,
}


def _run(quality, tmp_path, inprocess: bool, recipes=("a", "b", "c")):
    qd = quality.qd
    cases = tmp_path / "cases"
    ids = qd.make_phantoms(cases, 3, seed=5, shape=(64, 64, 16), spacing=(5.0, 5.0, 8.0))
    minmax = tmp_path / "cases_minmax"
    ranges = qd.make_minmax(cases, minmax, ids)
    assert set(ranges) == set(ids) and all(lo < hi for lo, hi in ranges.values())
    p0, p1, p2 = ids
    folds = [
        quality.Fold("T", "tumour fold", [p0, p1], [p2], tumour_cases=[p2]),
        quality.Fold("L", "liver fold", [p1, p2], [p0], note="liver only"),
    ]
    phantom_fold = quality.Fold("P", "phantom-only", [p0], [p1, p2], valid=[p2], tumour_cases=[p2])
    ct_text, ct_src = quality._template(quality.CT_CONFIG)
    recipes_ = quality.build_recipes(list(recipes), ct_text, ct_src, quality.ORIGINAL_CONFIG_TEXT, "embedded")
    out = tmp_path / "out"
    report = quality.run_benchmark(
        recipes=recipes_, folds=folds, phantom_fold=phantom_fold, cases=cases, cases_minmax=minmax, out=out,
        budget_minutes=0.1, phantom_minutes=0.05, meta={"command": "test", "machine": {}, "started": "now"},
        data={"notes": ["tiny phantoms"], "cases": {}}, sets={"*": TINY}, inprocess=inprocess)
    return report, out


def test_pipeline_on_phantoms_inprocess(quality, tmp_path):
    report, out = _run(quality, tmp_path, inprocess=True)
    failed = [r for r in report["runs"] if not r.get("ok")]
    assert not failed, failed
    assert [(r["recipe"], r["fold"]) for r in report["runs"]] == [("a", "T"), ("b", "T"), ("a", "L"), ("b", "L"),
                                                                  ("c", "P")]
    md = (out / "quality.md").read_text()
    js = json.loads((out / "quality.json").read_text())
    assert "| recipe | fold | held-out case | liver Dice | tumour Dice |" in md
    assert "dice_coef_multiclass" in md and "Deltas (b) - (a)" in md
    assert "Budget: 0.1 min of training per recipe (a, b), split over 2 fold(s): 0.05 min per model" in md
    runs = {(r["recipe"], r["fold"]): r for r in js["runs"]}
    # fold T scores the tumour, fold L (liver-only label) does not
    t_case = runs[("b", "T")]["cases"]["phantom_002"]
    assert t_case["tumour"] is not None and 0.0 <= t_case["liver"]["dice"] <= 1.0
    assert runs[("b", "L")]["cases"]["phantom_000"]["tumour"] is None
    # recipe (a): the original's preprocessing and config survive in the written config
    cfg_a = (out / "runs" / "a_T" / "train_eval_infer.config").read_text()
    assert "hu_window = (0, 255)" in cfg_a and "context_slices = False" in cfg_a
    assert 'loss           = "categorical_crossentropy"' in cfg_a and "learning_rate  = 0.00005" in cfg_a
    assert "max_time_minutes = 0.05" in cfg_a
    assert "train_cases = ['phantom_000', 'phantom_001']" in cfg_a
    # validation = held-out slice blocks of the training patients (disjoint from train)
    ds = out / "runs" / "b_T" / "dataset"
    tr = {p.name for p in (ds / "train" / "images").glob("*.png")}
    va = {p.name for p in (ds / "valid" / "images").glob("*.png")}
    assert va and tr and not (tr & va)
    assert runs[("a", "T")]["eval2d"]["dice_coef_multiclass"] is not None
    # recipe (c) is evaluated on both test cases, tumour only where labelled
    assert set(runs[("c", "P")]["cases"]) == {"phantom_001", "phantom_002"}


def test_edit_config_keeps_comments_and_adds_sections(quality):
    text = "; head\n[model]\n; c\nlr = 1\n\n[train]\nepochs = 3\n"
    out = quality.edit_config(text, {"model.lr": 0.5, "model.new": "x", "slice.train_cases": ["a"],
                                     "train.epochs": 4})
    assert "; c\nlr = 0.5\nnew = \"x\"\n\n[train]\nepochs = 4\n" in out
    assert out.rstrip().endswith("[slice]\ntrain_cases = ['a']")
    assert quality._parse_sets(["b:train.batch_size=4", "model.rgb_map={(0,0,0):0}"]) == {
        "b": {"train.batch_size": 4}, "*": {"model.rgb_map": {(0, 0, 0): 0}}}


@pytest.mark.slow
def test_pipeline_on_phantoms_subprocess(quality, tmp_path):
    """The real path: every stage a `python -m flexunet` subprocess, with peak RSS."""
    report, out = _run(quality, tmp_path, inprocess=False, recipes=("b",))
    assert all(r.get("ok") for r in report["runs"]), report["runs"]
    st = report["runs"][0]["stages"]
    assert st["train"]["peak_rss_mb"] > 50
    assert "GB" in (out / "quality.md").read_text()


def test_zoo_quality_table_lists_each_model_with_its_outcome():
    from conftest import load_bench_module

    mod = load_bench_module("zoo_quality")
    case = {"liver": {"dice": 0.9123, "hd95_mm": 12.34}, "tumour": {"dice": 0.4567}}
    report = {"meta": {"command": "python bench/zoo_quality.py --minutes 3", "wall_minutes": 7.0},
              "minutes": 3.0, "fold": {"name": "T", "train": ["ircadb_1", "lits_117"], "test": ["ircadb_17"]},
              "runs": [{"model": "TensorFlowFlexUNet", "params": 1234567, "ok": True,
                        "train": {"history_epochs": 5}, "cases": {"ircadb_17": case}},
                       {"model": "TensorFlowFlexSwinUNet", "params": None, "ok": False, "error": "boom"}]}
    text = mod.render(report)
    rows = [line for line in text.splitlines() if line.startswith("| TensorFlow")]
    assert len(rows) == 2
    assert "1,234,567" in rows[0] and "| 5 |" in rows[0] and "0.912" in rows[0] and "0.457" in rows[0]
    assert "12.3" in rows[0]
    assert "failed: boom" in rows[1]
    assert "3 min of training per model" in text and "held out ircadb_17" in text


def test_models_bench_adds_the_zoo_dice_columns(tmp_path, capsys):
    from conftest import load_bench_module

    mod = load_bench_module("models")
    case = {"liver": {"dice": 0.8766}, "tumour": {"dice": 0.4321}}
    (tmp_path / "z.json").write_text(json.dumps({"minutes": 3.0, "runs": [
        {"model": "TensorFlowFlexUNet", "ok": True, "cases": {"ircadb_17": case}}]}))
    argv = ["--size", "64", "--only", "unet,u2net", "--num-layers", "3", "--base-filters", "4", "--repeats", "1",
            "--threads", "1"]
    assert mod.main(argv + ["--dice-from", str(tmp_path / "z.json")]) == 0
    out = capsys.readouterr().out
    assert "liver Dice (3 min)" in out and "tumour Dice (3 min)" in out
    unet = next(line for line in out.splitlines() if line.startswith("TensorFlowFlexUNet "))
    u2 = next(line for line in out.splitlines() if line.startswith("TensorFlowFlexU2Net "))
    assert unet.split()[-2:] == ["0.877", "0.432"]
    assert u2.split()[-2:] == ["-", "-"]           # not in the zoo report
    assert mod.main(argv + ["--dice-from", ""]) == 0
    assert "liver Dice" not in capsys.readouterr().out
