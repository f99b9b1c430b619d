"""bench/quality.py: the leave-one-patient-out protocol on tiny phantom patients (--smoke), the selection step
that never reads a test patient, the equal training budget, and the LiTS-117 placement (the real-CT run
itself: `python bench/quality.py --folds all --seeds 3`)."""
from __future__ import annotations

import json
import os
import sys
import threading

import numpy as np
import pytest


@pytest.fixture(scope="module")
def quality():
    from conftest import load_bench_module

    return load_bench_module("quality")


# --------------------------------------------------------------------------- which files a stage opens
# An audit hook (it cannot be removed, so it records only while a recorder is active) sees every file the
# process opens: nibabel's, PIL's, torch's and ours, under any name, links resolved.

_RECORDERS: list = []
_IN_HOOK = threading.local()


def _hook(event, args):
    if event != "open" or not _RECORDERS or getattr(_IN_HOOK, "busy", False):
        return
    path = args[0] if args else None
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    _IN_HOOK.busy = True
    try:
        real = os.path.realpath(os.fsdecode(path))
        for rec in _RECORDERS:
            rec.append(real)
    finally:
        _IN_HOOK.busy = False


class OpenRecorder:
    """``with OpenRecorder(stage) as opened:`` -> [(stage name at the time, real path)] of every open."""

    installed = False

    def __init__(self, stage: dict | None = None):
        self.stage = stage or {"name": None}
        self.opened: list[tuple[str | None, str]] = []

    def append(self, real):
        self.opened.append((self.stage.get("name"), real))

    def __enter__(self):
        if not OpenRecorder.installed:
            sys.addaudithook(_hook)
            OpenRecorder.installed = True
        _RECORDERS.append(self)
        return self.opened

    def __exit__(self, *exc):
        _RECORDERS.remove(self)


def _under(path: str, folder) -> bool:
    folder = os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


# --------------------------------------------------------------------------- one smoke run, shared


@pytest.fixture(scope="module")
def smoke(quality, tmp_path_factory):
    """``--smoke`` on one fold (test patient phantom_002, with tumours), recipe (b), two seeds, with every
    open recorded and every call of the selection step spied on."""
    out = tmp_path_factory.mktemp("quality_smoke")
    calls = []
    real_select = quality.select

    def spy(train_cases, *args, **kwargs):
        calls.append([os.path.realpath(p) for p in train_cases])
        return real_select(train_cases, *args, **kwargs)

    quality.select = spy
    argv = ["--smoke", "--out", str(out), "--folds", "phantom_002", "--recipes", "b", "--seeds", "2",
            "--budget-minutes", "0.01"]
    try:
        with OpenRecorder(quality.STAGE) as opened:
            assert quality.main(argv) == 0
    finally:
        quality.select = real_select
    return {"out": out, "opened": opened, "select_calls": calls, "argv": argv}


def test_smoke_protocol_end_to_end(quality, smoke):
    out = smoke["out"]
    md = (out / "quality.md").read_text()
    js = json.loads((out / "quality.json").read_text())
    runs = {r["run"]: r for r in js["runs"]}
    assert set(runs) == {"b-phantom_002-seed42-0.01min", "b-phantom_002-seed43-0.01min"}
    for r in runs.values():
        assert r["ok"] and r["train_cases"] == ["phantom_000", "phantom_001", "phantom_003"]
        assert r["test_cases"] == ["phantom_002"] and r["tumour_scored"] == ["phantom_002"]
        assert r["selection"]["scored"] and len(r["selection"]["table"]) == 3
        case = r["cases"]["phantom_002"]
        assert 0.0 <= case["liver"]["dice"] <= 1.0 and case["tumour"] is not None
        assert r["train"]["steps"] >= 1 and r["train"]["img_per_s"] > 0 and r["train"]["epochs_done"] > 0
    for header in ("| run | liver Dice | tumour Dice | false tumour mL | liver ASSD | liver HD95 |",
                   "## Per fold (over seeds: mean ± sd (min–max))", "## Selection (training patients'"):
        assert header in md
    fold_row = next(line for line in md.splitlines() if line.startswith("| (b) | phantom_002 | 2 |"))
    assert " ± " in fold_row  # two seeds: mean and spread
    # over the folds: the per-seed means of the two seeds (one fold here: the fold's two runs), and the
    # selection figure each run was ranked by
    over_row = next(line for line in md.splitlines() if line.startswith("| (b) | phantom_002 |")
                    and line.count("|") == 7)
    tumours = sorted(r["cases"]["phantom_002"]["tumour"]["dice"] for r in runs.values())
    assert f"({tumours[0]:.3f}–{tumours[1]:.3f})" in over_row.split("|")[6]
    assert "| selection figure (sum) |" in md
    # the small summaries and the tables for bench/reports/ (here OUT/reports in smoke mode)
    rep = out / "reports"
    assert sorted(p.name for p in (rep / "runs").iterdir()) == [f"{n}.json" for n in sorted(runs)]
    rep_md = (rep / "quality-0.01min.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("| b-")] == \
        [line for line in rep_md.splitlines() if line.startswith("| b-")]
    rows = (rep / "quality-0.01min.csv").read_text().splitlines()
    assert rows[0].startswith("run,recipe,test,seed,budget_min,liver_dice,tumour_dice,false_tumour_ml,")
    assert len(rows) == 3
    summary = json.loads((rep / "runs" / "b-phantom_002-seed42-0.01min.json").read_text())
    assert "state_dict" not in json.dumps(summary) and len(json.dumps(summary)) < 20_000
    # the run's config: the same minutes for every recipe, the last epoch cut when they run out
    cfg = (out / "runs" / "b-phantom_002-seed42-0.01min" / "train_eval_infer.config").read_text()
    assert "max_time_minutes = 0.01" in cfg and 'max_time_stop = "batch"' in cfg and "patience = 0" in cfg
    assert "test_cases = []" in cfg and "seed = 42" in cfg


def test_selection_step_never_reads_the_test_patient(quality, smoke):
    out = smoke["out"]
    test_case = out / "smoke_cases" / "phantom_002"          # a link to the phantom's folder
    train_cases = [out / "smoke_cases" / c for c in ("phantom_000", "phantom_001", "phantom_003")]
    opened = smoke["opened"]
    # the selection step was given the training patients' case folders, and those only
    assert len(smoke["select_calls"]) == 2
    for call in smoke["select_calls"]:
        assert sorted(call) == sorted(os.path.realpath(p) for p in train_cases)
    # no stage before the test opened the test patient's files; the recorder does see them at test time
    by_stage = {}
    for stage, path in opened:
        if _under(path, test_case):
            by_stage.setdefault(stage, []).append(path)
    assert set(by_stage) == {"prepare", "test"}, {k: v[:2] for k, v in by_stage.items()}  # prepare: wrote it
    assert any(p.endswith("image.nii.gz") for p in by_stage["test"])
    # ... while the training patients were read while slicing and selecting
    for stage in ("slice", "select"):
        assert any(s == stage and _under(p, train_cases[0]) for s, p in opened)
    # the run's own cases folder holds its training patients only
    run = out / "runs" / "b-phantom_002-seed42-0.01min"
    assert sorted(p.name for p in (run / "cases").iterdir()) == ["phantom_000", "phantom_001", "phantom_003"]


def test_the_recorder_would_catch_a_selection_that_reads_the_test_patient(quality, smoke):
    """Negative control: the same selection given the test patient too is seen reading it."""
    out = smoke["out"]
    run = out / "runs" / "b-phantom_002-seed42-0.01min"
    cases = [out / "smoke_cases" / c for c in ("phantom_000", "phantom_002")]
    valid = {"phantom_000": [3], "phantom_002": [3]}
    with OpenRecorder({"name": "select"}) as opened:
        res = quality.select(cases, run / "train_eval_infer.config", run / "models" / "best.pt", valid,
                             quality.postprocess_grid("small"))
    assert res["cases"] == {"phantom_000": 1, "phantom_002": 1}
    assert any(_under(p, out / "smoke_cases" / "phantom_002") for _, p in opened)


def test_a_finished_run_is_skipped(quality, smoke, capsys):
    out = smoke["out"]
    before = {p.name: p.read_text() for p in (out / "reports" / "runs").iterdir()}
    with OpenRecorder(quality.STAGE) as opened:
        assert quality.main(smoke["argv"]) == 0
    text = capsys.readouterr().out
    assert text.count("done before") == 2
    assert not any(stage in ("slice", "train", "select", "test") for stage, _ in opened)
    after = {p.name: p.read_text() for p in (out / "reports" / "runs").iterdir()}
    assert after == before
    # interrupted after training: slicing and training are kept, selection and test run again
    run = out / "runs" / "b-phantom_002-seed43-0.01min"
    (run / "summary.json").unlink()
    state = json.loads((run / "state.json").read_text())
    del state["done"]["select"]
    (run / "state.json").write_text(json.dumps(state))
    with OpenRecorder(quality.STAGE) as opened:
        assert quality.main(smoke["argv"]) == 0
    stages = {stage for stage, _ in opened}
    assert {"select", "test"} <= stages and not stages & {"slice", "train"}
    again = json.loads((out / "reports" / "runs" / "b-phantom_002-seed43-0.01min.json").read_text())
    old = json.loads(before["b-phantom_002-seed43-0.01min.json"])
    assert again["train"] == old["train"] and again["selection"]["chosen"] == old["selection"]["chosen"]
    assert again["test"]["liver"]["dice"] == pytest.approx(old["test"]["liver"]["dice"])


def test_seed_ensemble_is_selected_on_the_training_side_and_tested_once(quality, smoke):
    """``--ensemble``: the fold's finished seeds averaged, no training; its selection reads training
    patients only, on the same validation slices as its members."""
    out = smoke["out"]
    calls = []
    real_select = quality.select

    def spy(train_cases, config, weights, *args, **kwargs):
        calls.append(([os.path.realpath(p) for p in train_cases], list(weights)))
        return real_select(train_cases, config, weights, *args, **kwargs)

    quality.select = spy
    try:
        with OpenRecorder(quality.STAGE) as opened:
            assert quality.main(smoke["argv"] + ["--ensemble"]) == 0
    finally:
        quality.select = real_select
    name = "b-ens-phantom_002-seed42+43-0.01min"
    summary = json.loads((out / "reports" / "runs" / f"{name}.json").read_text())
    assert summary["members"] == ["b-phantom_002-seed42-0.01min", "b-phantom_002-seed43-0.01min"]
    assert summary["recipe"] == "b-ens" and summary["selection"]["scored"]
    assert 0.0 <= summary["cases"]["phantom_002"]["liver"]["dice"] <= 1.0
    # one selection call, with both members' weights, on the training patients only; no training stage
    assert len(calls) == 1 and [p.parent.parent.name for p in calls[0][1]] == summary["members"]
    train_cases = [out / "smoke_cases" / c for c in ("phantom_000", "phantom_001", "phantom_003")]
    assert sorted(calls[0][0]) == sorted(os.path.realpath(p) for p in train_cases)
    stages = {s for s, p in opened if _under(p, out / "smoke_cases" / "phantom_002")}
    assert stages - {"prepare"} == {"test"}  # prepare: checks the cached data
    assert not any(s in ("slice", "train") for s, _ in opened)
    cfg = (out / "runs" / name / "test.config").read_text()
    assert "seed42-0.01min/models/best.pt" in cfg and "seed43-0.01min/models/best.pt" in cfg
    md = (out / "reports" / "quality-0.01min.md").read_text()
    assert "| (b-ens) | phantom_002 | 1 |" in md and f"| {name} |" in md
    # the gathered table's header names both invocations and every recipe's seeds
    assert md.splitlines()[2].count("--smoke") == 2 and "--ensemble" in md.splitlines()[2]
    assert "seeds 42, 43\n" in md and "seeds 42+43\n" in md
    # a second call finds it done: it neither selects nor tests again
    def no_select(*args, **kwargs):
        raise AssertionError("a finished ensemble selected again")

    quality.select = no_select
    try:
        with OpenRecorder(quality.STAGE) as again:
            again_summary = quality.run_ensemble(
                quality.lopo_folds({"phantom_000", "phantom_001", "phantom_002", "phantom_003"},
                                   ("phantom_000", "phantom_001", "phantom_002"), ("phantom_003",))[0][2],
                [json.loads((out / "reports" / "runs" / f"{m}.json").read_text()) for m in summary["members"]],
                {"out": str(out), "cases": str(out / "smoke_cases"), "grid": quality.postprocess_grid("small")})
    finally:
        quality.select = real_select
    assert again_summary["finished"] == summary["finished"] and again_summary["key"] == summary["key"]
    assert not any(_under(p, out / "smoke_cases" / "phantom_002") for _, p in again)


def test_selection_only_never_opens_the_test_patient(quality, tmp_path):
    argv = ["--smoke", "--out", str(tmp_path), "--folds", "phantom_001", "--recipes", "b", "--seeds", "1",
            "--budget-minutes", "0.005", "--selection-only"]
    with OpenRecorder(quality.STAGE) as opened:
        assert quality.main(argv) == 0
    test_case = tmp_path / "smoke_cases" / "phantom_001"
    assert not [(s, p) for s, p in opened if s not in (None, "prepare") and _under(p, test_case)]
    run = json.loads((tmp_path / "runs" / "b-phantom_001-seed42-0.005min" / "summary.json").read_text())
    assert run["test"] is None and run["selection"]["scored"] and not (tmp_path / "runs" / run["run"] / "test").exists()
    assert "Selection only: no test patient was opened." in (tmp_path / "quality.md").read_text()
    assert (tmp_path / "reports" / "selection-0.005min.md").exists()
    assert json.loads((tmp_path / "reports" / "runs" / f"{run['run']}.json").read_text())["test"] is None


def test_valid_case_is_held_out_whole_and_scored_on_every_slice(quality, tmp_path):
    """--valid-case: the case leaves training, its every slice is scored by the selection step, the test
    patient is never opened, and the run carries the variant's name."""
    argv = ["--smoke", "--out", str(tmp_path), "--folds", "phantom_001", "--recipes", "b", "--seeds", "1",
            "--budget-minutes", "0.005", "--selection-only", "--valid-case", "phantom_003", "--variant", "v3"]
    with OpenRecorder(quality.STAGE) as opened:
        assert quality.main(argv) == 0
    test_case = tmp_path / "smoke_cases" / "phantom_001"
    assert not [(s, p) for s, p in opened if s not in (None, "prepare") and _under(p, test_case)]
    run = json.loads((tmp_path / "runs" / "b.v3-phantom_001-seed42-0.005min" / "summary.json").read_text())
    assert run["train_cases"] == ["phantom_000", "phantom_002"] and run["valid"] == ["phantom_003"]
    assert run["selection"]["cases"] == {"phantom_003": 12}  # the whole case: all of its 12 slices
    assert "validation: phantom_003 held out whole" in (tmp_path / "quality.md").read_text()
    with pytest.raises(SystemExit, match="--variant"):
        quality.main(argv[:-2])


# --------------------------------------------------------------------------- pieces


def test_each_fold_runs_the_variant_its_own_selection_figures_chose(quality, tmp_path):
    """--choose-from: a fold's recipe (b) is the variant with the best selection figure among that fold's
    runs only (other folds' runs, other seeds and budgets do not count), its --set values read back."""
    def summary(run, fold, variant, score, sets=None, minutes=5.0, seed=42, recipe="b"):
        label = "none"
        data = {"run": run, "recipe": recipe, "fold": fold, "seed": seed, "budget_minutes": minutes,
                "variant": variant or None, "variant_sets": sets or {},
                "selection": {"chosen_label": label, "table": [{"label": label, "score": score}]}}
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / f"{run}.json").write_text(json.dumps(data))

    summary("b-p1-seed42-5min", "p1", "", 1.7)
    summary("b.aug-p1-seed42-5min", "p1", "aug", 1.5, {"model.generator": "True"})
    summary("b-p2-seed42-5min", "p2", "", 1.4)
    summary("b.aug-p2-seed42-5min", "p2", "aug", 1.75, {"model.generator": "True"})
    summary("b.lr-p2-seed43-5min", "p2", "lr", 1.9, {"model.learning_rate": "0.01"}, seed=43)
    summary("b.lr-p2-seed42-20min", "p2", "lr", 1.95, {"model.learning_rate": "0.01"}, minutes=20.0)
    summary("b.big-p3-seed42-5min", "p3", "big", 1.99, {"model.base_filters": "32"})  # p3's only run
    summary("b.tri-p1-seed42-5min", "p1", "tri", 1.99, {"slice.planes": "['axial', 'coronal']"})
    data = json.loads((tmp_path / "runs" / "b.tri-p1-seed42-5min.json").read_text())
    data["valid"] = ["p4"]  # validated on a case held out whole: another figure, left out
    (tmp_path / "runs" / "b.tri-p1-seed42-5min.json").write_text(json.dumps(data))
    folds = [quality.Fold(name=n, title=n, train=[], test=[n]) for n in ("p1", "p2", "p3", "p4")]
    got = quality.choose_variants(tmp_path, folds, 5.0)
    assert got["p1"] == {"variant": "", "sets": {"b": {}}, "scores": {"": 1.7, "aug": 1.5}}
    assert got["p2"] == {"variant": "aug", "sets": {"b": {"model.generator": True}}, "scores": {"": 1.4, "aug": 1.75}}
    assert got["p3"]["variant"] == "big" and got["p3"]["sets"] == {"b": {"model.base_filters": 32}}
    assert got["p4"] == {"variant": "", "sets": {}, "scores": {}}
    assert quality.run_name("b", "p2", 42, 20, "aug") == "b.aug-p2-seed42-20min"


def test_folds_leave_one_patient_out_with_lits_117_always_in_training(quality):
    have = {"ircadb_1", "ircadb_7", "ircadb_17", "lits_117"}
    folds, notes = quality.real_folds(have, "all")
    assert [(f.name, f.train, f.test, f.tumour_cases) for f in folds] == [
        ("ircadb_1", ["ircadb_7", "ircadb_17", "lits_117"], ["ircadb_1"], ["ircadb_1"]),
        ("ircadb_7", ["ircadb_1", "ircadb_17", "lits_117"], ["ircadb_7"], []),
        ("ircadb_17", ["ircadb_1", "ircadb_7", "lits_117"], ["ircadb_17"], ["ircadb_17"]),
    ]
    assert not notes
    assert [f.name for f in quality.real_folds(have, "1,17")[0]] == ["ircadb_1", "ircadb_17"]
    assert [f.name for f in quality.real_folds(have, "tumour")[0]] == ["ircadb_17"]
    folds, notes = quality.real_folds(have - {"lits_117", "ircadb_7"}, "all")
    assert [(f.name, f.train) for f in folds] == [("ircadb_1", ["ircadb_17"]), ("ircadb_17", ["ircadb_1"])]
    assert notes == ["lits_117 unavailable: the folds train on the other patients only"]


def test_both_recipes_train_for_the_same_minutes(quality):
    ct_text, ct_src = quality._template(quality.CT_CONFIG)
    recipes = quality.build_recipes(["a", "b"], ct_text, ct_src, quality.ORIGINAL_CONFIG_TEXT, "embedded")
    fold = quality.Fold("ircadb_7", "t", ["ircadb_1", "ircadb_17", "lits_117"], ["ircadb_7"])
    a = quality.run_config(recipes["a"], fold, 20, 42)
    b = quality.run_config(recipes["b"], fold, 20, 43, {"b": {"train.batch_size": 4}})
    for text in (a, b):
        for line in ("max_time_minutes = 20.0", 'max_time_stop = "batch"', "patience = 0", "epochs = 100000",
                     "train_cases = ['ircadb_1', 'ircadb_17', 'lits_117']", "test_cases = []"):
            assert line in text, line
        assert "ircadb_7" not in text.split("train_cases")[1].split("\n")[0]
    # (a) keeps the original's recipe and preprocessing
    assert 'loss           = "categorical_crossentropy"' in a and "learning_rate  = 0.00005" in a
    assert "hu_window = (0, 255)" in a and "context_slices = False" in a and "seed = 42" in a
    assert "batch_size    = 8" not in b and "batch_size = 4" in b and "seed = 43" in b
    # both configs load
    from flexunet.config.loader import parse_ini

    assert parse_ini(a, "a")["train"]["max_time_stop"] == "batch"


class _Trainer:
    should_stop = False


def test_time_budget_batch_mode_trains_all_its_minutes():
    from types import SimpleNamespace

    from flexunet.train.callbacks import TimeBudget

    clock = [0.0]

    def budget(stop):
        cb = TimeBudget(minutes=1.0, stop=stop)
        cb._clock = lambda: clock[0]
        return cb

    # epochs of 35 s on a 60 s budget: "epoch" stops after the first (35 + 35 > 60) ...
    for stop, expect_epochs in (("epoch", 1), ("batch", 2)):
        clock[0] = 0.0
        cb, t = budget(stop), _Trainer()
        cb.on_train_start(t, None)
        epochs = 0
        while not t.should_stop and epochs < 5:
            cb.on_train_epoch_start(t, None)
            for _ in range(7):  # 7 batches of 5 s
                clock[0] += 5.0
                cb.on_train_batch_end(t, None, None, None, 0)
                if t.should_stop:
                    break
            cb.on_train_epoch_end(t, None)
            epochs += 1
        assert epochs == expect_epochs, stop
        # ... "batch" stops after the batch that crossed 60 s, in the second epoch (then validated by Lightning)
        assert clock[0] == (35.0 if stop == "epoch" else 60.0)
    # the mode comes from [train] max_time_stop when not given
    cb = TimeBudget(minutes=1.0)
    cb.on_train_start(_Trainer(), SimpleNamespace(cfg=SimpleNamespace(train=SimpleNamespace(max_time_stop="batch"))))
    assert cb.stop == "batch"
    cb = TimeBudget(minutes=1.0)
    cb.on_train_start(_Trainer(), None)
    assert cb.stop == "epoch"
    with pytest.raises(ValueError, match="stop='cut'"):
        TimeBudget(minutes=1.0, stop="cut")


def test_max_time_stop_is_a_checked_config_key(tmp_path):
    from flexunet.api import load_config
    from flexunet.errors import ConfigError

    cfg = tmp_path / "c.config"
    cfg.write_text("[model]\nnum_classes = 3\n[train]\nmax_time_minutes = 2\n")
    assert load_config(cfg).train.max_time_stop == "epoch"
    assert load_config(cfg, {"train.max_time_stop": "batch"}).train.max_time_stop == "batch"
    with pytest.raises(ConfigError, match="max_time_stop"):
        load_config(cfg, {"train.max_time_stop": "never"})


def test_lits_117_crop_is_placed_by_its_own_liver(quality, tmp_path):
    """The crop's place on the canvas comes from its own labels and a fixed position, nothing else."""
    qd = quality.qd
    assert not hasattr(qd, "LITS_CENTRE_RAS")
    from flexunet.io.volumes import read_volume

    rng = np.random.default_rng(0)
    n = 16
    for shift in (2, 6):
        img = rng.normal(0, 50, (n, n, n)).astype(np.float32)
        lab = np.zeros((n, n, n), np.uint8)
        # imported axes (S, L, P): the liver at different places of the crop
        lab[4:12, shift:shift + 6, 5:9] = 1
        lab[6:8, shift + 2:shift + 4, 6:8] = 2
        raw = tmp_path / f"raw{shift}"
        qd._write_case(raw, img, lab, np.eye(4), image_dtype=np.float32)
        info = qd.fix_lits117(raw, tmp_path / f"fixed{shift}", spacing=2.0, canvas=48)
        fixed = np.asarray(read_volume(tmp_path / f"fixed{shift}" / "label.nii.gz", label=True).array)
        assert fixed.shape == (48, 48, n) and int((fixed == 2).sum()) == int((lab == 2).sum())
        ii, jj, _ = np.nonzero(fixed >= 1)
        target = np.array(qd.LITS_LIVER_AT) * 47
        assert np.abs(np.array([ii.mean(), jj.mean()]) - target).max() <= 0.5 + 1e-9, (shift, info)
        assert "own liver centroid" in info["placement"]
    # the liver lies on the patient's right (RAS i > half the canvas)
    assert qd.LITS_LIVER_AT[0] > 0.5


def test_images_trained_counts_whole_and_cut_epochs(quality):
    assert quality.images_trained(0, 100, 8) == 0
    assert quality.images_trained(13, 100, 8) == 100          # one epoch: 13 batches, the last of 4
    assert quality.images_trained(16, 100, 8) == 100 + 24     # and 3 batches of the cut epoch
    assert quality.images_trained(5, 100, 8, max_steps_per_epoch=2) == 2 * 16 + 8


def test_validation_blocks_and_the_selection_region(quality, tmp_path):
    ds = tmp_path / "dataset"
    for sub in ("images", "masks"):
        (ds / "train" / sub).mkdir(parents=True)
        for k in range(40):
            (ds / "train" / sub / f"ircadb_17_{k:04d}.png").write_bytes(b"")
            (ds / "train" / sub / f"lits_117_coronal_{k:04d}.png").write_bytes(b"")
        for k in range(10):  # too short for a block: every 6th slice from the 4th
            (ds / "train" / sub / f"tiny_{k:04d}.png").write_bytes(b"")
    res = quality.split_valid_blocks(ds)
    assert res == {"train_slices": 34 + 34 + 8, "valid_slices": 6 + 6 + 2}
    valid = quality.valid_slices(ds)
    assert valid == {"ircadb_17": [18, 19, 20, 21, 22, 23], "tiny": [3, 9]}   # axial slices only
    assert not (ds / "train" / "images" / "ircadb_17_0020.png").exists()
    assert (ds / "valid" / "masks" / "lits_117_coronal_0020.png").exists()
    # whole blocks, background slices included; a short case: its validation slices themselves
    assert quality.selection_region([19, 20], 40) == [18, 19, 20, 21, 22, 23]
    assert quality.selection_region([3, 9], 10) == [3, 9]


def test_score_candidates_ranks_postprocessing_on_the_region_only(quality):
    from flexunet.infer.volume import VolumeSettings

    gt = np.zeros((24, 24, 12), np.uint8)
    gt[4:16, 4:16, :] = 1
    gt[8:11, 8:11, 2:10] = 2
    raw = gt.copy()
    raw[19:22, 19:22, 3:5] = 1                 # a stray liver blob in slices 3-4 only
    windowed = np.full(gt.shape, 120, np.uint8)
    st = VolumeSettings(hu_window=(-100, 250), image_size=(24, 24), channels=3, context=True, standardize=False,
                        tta_context_flip=False, num_classes=3, min_tumour_mm3=0.0, tumour_liver_contact=0.0,
                        fill_holes=True, tumour_grow=0, tumour_grow_beyond=0)
    cands = quality.postprocess_grid("small")[:2]   # none, then the largest liver component and fills
    on_blob = quality.score_candidates(raw, windowed, gt, (1.0, 1.0, 1.0), [3, 4], cands, st)
    elsewhere = quality.score_candidates(raw, windowed, gt, (1.0, 1.0, 1.0), [7, 8], cands, st)
    assert on_blob[0][1] > on_blob[1][1] == on_blob[1][2]        # the blob counts as predicted liver, then not
    assert elsewhere[0] == elsewhere[1]                          # outside the region nothing differs
    assert quality.region_counts(gt, gt, [2])[3:] == [9, 9, 9]


def test_edit_config_keeps_comments_and_adds_sections(quality):
    text = "; head\n[model]\n; c\nlr = 1\n\n[train]\nepochs = 3\n"
    out = quality.edit_config(text, {"model.lr": 0.5, "model.new": "x", "slice.train_cases": ["a"],
                                     "train.epochs": 4})
    assert "; c\nlr = 0.5\nnew = \"x\"\n\n[train]\nepochs = 4\n" in out
    assert out.rstrip().endswith("[slice]\ntrain_cases = ['a']")
    assert quality._parse_sets(["b:train.batch_size=4", "model.rgb_map={(0,0,0):0}"]) == {
        "b": {"train.batch_size": 4}, "*": {"model.rgb_map": {(0, 0, 0): 0}}}


@pytest.mark.slow
def test_smoke_through_subprocesses(quality, tmp_path):
    """The real path: every stage a `python -m flexunet` subprocess (peak RSS), both recipes, three folds."""
    report = quality.run_benchmark(
        recipes=quality.build_recipes(["a", "b"], *quality._template(quality.CT_CONFIG),
                                      quality.ORIGINAL_CONFIG_TEXT, "embedded"),
        folds=quality.lopo_folds(set(quality.smoke_data(tmp_path)["ids"]),
                                 ["phantom_000", "phantom_001", "phantom_002"], ["phantom_003"],
                                 ["phantom_001"])[0],
        seeds={"a": [42], "b": [42]}, cases=tmp_path / "smoke_cases",
        cases_minmax=None, out=tmp_path / "out", report_dir=None, budget_minutes=0.02,
        meta={"command": "test", "machine": {}, "started": "now"}, data={"notes": []},
        sets={"*": dict(quality.SMOKE_SETS)}, grid=quality.postprocess_grid("small"))
    assert [r.get("ok") for r in report["runs"]] == [True] * 6, report["runs"]
    assert all(r["stages"]["train"]["peak_rss_mb"] > 50 for r in report["runs"])
    md = (tmp_path / "out" / "quality.md").read_text()
    assert "(b) - (a), same folds and training minutes" in md and "GB" in md


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
