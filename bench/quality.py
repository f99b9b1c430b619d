#!/usr/bin/env python
"""Real-CT quality benchmark: leave one patient out over IRCADb 1, 7 and 17, every choice made away from the
test patient; the original's recipe (a) beside FlexUNet's recommended recipe (b) under the same training time.

    python bench/quality.py --folds all --seeds 3        (the default protocol; also: make bench-quality)
    python bench/quality.py --folds all --seeds 3 --choose-from 5     (recipe (b) per fold as its selection
                                                                       runs of 5 minutes chose)
    python bench/quality.py --folds all --seeds 3 --choose-from 5 --ensemble   (then each fold's seeds as one
                                                                                model, softmax averaged)

    python bench/quality.py [--budget-minutes 20] [--folds all|1,7,17] [--seeds 3] [--seeds-a 1]
                            [--recipes a,b] [--selection-only] [--set [RECIPE:]SECTION.KEY=VALUE ...]
                            [--out bench/results/quality] [--report-dir bench/reports/quality]
    python bench/quality.py --smoke --out DIR            (tiny phantom patients, seconds: what the tests run)

Data (prepared once, cached under ``bench/results/cache/``, git-ignored; ``_quality_data.py`` says how):
3D-IRCADb-01 patients 1, 7 and 17 from ``../shared/data/3Dircadb1`` imported with ``flexunet import ircadb``
(patient 1 with its seven tumours, patient 7 a tumour-free liver beside another organ's tumour, patient 17
with two tumours), and LiTS volume 117 from the PyPI wheel ``liver-ct-segmentation-package==1.6.0``
(re-oriented to RAS and placed on an air canvas by its own liver centroid; left out with a note when the
download fails).  Without ``../shared/data`` the real folds are skipped with a message.

Protocol
--------
1. Folds: leave one patient out over IRCADb 1, 7 and 17 (three folds); LiTS 117 is always in training.
2. Training: each run (recipe x fold x seed) slices only its training patients (a folder of links to
   them); its validation set is held-out axial blocks of those patients' slices (``VALID_BLOCK`` slices,
   one block in ``VALID_PERIOD``), moved from ``train/`` to ``valid/``.  ``best.pt`` is the epoch with the
   lowest validation loss: the number of epochs is chosen there.
3. Selection (:func:`select`): it is given only the training patients' case folders (the run's own
   folder of links, which holds no test patient), the trained weights and the validation slice indices.
   It segments the training patients' volumes once, applies every postprocessing candidate of
   :func:`postprocess_grid` (off, ``fill_holes``, ``min_tumour_mm3``, ``tumour_grow`` /
   ``tumour_grow_beyond``) and keeps the one with the highest pooled liver Dice + tumour Dice on the
   validation blocks (they neighbour training slices: optimistic figures, used only to rank the
   candidates).  Whole-recipe choices (augmentation, 2.5D, planes, loss...) are compared with
   ``--selection-only --set ... --variant NAME``, which runs steps 1-3 and never opens a test patient;
   ``--choose-from MINUTES`` then runs each fold's recipe (b) as the variant with the highest selection
   figure among that fold's own runs of that budget (:func:`choose_variants`), so a fold's recipe is
   chosen on its own training patients only.  Slicing planes need ``--valid-case lits_117``: coronal and
   sagittal training slices cross the axial validation blocks, so the comparison validates on one
   training case held out whole instead.
4. Test: the test patient is segmented and scored once per run, with the selected postprocessing
   (``infer-volume`` then ``evaluate-volume``): liver Dice, tumour Dice where it has tumours (1, 17),
   tumour volume found where it has none (7, mL), ASSD, HD95, volumetry errors.
5. Budget: every run trains for ``--budget-minutes`` of wall time (default 20 per fold), whatever its
   recipe: ``[train] max_time_stop = "batch"`` lets the last epoch be cut when the minutes run out (and
   validates it), no early stopping and no epoch cap, so a recipe with long epochs, as (a), trains for
   as long as one with short ones.  Slicing, selection and testing come on top (see the stages table).

Recipes:

* (a) the original's recipe: its config (``../shared/seed/train_eval_infer.config``, or the embedded
  copy: 512^2, 8 layers, 9x9 kernels, CE, Adam lr 5e-5, clip 0.4, batch 2, no augmentation, no
  BatchNorm) and its preprocessing (no HU window: each volume's own HU min..max mapped to 0..255, the
  grey slice replicated to 3 channels, no 2.5D), no postprocessing; ``--seeds-a`` seeds (default 1).
* (b) FlexUNet's recommended CT config (``projects/liver-tumor-ct/train_eval_infer.config``) with the
  postprocessing the selection step picks; ``--seeds`` seeds (default 3, ``train.seed`` 42, 43, ...),
  reported as mean, standard deviation and range.
* (b-ens), with ``--ensemble``: each fold's finished (b) runs as one model, their softmax averaged
  (``[infer] weights`` lists every seed's ``best.pt``; :func:`run_ensemble`), no training of its own.  Its
  postprocessing is selected on the same validation blocks as its members' (no seed trained on them),
  so its selection figure ranks it beside each seed's; then its test patient is scored once.  It costs
  every seed's training (not the budget of one run) and one model pass per seed in ``infer-volume``.

Output: ``<out>/runs/<run>/`` (git-ignored) keeps each run's config, logs, dataset, weights, predictions
and ``summary.json``; ``<out>/quality.{md,json,csv}`` the tables of this invocation.  The small per-run
summaries (JSON, no weights) also go to ``--report-dir`` (default ``bench/reports/quality/``, the folder
whose files the docs quote and which is committed) as ``runs/<run>.json``, with the tables of every
summary there of the same budget, ``quality-<budget>min.{md,csv}`` (``selection-<budget>min`` for
``--selection-only``).  A run's name holds its recipe, test patient, seed and budget.

Resuming: a run whose ``summary.json`` exists with the same key (config, grid, cases, protocol) is
skipped; an interrupted run keeps its finished stages (slicing, training, selection) and an interrupted
training continues from ``last.ckpt`` with the time it had already trained.

Wall time of the documented run on 2 cores: 3 folds x (3 + 1) runs x 20 training minutes = 4 hours of
training, plus per run about 3 minutes of slicing, selection (about 2 minutes for (b): three training
volumes segmented, 25 candidates scored; none for (a)), testing and process starts, and the first
import of the data (a few minutes): about 4.5 to 5 hours in all.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import _quality_data as qd  # noqa: E402

_common.ensure_src_on_path()

from flexunet.config.loader import apply_override, parse_ini  # noqa: E402
from flexunet.errors import ConfigError  # noqa: E402

REPO = BENCH.parent
SEED_CONFIG = qd.SHARED / "seed" / "train_eval_infer.config"
CT_CONFIG = REPO / "projects" / "liver-tumor-ct" / "train_eval_infer.config"
DEFAULT_OUT = BENCH / "results" / "quality"
DEFAULT_CACHE = BENCH / "results" / "cache"
DEFAULT_REPORT_DIR = BENCH / "reports" / "quality"
PROTOCOL_VERSION = 1  # part of every run's key: a change of protocol reruns the runs
PATIENTS = tuple(f"ircadb_{n}" for n in qd.IRCADB_PATIENTS)
ALWAYS_TRAIN = ("lits_117",)
BASE_SEED = 42
DEFAULT_BUDGET_MINUTES = 20.0
VALID_BLOCK = 6    # validation: axial blocks of 6 slices ...
VALID_PERIOD = 6   # ... one block in 6 (about 1/6 of each training patient's slices)
#: the figures to beat (mean over the folds), not thresholds of any test
GOALS = {"liver": 0.95, "tumour": 0.65, "false_tumour_ml": 5.0, "delta_liver": 0.05, "delta_tumour": 0.15}
#: what a run sets on top of its recipe so that every recipe trains for the same wall time
EQUAL_BUDGET_SETS = {"train.max_time_stop": "batch", "train.epochs": 100000, "train.patience": 0,
                     "train.epoch_change_infer": False, "train.create_backup": False}

# The original's config (TensorFlowFlexUNet, 3D-Liver-Tumor), used when ../shared/seed is absent.
ORIGINAL_CONFIG_TEXT = """; the original's train_eval_infer.config (3D-Liver-Tumor), embedded copy
[model]
model         = "TensorFlowFlexUNet"
generator     =  False
image_width    = 512
image_height   = 512
image_channels = 3
input_normalize = False
normalization  = False
num_classes    = 3
base_filters   = 16
base_kernels   = (9,9)
num_layers     = 8
dropout_rate   = 0.04
dilation       = (1,1)
optimizer       = "Adam"
learning_rate  = 0.00005
clipvalue      = 0.4
loss           = "categorical_crossentropy"
metrics        = ["dice_coef_multiclass"]
show_summary   = False

[dataset]
class_name    = "ImageCategorizedMaskDataset"

[train]
epochs        = 100
batch_size    = 2
patience      = 10
metrics       = ["dice_coef_multiclass", "val_dice_coef_multiclass"]
model_dir     = "./models/"
eval_dir      = "./eval/"
images_dir    = "../../../dataset/3D-Liver-Tumor/train/images/"
masks_dir     = "../../../dataset/3D-Liver-Tumor/train/masks/"
create_backup  = False
learning_rate_reducer = True
reducer_factor     = 0.4
reducer_patience   = 4
epoch_change_infer     = True
epoch_change_infer_dir =  "./epoch_change_infer"
num_infer_images       = 6
save_weights_only  = True

[valid]
images_dir = "../../../dataset/3D-Liver-Tumor/valid/images/"
masks_dir  = "../../../dataset/3D-Liver-Tumor/valid/masks/"

[test]
images_dir = "../../../dataset/3D-Liver-Tumor/test/images/"
masks_dir  = "../../../dataset/3D-Liver-Tumor/test/masks/"

[infer]
images_dir    = "./mini_test/images/"
output_dir    = "./mini_test_output/"

[image]
color_order = "RGB"

[mask]
mask_file_format = ".png"
rgb_map = {(0,0,0):0,(0,0,255):1,(255,0,0):2}
"""

# a model small enough that a run on 32^2 phantoms takes seconds (--smoke)
SMOKE_SETS = {
    "model.image_width": 32, "model.image_height": 32, "model.base_filters": 4, "model.base_kernels": (3, 3),
    "model.num_layers": 3, "train.batch_size": 4, "train.num_workers": 0, "train.precision": "32",
    "train.max_steps_per_epoch": 2,
}
SMOKE_BUDGET_MINUTES = 0.02


# --------------------------------------------------------------------------- recipes and folds


@dataclasses.dataclass
class Recipe:
    key: str
    title: str
    template: str            # config text
    template_source: str
    preprocessing: str       # "minmax" (the original's) or "window" (the config's HU window)
    postprocess: bool        # whether the selection step may choose postprocessing (else: none)
    sets: dict               # "section.key" -> value (Python object), applied on top of the template


@dataclasses.dataclass
class Fold:
    name: str                # the test patient's case id
    title: str
    train: list[str]
    test: list[str]
    valid: list[str] = dataclasses.field(default_factory=list)   # empty: held-out slice blocks of train
    tumour_cases: list[str] = dataclasses.field(default_factory=list)  # test cases with tumour labels
    note: str = ""


def _template(path: Path, fallback: str | None = None) -> tuple[str, str]:
    if path.exists():
        return path.read_text(), str(path)
    if fallback is not None:
        return fallback, "embedded copy of the original's config (../shared/seed absent)"
    raise SystemExit(f"quality.py: {path} not found")


def slice_defaults(ct_text: str, source: str = "<recommended config>") -> dict:
    """The recommended config's slice selection, so that both recipes see the same slices."""
    sec = parse_ini(ct_text, source).get("slice", {})
    return {k: sec[k] for k in ("foreground_only", "background_fraction") if k in sec}


def build_recipes(keys, ct_text: str, ct_source: str, seed_text: str, seed_source: str) -> dict[str, Recipe]:
    same_slices = slice_defaults(ct_text)
    out = {}
    if "a" in keys:
        out["a"] = Recipe("a", "original recipe (its config, min-max preprocessing, no 2.5D, no postprocessing)",
                          seed_text, seed_source, "minmax", postprocess=False,
                          sets={"slice.hu_window": (0, 255), "slice.context_slices": False,
                                **{f"slice.{k}": v for k, v in same_slices.items()}})
    if "b" in keys:
        out["b"] = Recipe("b", "FlexUNet recommended CT recipe (postprocessing chosen by the selection step)",
                          ct_text, ct_source, "window", postprocess=True, sets={})
    return out


def fold_note(tumour: bool) -> str:
    """What a fold's test patient is scored for."""
    return "tumour Dice scored" if tumour else "no liver tumour: the tumour volume found is reported (mL)"


def lopo_folds(have: set[str], patients=PATIENTS, always=ALWAYS_TRAIN, tumour_free=()) -> tuple[list[Fold], list[str]]:
    """Leave one patient out over ``patients`` (those in ``have``); ``always`` cases are in every training set.

    A test patient in ``tumour_free`` is scored for the tumour it is given where it has none (mL)."""
    notes = []
    pts = [p for p in patients if p in have]
    extra = [c for c in always if c in have]
    for c in always:
        if c not in have:
            notes.append(f"{c} unavailable: the folds train on the other patients only")
    folds = []
    for test in pts:
        train = [p for p in pts if p != test] + extra
        if not train:
            continue
        tumour = test not in tumour_free
        folds.append(Fold(test, f"hold out {test}", train, [test], tumour_cases=[test] if tumour else [],
                          note=fold_note(tumour)))
    return folds, notes


def real_folds(have: set[str], which: str = "all", facts: dict | None = None) -> tuple[list[Fold], list[str]]:
    """The real-CT folds: :func:`lopo_folds` over :data:`PATIENTS`, then those ``which`` names.

    ``which``: ``all``, or a comma list of patients (``1,17``, ``ircadb_7``); ``tumour`` is patient 17's
    fold, ``liver`` patient 1's.  ``facts`` (case id -> :func:`_quality_data.case_facts`) tells which test
    patients have no tumour label; without it, patient 7 is the tumour-free one (README)."""
    if facts:
        free = tuple(c for c in PATIENTS if c in facts and not facts[c].get("voxels_tumour_label2"))
    else:
        free = tuple(c for c, (_, t) in qd.EXPECTED_VOXELS.items() if t == 0)
    folds, notes = lopo_folds(have, PATIENTS, ALWAYS_TRAIN, free)
    want = _fold_names(which)
    if want is not None:
        folds = [f for f in folds if f.name in want]
        missing = want - {f.name for f in folds}
        if missing:
            notes.append(f"fold(s) {', '.join(sorted(missing))} cannot run (patient not available)")
    return folds, notes


def with_valid_case(folds: list[Fold], case: str) -> tuple[list[Fold], list[str]]:
    """The folds with ``case`` (a training case of each) moved from training to validation, held out whole.

    A fold whose training set lacks ``case``, or would be left empty, is dropped with a note."""
    out, notes = [], []
    for f in folds:
        if case not in f.train or len(f.train) < 2:
            notes.append(f"fold {f.name}: {case} is not one of several training cases; fold left out")
            continue
        out.append(dataclasses.replace(f, train=[c for c in f.train if c != case], valid=[case]))
    return out, notes


def _fold_names(which: str) -> set[str] | None:
    which = (which or "all").strip().lower()
    if which == "all":
        return None
    alias = {"tumour": "17", "tumor": "17", "liver": "1"}
    out = set()
    for item in which.split(","):
        item = alias.get(item.strip(), item.strip())
        if item:
            out.add(item if not item.isdigit() else f"ircadb_{int(item)}")
    return out


# --------------------------------------------------------------------------- config text editing


def _fmt_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def edit_config(text: str, sets: dict) -> str:
    """Replace/add ``section.key = value`` in INI text, keeping comments and order."""
    by_sec: dict[str, dict[str, object]] = {}
    for dotted, v in sets.items():
        sec, key = dotted.split(".", 1)
        by_sec.setdefault(sec.lower(), {})[key] = v
    lines = text.splitlines()
    out: list[str] = []
    done: set[tuple[str, str]] = set()
    present: set[str] = set()
    sec = None

    def flush(section):
        if section is None:
            return
        for k, v in by_sec.get(section, {}).items():
            if (section, k) not in done:
                out.append(f"{k} = {_fmt_value(v)}")
                done.add((section, k))

    for line in lines:
        s = line.strip()
        m = re.match(r"^\[([^\]]+)\]$", s)
        if m:
            # new keys of the previous section go before the blank lines that end it
            trailing = []
            while out and not out[-1].strip():
                trailing.append(out.pop())
            flush(sec)
            out.extend(trailing)
            sec = m.group(1).strip().lower()
            present.add(sec)
            out.append(line)
            continue
        if sec is not None and "=" in s and not s.startswith((";", "#")):
            k = s.split("=", 1)[0].strip()
            if k in by_sec.get(sec, {}):
                out.append(f"{k} = {_fmt_value(by_sec[sec][k])}")
                done.add((sec, k))
                continue
        out.append(line)
    flush(sec)
    for section, kv in by_sec.items():
        if section not in present:
            out += ["", f"[{section}]"] + [f"{k} = {_fmt_value(v)}" for k, v in kv.items()]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- running the CLI


def run_cli(args: list[str], log_path: Path, cwd: Path | None = None, inprocess: bool = False) -> dict:
    """``flexunet ARGS`` (subprocess: own memory, peak RSS via wait4; or in-process for tests) -> timing dict."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # infer-volume prints its per-volume timings only without --quiet (it has no progress bar to hide)
    quiet = [] if args[0] == "infer-volume" else ["--quiet"]
    cmd = [sys.executable, "-m", "flexunet", *quiet, *args]
    t0 = time.perf_counter()
    rss = cpu = None
    load0 = _common.load_average()
    with open(log_path, "w") as fh:
        fh.write("$ " + shlex.join(cmd) + "\n")
        fh.flush()
        if inprocess:
            from flexunet.cli import main as cli_main

            buf = io.StringIO()
            old = os.getcwd()
            try:
                if cwd:
                    os.chdir(cwd)
                with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                    try:
                        rc = cli_main([*quiet, *args])
                    except SystemExit as exc:
                        rc = exc.code if isinstance(exc.code, int) else 1
            finally:
                os.chdir(old)
            fh.write(buf.getvalue())
        else:
            env = dict(os.environ)
            env.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
            env["PYTHONUNBUFFERED"] = "1"
            p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env)
            _, status, ru = os.wait4(p.pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            p.returncode = rc
            rss = round(ru.ru_maxrss / 1024.0, 1)
            cpu = round(ru.ru_utime + ru.ru_stime, 1)  # the process and its waited-for children (loader workers)
    seconds = time.perf_counter() - t0
    text = log_path.read_text(errors="replace")
    if rc != 0:
        tail = "\n".join(text.strip().splitlines()[-6:])
        raise RuntimeError(f"flexunet {args[0]} failed (exit {rc}); log {log_path}:\n{tail}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": rss, "cpu_seconds": cpu,
            "cpu_util": round(cpu / seconds, 2) if cpu is not None and seconds > 0 else None,
            "load_average_before": load0, "load_average_after": _common.load_average(), "log": str(log_path),
            "stdout": text}


_PNG_NAME = re.compile(r"^(?P<case>.+?)(?:_(?P<plane>axial|coronal|sagittal))?_(?P<k>\d{4})\.png$")


def split_valid_blocks(dataset: Path, block: int = VALID_BLOCK, period: int = VALID_PERIOD) -> dict:
    """Move slices in blocks (``k // block % period == period // 2``, per case and plane) from train/ to valid/.

    A case too short for a block gives every ``period``-th slice instead."""
    moved, kept = 0, 0
    tr_i, tr_m = dataset / "train" / "images", dataset / "train" / "masks"
    va_i, va_m = dataset / "valid" / "images", dataset / "valid" / "masks"
    va_i.mkdir(parents=True, exist_ok=True)
    va_m.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[tuple[int, Path]]] = {}
    for f in sorted(tr_i.glob("*.png")):
        m = _PNG_NAME.match(f.name)
        if m:
            groups.setdefault((m.group("case"), m.group("plane") or "axial"), []).append((int(m.group("k")), f))
    for files in groups.values():
        chosen = [f for k, f in files if k // block % period == period // 2]
        if not chosen or len(chosen) == len(files):
            chosen = [f for _, f in files][period // 2::period]
        for f in chosen:
            f.rename(va_i / f.name)
            (tr_m / f.name).rename(va_m / f.name)
        moved += len(chosen)
        kept += len(files) - len(chosen)
    return {"train_slices": kept, "valid_slices": moved}


def valid_slices(dataset: Path) -> dict[str, list[int]]:
    """The axial slice indices of each case in ``dataset/valid/images`` (the validation blocks)."""
    out: dict[str, set[int]] = {}
    for f in (dataset / "valid" / "images").glob("*.png"):
        m = _PNG_NAME.match(f.name)
        if m and (m.group("plane") or "axial") == "axial":
            out.setdefault(m.group("case"), set()).add(int(m.group("k")))
    return {c: sorted(ks) for c, ks in sorted(out.items())}


def selection_region(ks, nz: int, block: int = VALID_BLOCK, period: int = VALID_PERIOD) -> list[int]:
    """The slices a case is scored on in :func:`select`: each validation block whole (its slices without
    foreground too), or the validation slices themselves for a case too short for blocks."""
    ks = sorted(int(k) for k in ks if 0 <= int(k) < nz)
    if ks and all(k // block % period == period // 2 for k in ks):
        blocks = {k // block for k in ks}
        return [k for k in range(nz) if k // block in blocks]
    return ks


def _count_pngs(folder: Path) -> int:
    return len(list(folder.glob("*.png"))) if folder.is_dir() else 0


def _parse_train(stdout: str) -> dict:
    m = re.search(r"trained (\d+) epochs in ([\d.]+) s \(([^)]*)\); best val_loss ([\w.+-]+)", stdout)
    if not m:
        return {}
    return {"epochs": int(m.group(1)), "train_seconds": float(m.group(2)), "precision": m.group(3),
            "best_val_loss": float(m.group(4)) if m.group(4) not in ("inf", "nan") else None}


def _parse_infer(stdout: str) -> dict:
    out = {}
    for m in re.finditer(r"-> (\S+) \((\d+) slices, read ([\d.]+) s, predict ([\d.]+) s\)", stdout):
        case = Path(m.group(1)).name.replace(".nii.gz", "")
        out[case] = {"slices": int(m.group(2)), "read_s": float(m.group(3)), "predict_s": float(m.group(4))}
    return out


def images_trained(global_step: int, n_train: int, batch_size: int, max_steps_per_epoch: int | None = None) -> int:
    """Training images seen in ``global_step`` optimiser steps: whole epochs of ``n_train`` slices (or
    ``max_steps_per_epoch`` batches), then the batches of the epoch the budget cut (full batches)."""
    if global_step <= 0 or n_train <= 0 or batch_size <= 0:
        return 0
    per_epoch = math.ceil(n_train / batch_size)
    if max_steps_per_epoch:
        per_epoch = min(per_epoch, int(max_steps_per_epoch))
    images_per_epoch = min(n_train, per_epoch * batch_size)
    full, rest = divmod(int(global_step), per_epoch)
    return full * images_per_epoch + rest * batch_size


def ckpt_facts(ckpt: Path) -> dict:
    """``global_step`` (optimiser steps) and ``elapsed`` (seconds trained, across resumes: the TimeBudget
    callback's clock) stored in a Lightning ``last.ckpt``, read memory-mapped (the weights are not loaded);
    empty when unreadable."""
    try:
        import torch

        state = torch.load(str(ckpt), map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # unreadable or another format: the rate is then not reported
        return {}
    out = {}
    if state.get("global_step") is not None:
        out["global_step"] = int(state["global_step"])
    for k, v in (state.get("callbacks") or {}).items():
        if "TimeBudget" in str(k) and isinstance(v, dict) and v.get("elapsed") is not None:
            out["elapsed"] = float(v["elapsed"])
    return out


# --------------------------------------------------------------------------- the selection step


def postprocess_grid(kind: str = "full") -> list[dict]:
    """Postprocessing candidates (``[infer]`` values), simplest first: ties go to the earlier one.

    ``full``: none, then ``fill_holes`` x ``min_tumour_mm3`` (0, 100, 1000) x (``tumour_grow``,
    ``tumour_grow_beyond``) in (0, 0), (1, 0), (2, 0), (2, 2): 25 candidates.  ``small``: none, the
    library's defaults, and one growth (the smoke mode)."""
    grid: list[dict] = [{"postprocess": False}]
    if kind == "small":
        return grid + [{"postprocess": True, "fill_holes": True, "min_tumour_mm3": 0.0, "tumour_grow": 0,
                        "tumour_grow_beyond": 0},
                       {"postprocess": True, "fill_holes": True, "min_tumour_mm3": 0.0, "tumour_grow": 1,
                        "tumour_grow_beyond": 1}]
    for fill in (True, False):
        for min_mm3 in (0.0, 100.0, 1000.0):
            for grow, beyond in ((0, 0), (1, 0), (2, 0), (2, 2)):
                grid.append({"postprocess": True, "fill_holes": fill, "min_tumour_mm3": min_mm3,
                             "tumour_grow": grow, "tumour_grow_beyond": beyond})
    return grid


def candidate_label(c: dict) -> str:
    if not c.get("postprocess"):
        return "none"
    return (f"fill_holes={c['fill_holes']}, min_tumour_mm3={c['min_tumour_mm3']:g}, tumour_grow={c['tumour_grow']}"
            f", tumour_grow_beyond={c['tumour_grow_beyond']}")


def region_counts(pred, gt, ks) -> list[int]:
    """(liver tp, pred, gt, tumour tp, pred, gt) voxel counts on the canonical slices ``ks`` (axis 2).

    Liver is the LiTS liver region (labels 1 and 2), tumour label 2."""
    p, g = pred[:, :, ks], gt[:, :, ks]
    out = []
    for pm, gm in ((p >= 1, g >= 1), (p == 2, g == 2)):
        out += [int((pm & gm).sum()), int(pm.sum()), int(gm.sum())]
    return out


def _dice(tp: int, n_p: int, n_g: int) -> float:
    return 1.0 if n_p + n_g == 0 else 2.0 * tp / (n_p + n_g)


def score_candidates(raw, windowed, gt, spacing, ks, candidates: list[dict], settings) -> list[list[int]]:
    """:func:`region_counts` of each candidate's labels: ``raw`` (canonical labels of the model) as they are,
    or after :func:`flexunet.infer.volume.postprocess_volume` with the candidate's values (the code
    ``infer-volume`` runs)."""
    import numpy as np

    from flexunet.infer.volume import postprocess_volume

    voxel_mm3 = float(np.prod(spacing))
    out = []
    for c in candidates:
        if not c.get("postprocess"):
            lab = raw
        else:
            values = {k: v for k, v in c.items() if k != "postprocess"}
            lab = postprocess_volume(raw.copy(), windowed, tuple(spacing), voxel_mm3,
                                     dataclasses.replace(settings, **values))
        out.append(region_counts(lab, gt, ks))
    return out


def select(train_cases: list[Path], config: Path, weights, valid: dict[str, list[int]],
           candidates: list[dict]) -> dict:
    """Choose the postprocessing on the training patients' validation blocks; it cannot see a test patient.

    Args:
        train_cases: the training patients' case folders (``image.nii.gz`` + ``label.nii.gz``), e.g. the
            run's folder of links, which holds no test patient.  Nothing else is read.
        config: the run's config; weights: its ``best.pt`` (or a list of checkpoints: their softmax averaged).
        valid: case id -> the axial slice indices of its validation slices (:func:`valid_slices`), or
            ``"all"`` for a validation case held out whole (``--valid-case``): every slice is scored.
        candidates: :func:`postprocess_grid` entries.

    Each training volume is segmented once without postprocessing; every candidate is applied to it and
    scored on the case's :func:`selection_region`.  Counts are pooled over the cases; the score is liver
    Dice + tumour Dice (a tumour-free region predicted tumour-free scores 1).  The highest score wins,
    ties going to the earlier candidate.  With a single candidate nothing is segmented.

    Returns:
        ``{"chosen", "chosen_label", "scored", "table": [{"candidate", "liver_dice", "tumour_dice",
        "score"}], "cases": {case: region slices}, "seconds"}``.
    """
    t0 = time.perf_counter()
    if len(candidates) <= 1:
        return {"chosen": dict(candidates[0]), "chosen_label": candidate_label(candidates[0]), "scored": False,
                "table": [], "cases": {}, "seconds": 0.0,
                "note": "one candidate: nothing to choose (the epoch is chosen by validation loss)"}
    import numpy as np

    from flexunet.api import load_config
    from flexunet.infer.volume import VolumePredictor, prepare_volume
    from flexunet.io.volumes import read_volume, to_canonical

    paths = weights if isinstance(weights, (list, tuple)) else [weights]
    predictor = VolumePredictor(load_config(config), [str(w) for w in paths])
    settings = predictor.settings
    totals = np.zeros((len(candidates), 6), np.int64)
    used: dict[str, int] = {}
    for case_dir in train_cases:
        cid = Path(case_dir).name
        if not valid.get(cid):
            continue
        vol = read_volume(Path(case_dir) / "image.nii.gz")
        prepared = prepare_volume(vol, settings.hu_window)
        nz = prepared.windowed.shape[2]
        ks = list(range(nz)) if valid[cid] == "all" else selection_region(valid[cid], nz)
        if not ks:
            continue
        seg = predictor.segment(vol, postprocess=False)
        raw = np.ascontiguousarray(prepared.undo.to_canonical(seg.labels)).astype(np.uint8)
        gt = np.asarray(to_canonical(read_volume(Path(case_dir) / "label.nii.gz", label=True))[0].array)
        totals += np.asarray(score_candidates(raw, prepared.windowed, gt, prepared.spacing, ks, candidates,
                                              settings), np.int64)
        used[cid] = len(ks)
        del vol, prepared, seg, raw, gt
    table = []
    for c, t in zip(candidates, totals.tolist()):
        ld, td = _dice(*t[:3]), _dice(*t[3:])
        table.append({"candidate": c, "label": candidate_label(c), "liver_dice": ld, "tumour_dice": td,
                      "score": ld + td})
    best = max(range(len(table)), key=lambda i: (table[i]["score"], -i))
    return {"chosen": dict(candidates[best]), "chosen_label": candidate_label(candidates[best]), "scored": True,
            "table": table, "cases": used, "seconds": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------- one run

#: what the process is doing ("prepare": the data; then per run "slice", "train", "select", "test"): the tests
#: check which files each stage opens
STAGE = {"name": None}


def _set_stage(name: str | None) -> None:
    STAGE["name"] = name


def run_name(recipe_key: str, test: str, seed, minutes: float, variant: str = "") -> str:
    """``<recipe>[.<variant>]-<test patient>-seed<seed>-<budget>min`` (``seed42+43`` for several seeds)."""
    seeds = "+".join(map(str, seed)) if isinstance(seed, (list, tuple)) else seed
    return f"{recipe_key}{'.' + variant if variant else ''}-{test}-seed{seeds}-{minutes:g}min"


def _clean(obj):
    """JSON-ready: NaN/Inf -> None, tuples -> lists, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _write_json(path: Path, data: dict) -> None:
    from flexunet.io.atomic import atomic_save_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_text(path, json.dumps(_clean(data), indent=1, default=str) + "\n")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


_CLASS_KEYS = ("status", "dice", "iou", "voe", "rvd", "assd_mm", "hd95_mm", "pred_ml", "gt_ml", "pred_components",
               "gt_components")


def run_config(recipe: Recipe, fold: Fold, minutes: float, seed: int, extra: dict | None = None) -> str:
    """The config text of one run: the recipe's template and sets, the equal-budget rule
    (:data:`EQUAL_BUDGET_SETS`, ``max_time_minutes``), the run's folders and split (its training patients
    only), the seed, then ``extra`` ({scope "*" or recipe key: {key: value}})."""
    sets = dict(recipe.sets)
    sets.update(EQUAL_BUDGET_SETS)
    sets.update({
        "train.model_dir": "./models/", "train.eval_dir": "./eval/",
        "train.images_dir": "./dataset/train/images/", "train.masks_dir": "./dataset/train/masks/",
        "train.max_time_minutes": round(float(minutes), 4), "train.seed": int(seed),
        "valid.images_dir": "./dataset/valid/images/", "valid.masks_dir": "./dataset/valid/masks/",
        "test.images_dir": "./dataset/test/images/", "test.masks_dir": "./dataset/test/masks/",
        "infer.images_dir": "./dataset/valid/images/", "infer.output_dir": "./mini_test_output/",
        "slice.cases_dir": "./cases", "slice.output_dir": "./dataset",
        "slice.train_cases": list(fold.train), "slice.valid_cases": list(fold.valid), "slice.test_cases": [],
    })
    for scope in ("*", recipe.key):
        sets.update((extra or {}).get(scope, {}))
    return edit_config(recipe.template, sets)


def run_key(what: dict) -> str:
    """A run's key: a hash of what decides its figures (and the protocol version); a summary with another
    key is stale and the run is made again."""
    return hashlib.sha256(json.dumps({"protocol": PROTOCOL_VERSION, **what}, sort_keys=True,
                                     default=str).encode()).hexdigest()[:16]


def config_key_text(cfg_text: str) -> str:
    """A run's config as its key sees it: the settings' lines without comments and blank lines, so that a
    comment edited in the template does not rerun finished runs."""
    return "\n".join(line.strip() for line in cfg_text.splitlines()
                     if line.strip() and not line.lstrip().startswith((";", "#")))


def run_one(recipe: Recipe, fold: Fold, minutes: float, ctx: dict, seed: int | None = None) -> dict:
    """One run: slice (training patients only) -> train -> select -> test, each stage kept once done.

    ``ctx``: ``out``, ``cases``, ``cases_minmax``, optional ``sets`` ({scope: {key: value}}), ``inprocess``,
    ``keep_checkpoints``, ``grid`` (postprocessing candidates), ``selection_only``.  Returns the run's
    summary (also written to ``<out>/runs/<run>/summary.json``)."""
    from flexunet.api import load_config

    seed = BASE_SEED if seed is None else int(seed)
    name = run_name(recipe.key, fold.name, seed, minutes, ctx.get("variant", ""))
    run_dir = Path(ctx["out"]) / "runs" / name
    cases_src = Path(ctx["cases_minmax"] if recipe.preprocessing == "minmax" else ctx["cases"])
    real_src = Path(ctx["cases"])  # ground truth always from the HU cases
    overlap = set(fold.train) & set(fold.test)
    if overlap:
        raise ValueError(f"fold {fold.name}: {sorted(overlap)} both trains and tests")
    cfg_text = run_config(recipe, fold, minutes, seed, ctx.get("sets"))
    grid = list(ctx.get("grid") or postprocess_grid()) if recipe.postprocess else [{"postprocess": False}]
    selection_only = bool(ctx.get("selection_only"))
    key = run_key({"config": config_key_text(cfg_text), "grid": grid, "train": fold.train, "valid": fold.valid,
                   "test": fold.test, "preprocessing": recipe.preprocessing})
    summary_path = run_dir / "summary.json"
    old = _read_json(summary_path)
    if old and old.get("key") == key and (old.get("test") or selection_only):
        qd.log(f"{name}: done before ({summary_path}), skipped")
        return {**old, "test": None, "cases": {}, "selection_only": True} if selection_only else old
    state_path = run_dir / "state.json"
    state = _read_json(state_path) or {}
    if state.get("key") != key:
        if run_dir.exists():
            qd.log(f"{name}: {run_dir} holds another configuration: starting over")
            shutil.rmtree(run_dir)
        state = {"key": key, "done": {}}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    cfg_path = run_dir / "train_eval_infer.config"
    cfg_path.write_text(cfg_text)
    _write_json(state_path, state)
    inproc = ctx.get("inprocess", False)
    done = state["done"]

    def finish(stage: str, value) -> None:
        done[stage] = value
        _write_json(state_path, state)

    # the run's own cases folder: links to its training patients, never to a test patient
    train_dirs, valid_dirs = [], []
    for cid in dict.fromkeys(fold.train + fold.valid):
        src = cases_src / cid if (cases_src / cid).exists() else real_src / cid
        if not (run_dir / "cases" / cid).exists():
            qd.link_case(src, run_dir / "cases" / cid)
        (train_dirs if cid in fold.train else valid_dirs).append(run_dir / "cases" / cid)
    cfg = str(cfg_path)
    ds = run_dir / "dataset"
    try:
        if "slice" not in done:
            _set_stage("slice")
            if ds.exists():
                shutil.rmtree(ds)
            qd.log(f"{name}: slice {', '.join(fold.train)} (test {', '.join(fold.test)} is not in this folder)")
            st = run_cli(["slice", cfg], run_dir / "logs" / "slice.log", inprocess=inproc)
            split = split_valid_blocks(ds) if not fold.valid else {}
            counts = {s: _count_pngs(ds / s / "images") for s in ("train", "valid")}
            finish("slice", {"stage": _stage_entry(st), "valid_split": split, "slices": counts})
        if "train" not in done:
            _set_stage("train")
            last = run_dir / "models" / "last.ckpt"
            resume = last.exists()
            qd.log(f"{name}: train {minutes:g} min on {done['slice']['slices']['train']} slices "
                   f"(valid {done['slice']['slices']['valid']})" + (", resumed from last.ckpt" if resume else ""))
            st = run_cli(["train", cfg] + (["--resume"] if resume else []), run_dir / "logs" / "train.log",
                         inprocess=inproc)
            tr = _parse_train(st["stdout"])
            tr["resumed"] = resume
            tcfg = load_config(cfg_path).train
            facts = ckpt_facts(last) if last.exists() else {}
            n_train = done["slice"]["slices"]["train"]
            if facts.get("elapsed") is not None:  # the whole run's training time, across a --resume
                tr["train_seconds"] = round(facts["elapsed"], 1)
            if facts.get("global_step") is not None:
                step = facts["global_step"]
                tr["steps"] = step
                tr["images"] = images_trained(step, n_train, tcfg.batch_size, tcfg.max_steps_per_epoch)
                per_epoch = min(math.ceil(n_train / tcfg.batch_size), tcfg.max_steps_per_epoch or 10 ** 9)
                tr["epochs_done"] = round(step / max(per_epoch, 1), 2)
                if tr.get("train_seconds"):
                    tr["img_per_s"] = round(tr["images"] / tr["train_seconds"], 2)
            hist = _read_json(run_dir / "history.json") or {}
            vl = hist.get("val_loss") if isinstance(hist, dict) else None
            if vl:
                tr["val_loss"] = vl
                finite = [(v, i) for i, v in enumerate(vl) if v is not None and math.isfinite(v)]
                tr["best_epoch"] = min(finite)[1] + 1 if finite else None
            tr["history_epochs"] = len(vl or [])
            if last.exists() and not ctx.get("keep_checkpoints"):
                tr["last_ckpt_mb"] = round(last.stat().st_size / 2 ** 20)
                last.unlink()  # resumable state: 1.5 GB for recipe (a); best.pt is what the next stages use
            finish("train", {"stage": _stage_entry(st), **tr})
        if "select" not in done:
            _set_stage("select")
            qd.log(f"{name}: select among {len(grid)} postprocessing candidate(s) on "
                   + (f"the whole of {', '.join(p.name for p in valid_dirs)}" if valid_dirs else
                      f"the validation blocks of {', '.join(p.name for p in train_dirs)}"))
            valid = {**valid_slices(ds), **{d.name: "all" for d in valid_dirs}}
            sel = select(train_dirs + valid_dirs, cfg_path, run_dir / "models" / "best.pt", valid, grid)
            finish("select", sel)
        summary = {"run": name, "key": key, "recipe": recipe.key, "recipe_title": recipe.title, "fold": fold.name,
                   "seed": seed, "budget_minutes": minutes, "train_cases": fold.train, "test_cases": fold.test,
                   "tumour_scored": list(fold.tumour_cases),
                   "valid": fold.valid or "held-out slice blocks of the training patients",
                   "slices": done["slice"]["slices"], "train": {k: v for k, v in done["train"].items()
                                                                if k != "stage"},
                   "selection": done["select"], "stages": {s: done[s]["stage"] for s in ("slice", "train")},
                   "protocol": PROTOCOL_VERSION, "selection_only": selection_only, "test": None, "cases": {},
                   "command": ctx.get("command"), "machine": ctx.get("machine"),
                   "variant": ctx.get("variant") or None,
                   "variant_sets": {k: repr(v) for scope in ("*", recipe.key)
                                    for k, v in (ctx.get("sets") or {}).get(scope, {}).items()}}
        if not selection_only:
            _set_stage("test")
            summary.update(score_test_patient(run_dir, cfg_text, done["select"]["chosen"], fold, cases_src,
                                              real_src, inproc))
        summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        _write_json(summary_path, summary)
        return _clean(summary)
    finally:
        _set_stage(None)


ENSEMBLE_RECIPE = "b-ens"


def run_ensemble(fold: Fold, members: list[dict], ctx: dict) -> dict:
    """The seeds of one recipe (b) setting of a fold as one model: their softmax averaged (``[infer] weights``
    lists every member's ``best.pt``), no training.  The selection step chooses its postprocessing on the
    members' validation blocks (the same slices for every seed: none of the members trained on them), so its
    selection figure ranks it beside each member's; the test patient is then scored once.

    ``members``: the finished runs' summaries (their raw folders under ``<out>/runs`` hold the weights)."""
    if len(members) < 2:
        raise ValueError(f"fold {fold.name}: an ensemble needs at least 2 finished runs, got {len(members)}")
    first = members[0]
    variant = first.get("variant") or ""
    if any((m.get("variant") or "") != variant or m["fold"] != fold.name for m in members):
        raise ValueError(f"fold {fold.name}: ensemble members of different settings: {[m['run'] for m in members]}")
    minutes = first["budget_minutes"]
    seeds = [m["seed"] for m in members]
    name = run_name(ENSEMBLE_RECIPE, fold.name, seeds, minutes, variant)
    runs = Path(ctx["out"]) / "runs"
    member_dirs = [runs / m["run"] for m in members]
    weights = [(d / "models" / "best.pt").resolve() for d in member_dirs]
    missing = [str(w) for w in weights if not w.exists()]
    if missing:
        raise FileNotFoundError(f"{name}: members' weights missing: {', '.join(missing)}")
    grid = list(ctx.get("grid") or postprocess_grid())
    key = run_key({"members": [m["key"] for m in members], "grid": grid})
    run_dir = runs / name
    summary_path = run_dir / "summary.json"
    old = _read_json(summary_path)
    if old and old.get("key") == key and old.get("test"):
        qd.log(f"{name}: done before ({summary_path}), skipped")
        return old
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "logs").mkdir()
    cfg_text = edit_config((member_dirs[0] / "train_eval_infer.config").read_text(),
                           {"infer.weights": [str(w) for w in weights]})
    cfg_path = run_dir / "train_eval_infer.config"
    cfg_path.write_text(cfg_text)
    # the first member's folder of links (its training patients only) and its validation slices
    cases_dir = member_dirs[0] / "cases"
    train_dirs = [cases_dir / c for c in fold.train]
    valid_dirs = [cases_dir / c for c in fold.valid]
    try:
        _set_stage("select")
        qd.log(f"{name}: {len(members)} models averaged; select among {len(grid)} postprocessing candidate(s)")
        valid = {**valid_slices(member_dirs[0] / "dataset"), **{d.name: "all" for d in valid_dirs}}
        sel = select(train_dirs + valid_dirs, cfg_path, weights, valid, grid)
        summary = {"run": name, "key": key, "recipe": ENSEMBLE_RECIPE,
                   "recipe_title": f"recipe (b), the softmax of seeds {', '.join(map(str, seeds))} averaged",
                   "fold": fold.name, "seed": "+".join(map(str, seeds)), "members": [m["run"] for m in members],
                   "budget_minutes": minutes, "train_cases": fold.train, "test_cases": fold.test,
                   "tumour_scored": list(fold.tumour_cases), "valid": first.get("valid"),
                   "slices": first.get("slices"), "train": {}, "selection": sel, "stages": {},
                   "protocol": PROTOCOL_VERSION, "selection_only": False, "test": None, "cases": {},
                   "command": ctx.get("command"), "machine": ctx.get("machine"), "variant": variant or None,
                   "variant_sets": first.get("variant_sets") or {}}
        _set_stage("test")
        summary.update(score_test_patient(run_dir, cfg_text, sel["chosen"], fold, Path(ctx["cases"]),
                                          Path(ctx["cases"]), ctx.get("inprocess", False)))
        summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        _write_json(summary_path, summary)
        return _clean(summary)
    finally:
        _set_stage(None)


def _stage_entry(st: dict) -> dict:
    return {k: v for k, v in st.items() if k not in ("stdout", "log")}


def score_test_patient(run_dir: Path, cfg_text: str, chosen: dict, fold: Fold, cases_src: Path, real_src: Path,
             inproc: bool) -> dict:
    """Segment the fold's test patient(s) once with the chosen postprocessing and score them."""
    values = {f"infer.{k}": v for k, v in chosen.items() if k != "postprocess"}
    test_cfg = run_dir / "test.config"
    test_cfg.write_text(edit_config(cfg_text, values))
    out = run_dir / "test"
    if out.exists():
        shutil.rmtree(out)
    inputs = [str(((cases_src / c) if (cases_src / c).exists() else (real_src / c)) / "image.nii.gz")
              for c in fold.test]
    qd.log(f"{run_dir.name}: test on {', '.join(fold.test)} (postprocessing: {candidate_label(chosen)})")
    argv = ["infer-volume", str(test_cfg), *inputs, "--output", str(out / "pred")]
    if not chosen.get("postprocess"):
        argv.append("--no-postprocess")
    st_inf = run_cli(argv, run_dir / "logs" / "infer_volume.log", inprocess=inproc)
    gt = out / "gt"
    for c in fold.test:
        (gt / c).mkdir(parents=True, exist_ok=True)
        shutil.copyfile((real_src / c / "label.nii.gz").resolve(), gt / c / "label.nii.gz")
    st_ev = run_cli(["evaluate-volume", str(out / "pred"), str(gt), "--output", str(out / "metrics")],
                    run_dir / "logs" / "evaluate_volume.log", inprocess=inproc)
    vm = json.loads((out / "metrics" / "volume_metrics.json").read_text())
    cases = {}
    for c in vm["cases"]:
        scored = c["case_id"] in fold.tumour_cases
        liver = {k: c["classes"]["liver"].get(k) for k in _CLASS_KEYS}
        tumour = {k: c["classes"]["tumour"].get(k) for k in _CLASS_KEYS}
        cases[c["case_id"]] = {"liver": liver, "tumour": tumour if scored else None, "tumour_scored": scored,
                               "pred_tumour_ml": tumour["pred_ml"], "volumetry": c["volumetry"]}
    first = cases[fold.test[0]] if fold.test and fold.test[0] in cases else None
    return {"test": first, "cases": cases, "infer": _parse_infer(st_inf["stdout"]),
            "test_stages": {"infer_volume": _stage_entry(st_inf), "evaluate_volume": _stage_entry(st_ev)}}


# --------------------------------------------------------------------------- tables


_f = _common.fmt_num


def chosen_candidate(sel: dict) -> dict | None:
    """The row of the selection step's table (:func:`select`) for the candidate it chose; None if unscored."""
    return next((r for r in sel.get("table", []) if r.get("label") == sel.get("chosen_label")), None)


def run_row(s: dict) -> dict:
    """One run's figures, flat (a row of quality.csv)."""
    t = s.get("test") or {}
    lv, tu = t.get("liver") or {}, t.get("tumour") or {}
    tr, sel = s.get("train") or {}, s.get("selection") or {}
    chosen_row = chosen_candidate(sel) or {}

    def diff(a, b):
        return None if a is None or b is None else a - b

    return {
        "run": s["run"], "recipe": s["recipe"], "test": s["fold"], "seed": s["seed"],
        "budget_min": s["budget_minutes"],
        "liver_dice": lv.get("dice"), "tumour_dice": tu.get("dice") if s["fold"] in s.get("tumour_scored", [])
        else None,
        "false_tumour_ml": (t.get("pred_tumour_ml") if t and s["fold"] not in s.get("tumour_scored", []) else None),
        "liver_assd_mm": lv.get("assd_mm"), "liver_hd95_mm": lv.get("hd95_mm"),
        "tumour_assd_mm": tu.get("assd_mm"), "tumour_hd95_mm": tu.get("hd95_mm"),
        "liver_ml_pred": lv.get("pred_ml"), "liver_ml_gt": lv.get("gt_ml"),
        "liver_ml_err": diff(lv.get("pred_ml"), lv.get("gt_ml")), "liver_rvd": lv.get("rvd"),
        "tumour_ml_pred": t.get("pred_tumour_ml") if t else None, "tumour_ml_gt": tu.get("gt_ml"),
        "tumour_ml_err": diff(tu.get("pred_ml"), tu.get("gt_ml")),
        "epochs": tr.get("history_epochs"), "epochs_done": tr.get("epochs_done"), "best_epoch": tr.get("best_epoch"),
        "train_s": tr.get("train_seconds"), "img_per_s": tr.get("img_per_s"),
        "selected": sel.get("chosen_label"), "selection_liver_dice": chosen_row.get("liver_dice"),
        "selection_tumour_dice": chosen_row.get("tumour_dice"),
    }


def natural_key(name: str) -> list:
    """``ircadb_7`` before ``ircadb_17``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


def _stats(values) -> dict:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": len(v), "mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else None,
            "min": min(v), "max": max(v)}


def _ms(st: dict, nd=3) -> str:
    if not st["n"]:
        return "–"
    if st["n"] == 1:
        return _f(st["mean"], nd)
    return f"{_f(st['mean'], nd)} ± {_f(st['sd'], nd)} ({_f(st['min'], nd)}–{_f(st['max'], nd)})"


def _per_seed_means(folds: dict, key: str) -> dict:
    """The over-folds mean of ``key`` taken per seed (the seeds run in every fold of ``{test: [rows]}``),
    for the spread the seed alone gives."""
    every = set.intersection(*({r["seed"] for r in rs} for rs in folds.values()))
    means = []
    for seed in sorted(every, key=str):
        values = [r[key] for rs in folds.values() for r in rs if r["seed"] == seed and r[key] is not None]
        means.append(statistics.fmean(values) if values else None)
    return _stats(means)


def aggregate(rows: list[dict]) -> dict:
    """Per recipe x test patient (over seeds) and per recipe over the folds (means of the fold means)."""
    out: dict = {"per_fold": {}, "overall": {}}
    keys = ("liver_dice", "tumour_dice", "false_tumour_ml", "liver_assd_mm", "liver_hd95_mm", "tumour_assd_mm",
            "tumour_hd95_mm", "liver_ml_err", "tumour_ml_err", "img_per_s", "epochs_done")
    for r in rows:
        out["per_fold"].setdefault(r["recipe"], {}).setdefault(r["test"], []).append(r)
    for recipe, folds in out["per_fold"].items():
        out.setdefault("per_seed", {})[recipe] = {k: _per_seed_means(folds, k)
                                                  for k in ("liver_dice", "tumour_dice", "false_tumour_ml")}
        for test, rs in folds.items():
            folds[test] = {k: _stats([r[k] for r in rs]) for k in keys}
            folds[test]["seeds"] = sorted(r["seed"] for r in rs)
        out["overall"][recipe] = {k: _stats([f[k]["mean"] for f in folds.values()]) for k in keys}
        out["overall"][recipe]["folds"] = sorted(folds, key=natural_key)
    return out


def render(report: dict) -> str:
    L_: list[str] = []
    meta = report["meta"]
    L_ += ["# FlexUNet real-CT quality benchmark (leave one patient out, choices on the training side)", "",
           f"command: `{meta['command']}`"]
    if meta.get("machines"):
        L_.append("machine (of the runs): " + " | ".join(meta["machines"]))
    elif meta.get("machine"):
        L_.append(f"machine: {_common.machine_line(meta['machine'])}; load average at end "
                  f"{meta.get('load_average_end')}")
    if meta.get("started"):
        L_.append(f"started {meta.get('started')}, wall time {meta.get('wall_minutes', 0):.1f} min")
    else:
        L_.append("the tables of every run summary of this budget in the report folder's runs/, from the command(s) "
                  "above; each summary holds its own command, machine and finish time")
    L_ += ["", f"Budget: {meta.get('budget_text', '')}", "", "## Data and folds", ""]
    for n in report["data"].get("notes", []):
        L_.append(f"- {n}")
    for cid, text in (report["data"].get("import_notes") or {}).items():
        L_.append(f"- {cid} import: {text}")
    fix = report["data"].get("lits117_fix") or {}
    if fix:
        L_.append(f"- LiTS 117 (a 128^3 crop around the liver, no voxel size in its header): as imported, "
                  f"{fix.get('axes_as_imported')}; fixed by {fix.get('transform')}; {fix.get('spacing_mm_assumed')} "
                  f"mm isotropic assumed; padded with {fix.get('pad_value_hu')} HU onto a "
                  f"{'x'.join(map(str, fix.get('canvas', [])))} canvas, {fix.get('placement')} "
                  f"(crop at i, j = {fix.get('crop_origin_on_canvas')})")
    facts = report["data"].get("cases", {})
    if facts:
        L_ += ["", _common.md_table(
            ["case", "shape", "spacing mm", "label 1 voxels", "label 2 voxels", "liver slices", "HU range"],
            [[c, "x".join(map(str, f["shape"])), "x".join(f"{s:g}" for s in f["spacing_mm"]),
              f"{f['voxels_liver_label1']:,}", f"{f['voxels_tumour_label2']:,}",
              f"{f['liver_slices']}/{f['slices']}", f"{f['hu_min']:.0f}..{f['hu_max']:.0f}"]
             for c, f in sorted(facts.items(), key=lambda kv: natural_key(kv[0]))])]
    L_.append("")
    for fold in report["folds"]:
        valid = (f"{', '.join(fold['valid'])} held out whole" if fold.get("valid") else
                 "held-out slice blocks of the training patients")
        L_.append(f"- fold {fold['name']}: train {', '.join(fold['train'])}; validation: {valid}; test "
                  f"{', '.join(fold['test'])} ({fold['note']})")
    for k, r in report["recipes"].items():
        L_.append(f"- ({k}) {r['title']}: template {r['template_source']}; "
                  f"seeds {', '.join(map(str, r['seeds']))}")
    for fold_name, c in (report.get("choices") or {}).items():
        scores = ", ".join(f"{('b.' + v) if v else 'b'} {sc:.3f}" for v, sc in c["scores"].items())
        L_.append(f"- fold {fold_name}: recipe (b) run as {('b.' + c['variant']) if c['variant'] else 'b'}, "
                  + (f"the highest selection figure (validation liver + tumour Dice) among the fold's own runs: "
                     f"{scores}" if scores else "as chosen by --choose-from from the fold's own selection runs"))
    runs = report["runs"]
    rows = [run_row(s) for s in runs if s.get("ok", True) and s.get("run")]
    tested = [r for r in rows if r["liver_dice"] is not None]
    if tested:
        L_ += ["", "## Test patients, one row per run", "",
               "Each test patient scored once per run, with the postprocessing its selection step chose. "
               "Liver = labels 1 + 2 (LiTS); ASSD / HD95 in mm; volumes in mL (error = predicted - true); "
               "epochs = epochs run (the last one cut by the budget) / best by validation loss; img/s = "
               "training slices seen per second of training (validation included).", ""]
        L_.append(_common.md_table(
            ["run", "liver Dice", "tumour Dice", "false tumour mL", "liver ASSD", "liver HD95", "tumour ASSD",
             "tumour HD95", "liver mL err", "tumour mL err", "epochs", "img/s", "postprocessing (selected)"],
            [[r["run"], _f(r["liver_dice"]), _f(r["tumour_dice"]), _f(r["false_tumour_ml"], 1),
              _f(r["liver_assd_mm"], 2), _f(r["liver_hd95_mm"], 1), _f(r["tumour_assd_mm"], 2),
              _f(r["tumour_hd95_mm"], 1), _f(r["liver_ml_err"], 0, signed=True),
              _f(r["tumour_ml_err"], 1, signed=True),
              f"{_f(r['epochs_done'], 2)} / {r['best_epoch'] if r['best_epoch'] is not None else '–'}",
              _f(r["img_per_s"], 2), r["selected"]] for r in tested]))
        agg = aggregate(tested)
        L_ += ["", "## Per fold (over seeds: mean ± sd (min–max))", ""]
        prow = []
        for recipe, folds in agg["per_fold"].items():
            for test, st in sorted(folds.items(), key=lambda kv: natural_key(kv[0])):
                prow.append([f"({recipe})", test, len(st["seeds"]), _ms(st["liver_dice"]), _ms(st["tumour_dice"]),
                             _ms(st["false_tumour_ml"], 1), _ms(st["liver_assd_mm"], 2), _ms(st["liver_hd95_mm"], 1),
                             _ms(st["tumour_hd95_mm"], 1), _ms(st["img_per_s"], 2)])
        L_.append(_common.md_table(["recipe", "test", "seeds", "liver Dice", "tumour Dice", "false tumour mL",
                                    "liver ASSD", "liver HD95", "tumour HD95", "img/s"], prow))
        L_ += ["", "## Over the folds (mean of the fold means) against the goals", ""]
        orow = []
        for recipe, st in agg["overall"].items():
            ps = agg["per_seed"][recipe]
            orow.append([f"({recipe})", ", ".join(st["folds"]), _f(st["liver_dice"]["mean"]),
                         _f(st["tumour_dice"]["mean"]), _f(st["false_tumour_ml"]["mean"], 1),
                         " / ".join(_ms(ps[k], nd) for k, nd in (("liver_dice", 3), ("tumour_dice", 3),
                                                                 ("false_tumour_ml", 1)))])
        L_.append(_common.md_table(["recipe", "folds", "liver Dice", "tumour Dice (tumour patients)",
                                    "false tumour mL (tumour-free patient)",
                                    "per seed run in every fold: liver / tumour / false tumour"], orow))
        L_.append("")
        ov = agg["overall"]
        b = ov.get("b")
        if b:
            L_.append(f"Goals for (b): liver Dice >= {GOALS['liver']}: "
                      f"{_met(b['liver_dice']['mean'], GOALS['liver'])}; "
                      f"tumour Dice >= {GOALS['tumour']}: {_met(b['tumour_dice']['mean'], GOALS['tumour'])}; "
                      f"false tumour <= {GOALS['false_tumour_ml']} mL: "
                      f"{_met(b['false_tumour_ml']['mean'], GOALS['false_tumour_ml'], below=True)}")
        if b and ov.get("a"):
            a = ov["a"]
            dl = _sub(b["liver_dice"]["mean"], a["liver_dice"]["mean"])
            dt = _sub(b["tumour_dice"]["mean"], a["tumour_dice"]["mean"])
            L_.append(f"(b) - (a), same folds and training minutes: liver {_f(dl, signed=True)} (goal "
                      f">= +{GOALS['delta_liver']}: {_met(dl, GOALS['delta_liver'])}), tumour {_f(dt, signed=True)} "
                      f"(goal >= +{GOALS['delta_tumour']}: {_met(dt, GOALS['delta_tumour'])})")
    srows = []
    for s in runs:
        sel = s.get("selection") or {}
        if not sel:
            continue
        ch = chosen_candidate(sel)
        srows.append([s["run"], len(sel.get("table", [])) or 1, sel.get("chosen_label"),
                      _f(ch["liver_dice"]) if ch else "–", _f(ch["tumour_dice"]) if ch else "–",
                      _f(ch.get("score")) if ch else "–",
                      ", ".join(f"{c} {n}" for c, n in (sel.get("cases") or {}).items()) or "–",
                      (s.get("train") or {}).get("best_epoch") or "–"])
    if srows:
        L_ += ["", "## Selection (training patients' validation blocks only)", "",
               "Validation blocks neighbour training slices, so these figures are optimistic; they only rank "
               "the candidates.", ""]
        L_.append(_common.md_table(["run", "candidates", "chosen postprocessing", "valid liver Dice",
                                    "valid tumour Dice", "selection figure (sum)", "scored slices", "best epoch"],
                                   srows))
    trows = []
    for s in runs:
        st = dict(s.get("stages") or {})
        st.update(s.get("test_stages") or {})
        tr = s.get("train") or {}

        def cell(n):
            e = st.get(n)
            if not e:
                return "–"
            return f"{e['seconds']:.0f} s" + (f" / {e['peak_rss_mb'] / 1024:.1f} GB" if e.get("peak_rss_mb") else "")

        sl = s.get("slices") or {}
        trows.append([s["run"], f"{sl.get('train', '?')}/{sl.get('valid', '?')}",
                      cell("slice"), cell("train"), _f((st.get("train") or {}).get("cpu_util"), 2),
                      tr.get("precision", "?"), _f((s.get("selection") or {}).get("seconds"), 0),
                      cell("infer_volume"), cell("evaluate_volume")])
    if trows:
        L_ += ["", "## Stages (wall seconds / peak RSS of the stage's process)", "",
               "train CPU = CPU seconds of the training process and its loader workers per wall second (about the "
               "core count when it had the machine to itself).", ""]
        L_.append(_common.md_table(["run", "slices tr/va", "slice", "train", "train CPU", "precision", "select s",
                                    "infer-volume", "evaluate-volume"], trows))
    failed = [r for r in runs if r.get("ok") is False]
    if failed:
        L_ += ["", "Failed runs:"] + [f"- {r.get('run')}: {r.get('error')}" for r in failed]
    L_.append("")
    return "\n".join(L_)


def _sub(a, b):
    return None if a is None or b is None else a - b


def _met(v, goal, below=False) -> str:
    if v is None:
        return "n/a"
    return "met" if (v <= goal if below else v >= goal) else "not met"


def write_csv(path: Path, rows: list[dict]) -> None:
    from flexunet.io.atomic import atomic_save_text

    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_text(path, buf.getvalue())


# --------------------------------------------------------------------------- driver


def run_benchmark(*, recipes: dict[str, Recipe], folds: list[Fold], seeds: dict[str, list[int]], cases: Path,
                  cases_minmax: Path | None, out: Path, report_dir: Path | None, budget_minutes: float, meta: dict,
                  data: dict, sets: dict | None = None, grid: list[dict] | None = None,
                  selection_only: bool = False, inprocess: bool = False, keep_checkpoints: bool = False,
                  variant: str = "", choices: dict | None = None, ensemble: bool = False) -> dict:
    """Every recipe x fold x seed; write the tables to ``out`` (and the summaries and tables to ``report_dir``).

    ``variant``: a name for the ``sets`` of this invocation, put into the run names so that runs of one
    recipe with other settings (``--set``) keep summaries of their own.  ``choices``: per fold, the recipe
    (b) variant its own selection figures chose (:func:`choose_variants`), run in place of the baseline.
    ``ensemble``: then, per fold, the finished recipe (b) runs of this invocation as one averaged model
    (:func:`run_ensemble`)."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ctx = {"out": str(out), "cases": str(cases), "cases_minmax": str(cases_minmax or cases), "sets": sets or {},
           "inprocess": inprocess, "keep_checkpoints": keep_checkpoints, "grid": grid or postprocess_grid(),
           "selection_only": selection_only, "command": meta.get("command"), "variant": variant,
           "machine": _common.machine_line(meta["machine"]) if meta.get("machine") else None}
    plan = [(recipes[k], fold, s) for fold in folds for k in ("a", "b") if k in recipes for s in seeds[k]]
    meta = dict(meta)
    n_runs = len(plan)
    meta["budget_text"] = (f"{budget_minutes:g} training minutes per run (wall clock, the last epoch cut when "
                           f"they run out), every recipe alike; {n_runs} run(s) = "
                           f"{n_runs * budget_minutes / 60:.1f} h of training. Slicing, selection and testing "
                           "come on top (see Stages)." + (" Selection only: no test patient was opened."
                                                          if selection_only else ""))
    report = {"meta": meta, "data": data, "folds": [dataclasses.asdict(f) for f in folds],
              "recipes": {k: {"title": r.title, "template_source": r.template_source, "seeds": seeds[k],
                              "preprocessing": ("per-volume HU min-max -> 0..255, grey x3 (no 2.5D)"
                                                if r.preprocessing == "minmax" else "config HU window"),
                              "sets": {kk: repr(v) for kk, v in r.sets.items()}} for k, r in recipes.items()},
              "equal_budget_sets": EQUAL_BUDGET_SETS, "grid": ctx["grid"], "goals": GOALS, "runs": []}

    def write_all(final: bool = False) -> str:
        meta["wall_minutes"] = (time.perf_counter() - t0) / 60
        meta["load_average_end"] = _common.load_average()
        text = render(report)
        rows = [run_row(s) for s in report["runs"] if s.get("run") and s.get("ok", True)]
        (out / "quality.md").write_text(text)
        _common.save_results("quality", _clean(report), out / "quality.json")
        write_csv(out / "quality.csv", rows)
        if report_dir is not None and final:
            export_reports(report, report_dir, budget_minutes, selection_only)
        return text

    report["choices"] = choices or {}

    def run_ctx(recipe: Recipe, fold: Fold) -> dict:
        choice = (choices or {}).get(fold.name) if recipe.key == "b" else None
        if not choice or not choice["variant"]:
            return ctx
        merged = {scope: dict(v) for scope, v in ctx["sets"].items()}
        for scope, kv in choice["sets"].items():
            merged.setdefault(scope, {}).update(kv)
        return {**ctx, "sets": merged, "variant": choice["variant"]}

    for recipe, fold, seed in plan:
        rctx = run_ctx(recipe, fold)
        try:
            res = run_one(recipe, fold, budget_minutes, rctx, seed=seed)
            res["ok"] = True
        except Exception as exc:  # keep going: one failed run must not lose the others
            name = run_name(recipe.key, fold.name, seed, budget_minutes, rctx.get("variant", ""))
            qd.log(f"{name} FAILED: {exc}")
            res = {"run": name, "recipe": recipe.key, "fold": fold.name, "seed": seed, "ok": False,
                   "error": str(exc)}
        report["runs"].append(res)
        write_all()
    for fold in folds if ensemble and not selection_only else []:
        members = [r for r in report["runs"] if r.get("ok") and r.get("recipe") == "b" and r.get("fold") == fold.name
                   and r.get("test")]
        if len(members) < 2:
            qd.log(f"{fold.name}: {len(members)} finished recipe (b) run(s): no ensemble")
            continue
        try:
            res = {**run_ensemble(fold, members, ctx), "ok": True}
        except Exception as exc:
            qd.log(f"{fold.name}: ensemble FAILED: {exc}")
            res = {"run": f"{ENSEMBLE_RECIPE}-{fold.name}", "recipe": ENSEMBLE_RECIPE, "fold": fold.name, "ok": False,
                   "error": str(exc)}
        report["runs"].append(res)
        write_all()
    text = write_all(final=True)
    print(text)
    print(f"wrote {out / 'quality.md'}, quality.json, quality.csv"
          + (f"; summaries and tables in {report_dir}" if report_dir is not None else ""))
    return report


def export_reports(report: dict, report_dir: Path, budget_minutes: float, selection_only: bool) -> list[Path]:
    """Copy the run summaries to ``report_dir/runs/<run>.json`` and write the tables of every summary there
    with this budget: ``quality-<budget>min.{md,csv}``, or ``selection-<budget>min.{md,csv}`` for
    ``--selection-only`` (which never replaces a summary that holds test figures).  Runs of several
    invocations (e.g. one fold at a time) thus add up to one table per budget."""
    runs_dir = report_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for s in report["runs"]:
        if not (s.get("run") and s.get("ok", True)):
            continue
        dst = runs_dir / f"{s['run']}.json"
        if selection_only and (_read_json(dst) or {}).get("test"):
            continue
        _write_json(dst, s)
    tag = f"{budget_minutes:g}min"
    collected = []
    for f in sorted(runs_dir.glob(f"*-{tag}.json"), key=lambda q: natural_key(q.stem)):
        s = _read_json(f)
        if not s or s.get("budget_minutes") != budget_minutes:
            continue
        if selection_only:
            s = {**s, "test": None, "cases": {}}
        elif not s.get("test"):
            continue
        collected.append(s)
    stem = f"{'selection' if selection_only else 'quality'}-{tag}"
    text = render(gathered_report(report, collected))
    (report_dir / f"{stem}.md").write_text(text)
    write_csv(report_dir / f"{stem}.csv", [run_row(s) for s in collected])
    return [report_dir / f"{stem}.md", report_dir / f"{stem}.csv"]


def gathered_report(report: dict, runs: list[dict]) -> dict:
    """``report`` with the header of ``runs``, which several invocations may have made (one fold or one
    recipe at a time): their commands, folds, recipes with their seeds, and each fold's recipe (b) variant
    (with the choice's scores where this invocation made it)."""
    commands = list(dict.fromkeys(s.get("command") for s in runs if s.get("command")))
    trained = [s for s in runs if s.get("train")]
    minutes = runs[0]["budget_minutes"] if runs else 0
    meta = {**report["meta"], "command": "`, `".join(commands) or report["meta"].get("command"),
            "machines": list(dict.fromkeys(re.sub(r"; load average at start \[.*?\]", "", s["machine"])
                                           for s in runs if s.get("machine"))),
            "started": None, "wall_minutes": None,
            "budget_text": (f"{minutes:g} training minutes per run (wall clock, the last epoch cut when they run "
                            f"out), every recipe alike; {len(trained)} trained run(s) = "
                            f"{len(trained) * minutes / 60:.1f} h of training.")}
    folds = {(f["name"], tuple(f.get("valid") or ())): f for f in report["folds"]}
    recipes: dict = {}
    choices: dict = {}
    templates = {"a": str(SEED_CONFIG), "b": str(CT_CONFIG), ENSEMBLE_RECIPE: str(CT_CONFIG)}
    for s in sorted(runs, key=lambda r: natural_key(r["run"])):
        fold = s["fold"]
        valid = s.get("valid") if isinstance(s.get("valid"), list) else []
        folds.setdefault((fold, tuple(valid)), {
            "name": fold, "train": s.get("train_cases") or [], "test": s.get("test_cases") or [], "valid": valid,
            "note": fold_note(bool(s.get("tumour_scored")))})
        mine = report["recipes"].get(s["recipe"], {})
        r = recipes.setdefault(s["recipe"], {"title": mine.get("title") or s.get("recipe_title", ""),
                                             "template_source": mine.get("template_source")
                                             or templates.get(s["recipe"], "–"), "seeds": []})
        if s["seed"] not in r["seeds"]:
            r["seeds"].append(s["seed"])
        if s["recipe"] == "b" and s.get("variant") and s.get("test") and fold not in choices:
            choices[fold] = (report.get("choices") or {}).get(fold) or {"variant": s["variant"], "scores": {}}
    for fold, c in (report.get("choices") or {}).items():
        choices.setdefault(fold, c)
    return {**report, "meta": meta, "runs": runs, "recipes": recipes, "choices": choices,
            "folds": sorted(folds.values(), key=lambda f: (natural_key(f["name"]), f.get("valid") or []))}


def _parse_sets(items) -> dict:
    """``[RECIPE:]section.key=value`` strings -> {scope: {"section.key": value}} (scope "*" = every recipe).

    The value is read as ``flexunet --set`` reads it (:func:`flexunet.config.loader.apply_override`)."""
    out: dict = {}
    for it in items or []:
        scope, kv = (it[0], it[2:]) if re.match(r"^[ab*]:", it) else ("*", it)
        k, eq, _ = kv.partition("=")
        if "." not in k or not eq:
            raise SystemExit(f"quality.py: --set {it!r}: expected [RECIPE:]section.key=value")
        raw: dict = {}
        try:
            apply_override(raw, kv, source="--set")
        except ConfigError as exc:
            raise SystemExit(f"quality.py: {exc}") from None
        for section, values in raw.items():
            for key, value in values.items():
                out.setdefault(scope, {})[f"{section}.{key}"] = value
    return out


def selection_score(summary: dict) -> float | None:
    """The selection step's figure of a run: liver Dice + tumour Dice of its chosen postprocessing on the
    validation blocks of its training patients (``None`` when it was not scored)."""
    row = chosen_candidate(summary.get("selection") or {})
    return None if not row or row.get("score") is None else float(row["score"])


def choose_variants(report_dir: Path, folds: list, minutes: float, seed: int = None) -> dict:
    """Per fold, the recipe (b) variant whose selection figure is the highest among the runs of budget
    ``minutes`` and seed ``seed`` in ``report_dir/runs`` (the baseline, ``b-...``, and every ``b.<variant>-...``).

    Only the fold's own runs count: their selection figures come from its training patients, so the choice
    never sees its test patient.  Runs validated on a case held out whole (``--valid-case``) are left out:
    their figures are on another validation set.  Returns ``{fold: {"variant", "sets" ({scope: {key: value}}), "scores"}}``;
    a fold without any such run keeps the baseline."""
    seed = BASE_SEED if seed is None else seed
    out = {}
    for fold in folds:
        scores = {}
        sets: dict = {}
        for f in sorted((report_dir / "runs").glob(f"b*-{fold.name}-seed{seed}-{minutes:g}min.json")):
            s = _read_json(f) or {}
            if s.get("recipe") != "b" or s.get("fold") != fold.name or s.get("budget_minutes") != minutes:
                continue
            if isinstance(s.get("valid"), list) and s["valid"]:
                continue  # validated on a case held out whole (--valid-case): another figure, not comparable
            score = selection_score(s)
            if score is None:
                continue
            variant = s.get("variant") or ""
            scores[variant] = round(score, 4)
            raw: dict = {}
            for k, v in (s.get("variant_sets") or {}).items():
                apply_override(raw, f"{k}={v}", source=str(f))
            sets[variant] = {"b": {f"{sec}.{key}": val for sec, vals in raw.items() for key, val in vals.items()}}
        best = max(scores, key=lambda v: (scores[v], v == "")) if scores else ""
        out[fold.name] = {"variant": best, "sets": sets.get(best, {}), "scores": scores}
    return out


def smoke_data(root: Path) -> dict:
    """Four tiny phantom cases standing in for the real ones: three 'patients' (the second with its tumour
    relabelled liver, as patient 7 has no liver tumour) and one always in training (as LiTS 117)."""
    import numpy as np

    from flexunet.io.volumes import read_volume, write_nifti

    ids = qd.make_phantoms(root / "smoke_phantoms", 4, seed=5, shape=(32, 32, 12), spacing=(8.0, 8.0, 10.0))
    cases = root / "smoke_cases"
    for i, cid in enumerate(ids):
        src = root / "smoke_phantoms" / cid
        if i != 1:
            if not (cases / cid).exists():
                qd.link_case(src, cases / cid)
            continue
        dst = cases / cid
        if not (dst / "label.nii.gz").exists():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / "image.nii.gz", dst / "image.nii.gz")
            lab = read_volume(src / "label.nii.gz", label=True)
            arr = np.asarray(lab.array).astype(np.uint8)
            arr[arr == 2] = 1
            write_nifti(arr, dst / "label.nii.gz", affine=lab.affine, dtype=np.uint8)
    facts = {cid: {"voxels_tumour_label2": 0 if i == 1 else 1} for i, cid in enumerate(ids)}
    return {"cases_dir": str(cases), "ids": ids, "patients": ids[:3], "always": ids[3:], "facts": facts,
            "notes": [f"smoke mode: tiny phantom cases {', '.join(ids)} ({ids[1]} without tumour label)"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help=f"training minutes of every run (wall clock; default {DEFAULT_BUDGET_MINUTES:g}, "
                         f"--smoke {SMOKE_BUDGET_MINUTES:g})")
    ap.add_argument("--folds", default="all", help="all, or test patients as a comma list (1,7,17)")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds of recipe (b) (default 3)")
    ap.add_argument("--seeds-a", type=int, default=1, help="training seeds of recipe (a) (default 1)")
    ap.add_argument("--recipes", default="a,b", help="comma list of a, b (default a,b)")
    ap.add_argument("--selection-only", action="store_true",
                    help="train and select, never open a test patient: for comparing recipe settings (--set)")
    ap.add_argument("--grid", default=None, choices=["full", "small"],
                    help="postprocessing candidates of the selection step (default full; --smoke small)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="raw outputs (default bench/results/quality)")
    ap.add_argument("--report-dir", default=None,
                    help="where the per-run summaries and tables go (default bench/reports/quality; --smoke: "
                         "OUT/reports; '' for none)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="data cache (default bench/results/cache)")
    ap.add_argument("--data-root", default=str(qd.SHARED_DATA), help="folder holding 3Dircadb1/ (../shared/data)")
    ap.add_argument("--set", action="append", metavar="[RECIPE:]SECTION.KEY=VALUE",
                    help="override a config value for every recipe or one (a:, b:), repeatable")
    ap.add_argument("--variant", default="",
                    help="a name for this invocation's --set values, put into its run names (b.NAME-...): "
                         "required with --set, so that each setting keeps its own summaries")
    ap.add_argument("--valid-case", default=None, metavar="CASE",
                    help="validate on this training case held out whole (e.g. lits_117) instead of slice blocks "
                         "of every training patient: a validation no plane's slices can leak into (for "
                         "comparing [slice] planes); needs --variant")
    ap.add_argument("--choose-from", type=float, default=None, metavar="MINUTES",
                    help="run recipe (b) of each fold as the variant with the best selection figure among that "
                         "fold's --selection-only runs (and the baseline) of this budget in --report-dir")
    ap.add_argument("--ensemble", action="store_true",
                    help="then also run each fold's recipe (b) seeds as one model, their softmax averaged: "
                         "selection and test, no training")
    ap.add_argument("--keep-checkpoints", action="store_true",
                    help="keep each run's models/last.ckpt (deleted after training by default: 1.5 GB for (a))")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny phantom patients, a 32-pixel model, seconds of training, in-process: checks the "
                         "protocol end to end (the tests run it)")
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.recipes.split(",") if k.strip()]
    bad = [k for k in keys if k not in ("a", "b")]
    if bad or not keys:
        raise SystemExit(f"quality.py: --recipes {args.recipes!r}: unknown {bad}; expected a, b")
    if args.seeds < 1 or args.seeds_a < 1:
        raise SystemExit("quality.py: --seeds and --seeds-a: expected at least 1")
    meta = _common.print_header("FlexUNet real-CT quality benchmark",
                                argv=[sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    out = Path(args.out)
    sets = _parse_sets(args.set)
    if sets and not args.smoke and not re.fullmatch(r"[A-Za-z0-9_]+", args.variant or ""):
        raise SystemExit(f"quality.py: --variant {args.variant!r}: runs with --set need a variant name "
                         "(letters, digits, _) for their run names")
    _set_stage("prepare")  # data preparation: import, LiTS 117's fix, the original's min-max; no choice is made
    if args.smoke:
        budget = args.budget_minutes if args.budget_minutes is not None else SMOKE_BUDGET_MINUTES
        data = smoke_data(out)
        folds, notes = lopo_folds(set(data["ids"]), data["patients"], data["always"],
                                  tumour_free=[c for c, f in data["facts"].items() if not f["voxels_tumour_label2"]])
        want = _fold_names(args.folds)
        if want is not None:
            folds = [f for f in folds if f.name in want]
        sets.setdefault("*", {}).update({k: v for k, v in SMOKE_SETS.items() if k not in sets.get("*", {})})
        grid = postprocess_grid(args.grid or "small")
        report_dir = Path(args.report_dir) if args.report_dir else (None if args.report_dir == "" else out / "reports")
    else:
        budget = args.budget_minutes if args.budget_minutes is not None else DEFAULT_BUDGET_MINUTES
        data = qd.prepare_real(Path(args.cache), Path(args.data_root))
        folds, notes = real_folds(set(data["cases"]), args.folds, data["cases"])
        grid = postprocess_grid(args.grid or "full")
        report_dir = (DEFAULT_REPORT_DIR if args.report_dir is None else (Path(args.report_dir) if args.report_dir
                                                                          else None))
    if args.valid_case:
        if not args.variant:
            raise SystemExit("quality.py: --valid-case trains other models than the default validation: name them "
                             "with --variant")
        folds, vnotes = with_valid_case(folds, args.valid_case)
        notes = notes + vnotes
    data["notes"] = list(data.get("notes", [])) + notes
    for n in data["notes"]:
        qd.log(n)
    if not folds:
        _set_stage(None)
        print("quality.py: no fold can run (see the notes above); nothing to do")
        return 0
    cases = Path(data["cases_dir"])
    ct_text, ct_src = _template(CT_CONFIG)
    seed_text, seed_src = _template(SEED_CONFIG, ORIGINAL_CONFIG_TEXT)
    recipes = build_recipes(keys, ct_text, ct_src, seed_text, seed_src)
    cases_minmax = None
    if "a" in recipes:
        ids = sorted({c for f in folds for c in f.train + f.test})
        qd.log("min-max preprocessing for recipe (a): " + ", ".join(ids))
        cache = (out / "smoke_cache") if args.smoke else Path(args.cache)
        data["minmax_hu_ranges"] = qd.make_minmax(cases, cache / "cases_minmax", ids)
        cases_minmax = cache / "cases_minmax"
    seeds = {"a": [BASE_SEED + i for i in range(args.seeds_a)], "b": [BASE_SEED + i for i in range(args.seeds)]}
    data = {k: v for k, v in data.items() if k not in ("ids", "patients", "always", "facts")}
    _set_stage(None)
    choices = None
    if args.choose_from is not None and "b" in recipes:
        if report_dir is None:
            raise SystemExit("quality.py: --choose-from reads the selection summaries in --report-dir; none given")
        choices = choose_variants(report_dir, folds, args.choose_from)
        for f, c in choices.items():
            qd.log(f"{f}: recipe (b) as {('b.' + c['variant']) if c['variant'] else 'the baseline'}, chosen by "
                   f"the fold's own selection figures at {args.choose_from:g} min: {c['scores'] or 'none found'}")
    run_benchmark(recipes=recipes, folds=folds, seeds=seeds, cases=cases, cases_minmax=cases_minmax, out=out,
                  report_dir=report_dir, budget_minutes=budget, meta=meta, data=data, sets=sets, grid=grid,
                  selection_only=args.selection_only, inprocess=args.smoke, keep_checkpoints=args.keep_checkpoints,
                  variant=args.variant, choices=choices, ensemble=args.ensemble)
    return 0


if __name__ == "__main__":
    sys.exit(main())
