#!/usr/bin/env python
"""Real-CT quality benchmark: the original's recipe vs FlexUNet's recommended CT defaults, same data, same budget.

    python bench/quality.py [--budget-minutes 60] [--folds all|tumour|liver] [--recipes a,b,c]
                            [--out bench/results/quality]        (or: make bench-quality)

Data (prepared once, cached under ``bench/results/cache/``, git-ignored): 3D-IRCADb-01 patients 1 and 17
from ``../shared/data/3Dircadb1`` and LiTS volume 117 from the PyPI wheel
``liver-ct-segmentation-package==1.6.0`` (``pip download --no-deps``; that case is skipped with a
message when the download fails), plus ``flexunet phantom`` cases for recipe (c).  LiTS 117 is a 128^3
crop around the liver whose array axes are not RAS: it is re-oriented and padded (``_quality_data.py``
says how and why).  Without ``../shared/data`` the real folds are skipped with a message.

Folds (patient-wise; the split is printed in the report):

* ``tumour`` (T): test ircadb_17 (the only real case with separate tumour labels besides LiTS 117);
  train ircadb_1 + lits_117.  Patient 1's label includes its tumours as liver, so in this fold it
  teaches "tumour tissue = liver" (``--p1-in-tumour-fold exclude`` leaves it out instead).
* ``liver`` (L): test ircadb_1, liver metrics only (its tumours are inside its liver label); train
  ircadb_17 + lits_117.

Validation: no real patient can be spared, so each run validates on a held-out slice subset of its own
training patients (axial blocks of ``VALID_BLOCK`` slices, one block in ``VALID_PERIOD``), moved from
``train/`` to ``valid/`` after slicing.  Those slices neighbour training slices: ``val_loss`` is
optimistic and only selects the checkpoint (``best.pt``) and drives the LR reducer / early stopping.

Recipes (each run through the CLI in its own subprocess: slice, train, evaluate, infer-volume,
evaluate-volume; peak RSS per stage is reported):

* (a) the original's recipe: its config (``../shared/seed/train_eval_infer.config``: 512^2, 8 layers,
  9x9 kernels, CE, Adam lr 5e-5, clip 0.4, batch 2, no augmentation, no BatchNorm) and its
  preprocessing: no HU window; each volume's own HU min..max mapped to 0..255, the grey slice
  replicated to 3 channels (no 2.5D); no postprocessing.  Also its metric: ``dice_coef_multiclass``
  on the held-out patient's slices (``flexunet evaluate``).
* (b) FlexUNet's recommended CT config (``projects/liver-tumor-ct/train_eval_infer.config``): HU window,
  2.5D, Dice+CE, BatchNorm, augmentation; ``infer-volume`` postprocessing (largest liver component,
  tumour inside the liver, holes filled).
* (c) phantom-only: the recommended config trained on ``--phantoms`` phantom cases only (one phantom
  validates), evaluated on the liver of patients 1 and 17.

Budget: ``--budget-minutes`` is the *training* time of one recipe, split equally across the folds it runs
(``[train] max_time_minutes``; Lightning stops after the batch that crosses it, validation included).
Recipe (c) trains once, for ``--phantom-minutes`` (default: one fold's share).  Slicing, inference and
metrics come on top and are reported per stage.

Output: ``<out>/quality.md`` (the tables, also printed) and ``<out>/quality.json``; each run's folder
``<out>/runs/<recipe>_<fold>/`` keeps its config, logs, ``history.json``, predictions and metrics.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import re
import shlex
import shutil
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
VALID_BLOCK = 6    # validation: axial blocks of 6 slices ...
VALID_PERIOD = 6   # ... one block in 6 (about 1/6 of each training patient's slices)
TARGETS = {"liver": 0.93, "tumour": 0.60, "delta_liver": 0.05, "delta_tumour": 0.15}

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


# --------------------------------------------------------------------------- recipes and folds


@dataclasses.dataclass
class Recipe:
    key: str
    title: str
    template: str            # config text
    template_source: str
    preprocessing: str       # "minmax" (the original's) or "window" (the config's HU window)
    postprocess: bool
    evaluate2d: bool
    sets: dict               # "section.key" -> value (Python object), applied on top of the template


@dataclasses.dataclass
class Fold:
    name: str                # "T", "L", "P", ...
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
    common = {"train.epoch_change_infer": False}
    out = {}
    if "a" in keys:
        out["a"] = Recipe("a", "original recipe (its config, min-max preprocessing, no 2.5D)", seed_text,
                          seed_source, "minmax", postprocess=False, evaluate2d=True,
                          sets={**common, "slice.hu_window": (0, 255), "slice.context_slices": False,
                                **{f"slice.{k}": v for k, v in same_slices.items()}})
    if "b" in keys:
        out["b"] = Recipe("b", "FlexUNet recommended CT defaults", ct_text, ct_source, "window",
                          postprocess=True, evaluate2d=True, sets=dict(common))
    if "c" in keys:
        out["c"] = Recipe("c", "phantom-only model (recommended CT config)", ct_text, ct_source, "window",
                          postprocess=True, evaluate2d=False, sets=dict(common))
    return out


def real_folds(have: set[str], which: str, p1_in_tumour_fold: str = "liver") -> tuple[list[Fold], list[str]]:
    notes = []
    folds = []
    lits = ["lits_117"] if "lits_117" in have else []
    if not lits:
        notes.append("lits_117 unavailable: folds train on IRCADb only (no tumour labels in fold T!)")
    if which in ("all", "tumour") and "ircadb_17" in have:
        train = (["ircadb_1"] if "ircadb_1" in have and p1_in_tumour_fold == "liver" else []) + lits
        note = ("ircadb_1 trains with its liver-only label (its tumours count as liver: a bias against tumour "
                "recall)" if "ircadb_1" in train else "ircadb_1 left out of this fold")
        if train:
            folds.append(Fold("T", "tumour fold: hold out patient 17", train, ["ircadb_17"],
                              tumour_cases=["ircadb_17"], note=note))
    if which in ("all", "liver") and "ircadb_1" in have:
        train = (["ircadb_17"] if "ircadb_17" in have else []) + lits
        if train:
            folds.append(Fold("L", "liver fold: hold out patient 1 (liver only)", train, ["ircadb_1"],
                              note="patient 1's label holds liver and tumour as one class: liver metrics only"))
    return folds, notes


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


def split_valid_blocks(dataset: Path, block: int = VALID_BLOCK, period: int = VALID_PERIOD) -> dict:
    """Move slices in axial blocks (``k // block % period == period // 2``) from train/ to valid/."""
    moved, kept = 0, 0
    tr_i, tr_m = dataset / "train" / "images", dataset / "train" / "masks"
    va_i, va_m = dataset / "valid" / "images", dataset / "valid" / "masks"
    va_i.mkdir(parents=True, exist_ok=True)
    va_m.mkdir(parents=True, exist_ok=True)
    per_case: dict[str, list[Path]] = {}
    for f in sorted(tr_i.glob("*.png")):
        m = re.match(r"^(.*)_(\d{4})\.png$", f.name)
        if m:
            per_case.setdefault(m.group(1), []).append(f)
    for case, files in per_case.items():
        chosen = [f for f in files if int(f.stem.rsplit("_", 1)[1]) // block % period == period // 2]
        if not chosen or len(chosen) == len(files):  # a case too short for blocks: every period-th slice
            chosen = files[period // 2::period]
        for f in chosen:
            f.rename(va_i / f.name)
            (tr_m / f.name).rename(va_m / f.name)
        moved += len(chosen)
        kept += len(files) - len(chosen)
    return {"train_slices": kept, "valid_slices": moved}


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


# --------------------------------------------------------------------------- one run


def run_one(recipe: Recipe, fold: Fold, minutes: float, ctx: dict) -> dict:
    """slice -> (valid blocks) -> train -> [evaluate] -> infer-volume -> evaluate-volume for one recipe x fold."""
    run_dir = Path(ctx["out"]) / "runs" / f"{recipe.key}_{fold.name}"
    cases_src = Path(ctx["cases_minmax"] if recipe.preprocessing == "minmax" else ctx["cases"])
    real_src = Path(ctx["cases"])  # ground truth (and phantoms) always from the HU cases
    sets = dict(recipe.sets)
    sets.update({
        "train.model_dir": "./models/", "train.eval_dir": "./eval/",
        "train.images_dir": "./dataset/train/images/", "train.masks_dir": "./dataset/train/masks/",
        "train.max_time_minutes": round(float(minutes), 4),
        "valid.images_dir": "./dataset/valid/images/", "valid.masks_dir": "./dataset/valid/masks/",
        "test.images_dir": "./dataset/test/images/", "test.masks_dir": "./dataset/test/masks/",
        "infer.images_dir": "./dataset/test/images/", "infer.output_dir": "./mini_test_output/",
        "slice.cases_dir": "./cases", "slice.output_dir": "./dataset",
        "slice.train_cases": list(fold.train), "slice.valid_cases": list(fold.valid),
        "slice.test_cases": list(fold.test) if recipe.evaluate2d else [],
    })
    for k, v in ctx.get("sets", {}).get("*", {}).items():
        sets[k] = v
    for k, v in ctx.get("sets", {}).get(recipe.key, {}).items():
        sets[k] = v
    cfg_text = edit_config(recipe.template, sets)
    result_path = run_dir / "result.json"
    if ctx.get("reuse") and result_path.exists():
        try:
            old = json.loads(result_path.read_text())
            if old.get("config_text") == cfg_text and old.get("ok"):
                qd.log(f"{recipe.key}_{fold.name}: reusing {result_path}")
                return old
        except ValueError:
            pass
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "logs").mkdir(parents=True)
    cfg_path = run_dir / "train_eval_infer.config"
    cfg_path.write_text(cfg_text)
    for cid in dict.fromkeys(fold.train + fold.valid + (fold.test if recipe.evaluate2d else [])):
        qd.link_case(cases_src / cid if (cases_src / cid).exists() else real_src / cid, run_dir / "cases" / cid)
    res: dict = {"recipe": recipe.key, "fold": fold.name, "fold_title": fold.title, "train_cases": fold.train,
                 "valid_cases": fold.valid or "held-out slice blocks of the training patients",
                 "test_cases": fold.test, "fold_note": fold.note, "budget_minutes": minutes,
                 "config": str(cfg_path), "config_text": cfg_text, "stages": {}, "ok": False}
    inproc = ctx.get("inprocess", False)
    st = res["stages"]
    cfg = str(cfg_path)
    qd.log(f"{recipe.key}_{fold.name}: slice ({', '.join(fold.train)} | test {', '.join(fold.test)})")
    st["slice"] = run_cli(["slice", cfg], run_dir / "logs" / "slice.log", inprocess=inproc)
    ds = run_dir / "dataset"
    if not fold.valid:
        res["valid_split"] = split_valid_blocks(ds)
    res["slices"] = {s: _count_pngs(ds / s / "images") for s in ("train", "valid", "test")}
    qd.log(f"{recipe.key}_{fold.name}: train {minutes:.2f} min on {res['slices']['train']} slices "
           f"(valid {res['slices']['valid']})")
    st["train"] = run_cli(["train", cfg], run_dir / "logs" / "train.log", inprocess=inproc)
    res["train"] = _parse_train(st["train"]["stdout"])
    last = run_dir / "models" / "last.ckpt"
    if last.exists() and not ctx.get("keep_checkpoints"):
        res["train"]["last_ckpt_mb"] = round(last.stat().st_size / 2 ** 20)
        last.unlink()  # resumable checkpoint: 1.5 GB for recipe (a); best.pt is what the next stages use
    hist = run_dir / "history.json"
    if hist.exists():
        h = json.loads(hist.read_text())
        res["train"]["history_epochs"] = len(next(iter(h.values()), [])) if isinstance(h, dict) and h else 0
        res["train"]["val_loss"] = h.get("val_loss") if isinstance(h, dict) else None
    if recipe.evaluate2d and res["slices"]["test"]:
        qd.log(f"{recipe.key}_{fold.name}: evaluate (2D, held-out slices)")
        st["evaluate"] = run_cli(["evaluate", cfg, "--output", str(run_dir / "eval2d")],
                                 run_dir / "logs" / "evaluate.log", inprocess=inproc)
        ev = json.loads((run_dir / "eval2d" / "evaluation.json").read_text())["metrics"]
        res["eval2d"] = {k: ev.get(k) for k in ("dice_coef_multiclass", "liver_dice_pooled", "tumour_dice_pooled",
                                                "liver_dice_mean", "tumour_dice_mean", "images")}
    inputs = [str(((cases_src / c) if (cases_src / c).exists() else (real_src / c)) / "image.nii.gz")
              for c in fold.test]
    qd.log(f"{recipe.key}_{fold.name}: infer-volume {', '.join(fold.test)}")
    argv = ["infer-volume", cfg, *inputs, "--output", str(run_dir / "pred")]
    if not recipe.postprocess:
        argv.append("--no-postprocess")
    st["infer_volume"] = run_cli(argv, run_dir / "logs" / "infer_volume.log", inprocess=inproc)
    res["infer"] = _parse_infer(st["infer_volume"]["stdout"])
    gt = run_dir / "gt"
    for c in fold.test:
        (gt / c).mkdir(parents=True, exist_ok=True)
        shutil.copyfile((real_src / c / "label.nii.gz").resolve(), gt / c / "label.nii.gz")
    qd.log(f"{recipe.key}_{fold.name}: evaluate-volume")
    st["evaluate_volume"] = run_cli(["evaluate-volume", str(run_dir / "pred"), str(gt), "--output",
                                     str(run_dir / "metrics")], run_dir / "logs" / "evaluate_volume.log",
                                    inprocess=inproc)
    vm = json.loads((run_dir / "metrics" / "volume_metrics.json").read_text())
    res["cases"] = {}
    for c in vm["cases"]:
        has_tumour = c["case_id"] in fold.tumour_cases
        entry = {"liver": c["classes"]["liver"], "tumour": c["classes"]["tumour"] if has_tumour else None,
                 "volumetry": c["volumetry"], "tumour_scored": has_tumour,
                 "pred_tumour_ml": c["classes"]["tumour"]["pred_ml"]}
        res["cases"][c["case_id"]] = entry
    for s in st.values():
        s.pop("stdout", None)
    res["ok"] = True
    _common.save_results("run", res, result_path)
    return res


# --------------------------------------------------------------------------- report


def _f(v, nd=3, signed=False):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:+.{nd}f}" if signed else f"{v:.{nd}f}"


def render(report: dict) -> str:
    L_ = []
    meta = report["meta"]
    L_.append("# FlexUNet real-CT quality benchmark")
    L_.append("")
    L_.append(f"command: `{meta['command']}`")
    L_.append(f"machine: {_common.machine_line(meta['machine'])}; load average at end "
              f"{meta.get('load_average_end')}")
    L_.append(f"started {meta['started']}, wall time {meta.get('wall_minutes', 0):.1f} min")
    L_.append("")
    L_.append(f"Budget: {meta['budget_text']}")
    L_.append("")
    L_.append("## Data and split")
    L_.append("")
    for n in report["data"].get("notes", []):
        L_.append(f"- {n}")
    fix = report["data"].get("lits117_fix") or {}
    if fix:
        L_.append(f"- LiTS 117 (a 128^3 crop around the liver, no voxel size in its header): as imported, "
                  f"{fix.get('axes_as_imported')}; fixed by {fix.get('transform')}; {fix.get('spacing_mm_assumed')} "
                  f"mm isotropic assumed; padded with {fix.get('pad_value_hu')} HU onto a "
                  f"{'x'.join(map(str, fix.get('canvas', [])))} canvas "
                  f"(crop at i, j = {fix.get('crop_origin_on_canvas')}) "
                  "so the liver has about IRCADb's size and place in the slices")
    mm = report["data"].get("minmax_hu_ranges") or {}
    if mm:
        L_.append("- recipe (a) min-max ranges (HU -> 0..255): " + ", ".join(
            f"{c} {lo:.0f}..{hi:.0f}" for c, (lo, hi) in mm.items()))
    facts = report["data"].get("cases", {})
    if facts:
        L_.append("")
        L_.append(_common.md_table(
            ["case", "shape", "spacing mm", "label 1 voxels", "label 2 voxels", "liver slices", "HU range"],
            [[c, "x".join(map(str, f["shape"])), "x".join(f"{s:g}" for s in f["spacing_mm"]),
              f"{f['voxels_liver_label1']:,}", f"{f['voxels_tumour_label2']:,}",
              f"{f['liver_slices']}/{f['slices']}", f"{f['hu_min']:.0f}..{f['hu_max']:.0f}"]
             for c, f in facts.items()]))
    L_.append("")
    for fold in report["folds"]:
        L_.append(f"- fold {fold['name']} ({fold['title']}): train {', '.join(fold['train'])}; "
                  f"valid {', '.join(fold['valid']) or 'held-out slice blocks of the training patients'}; "
                  f"test {', '.join(fold['test'])}. {fold['note']}")
    L_.append("")
    for k, r in report["recipes"].items():
        L_.append(f"- ({k}) {r['title']}: template {r['template_source']}; preprocessing {r['preprocessing']}; "
                  f"postprocessing {'on' if r['postprocess'] else 'off'}")
    runs = [r for r in report["runs"] if r.get("ok")]
    L_.append("")
    L_.append("## Held-out per-case metrics (volumes, mm)")
    L_.append("")
    rows = []
    for r in runs:
        for cid, c in r["cases"].items():
            lv, tu, vol = c["liver"], c["tumour"], c["volumetry"]
            rows.append([f"({r['recipe']})", r["fold"], cid, _f(lv["dice"]), _f(tu["dice"]) if tu else "n/a",
                         _f(lv["iou"]), _f(lv["voe"]), _f(lv["rvd"], signed=True), _f(lv["assd_mm"], 2),
                         _f(lv["hd95_mm"], 1), f"{_f(vol['pred']['liver_ml'], 0)}/{_f(vol['gt']['liver_ml'], 0)}",
                         (f"{_f(vol['pred']['tumour_ml'], 1)}/{_f(vol['gt']['tumour_ml'], 1)}" if tu
                          else f"{_f(c['pred_tumour_ml'], 1)}/n/a"),
                         r["train"].get("epochs", "?"), _f(r["train"].get("train_seconds"), 0)])
    L_.append(_common.md_table(["recipe", "fold", "held-out case", "liver Dice", "tumour Dice", "liver IoU",
                                "liver VOE", "liver RVD", "liver ASSD", "liver HD95", "liver mL pred/gt",
                                "tumour mL pred/gt", "epochs", "train s"], rows))
    trows = []
    for r in runs:
        for cid, c in r["cases"].items():
            tu = c["tumour"]
            if not tu:
                continue
            trows.append([f"({r['recipe']})", r["fold"], cid, _f(tu["dice"]), _f(tu["iou"]), _f(tu["voe"]),
                          _f(tu["rvd"], signed=True), _f(tu["assd_mm"], 2), _f(tu["hd95_mm"], 1),
                          f"{tu['pred_components']}/{tu['gt_components']}", tu["status"]])
    if trows:
        L_.append("")
        L_.append("Tumour (label 2) on the cases that have separate tumour labels:")
        L_.append("")
        L_.append(_common.md_table(["recipe", "fold", "case", "Dice", "IoU", "VOE", "RVD", "ASSD mm", "HD95 mm",
                                    "tumours pred/gt", "status"], trows))
    erows = [[f"({r['recipe']})", r["fold"], ", ".join(r["test_cases"]), _f(r["eval2d"]["dice_coef_multiclass"], 4),
              _f(r["eval2d"]["liver_dice_pooled"]), _f(r["eval2d"]["tumour_dice_pooled"]), r["eval2d"]["images"]]
             for r in runs if r.get("eval2d")]
    if erows:
        L_.append("")
        L_.append("The original's metric on the held-out patient's slices (`flexunet evaluate`; "
                  "`dice_coef_multiclass` includes the background, so it reads like pixel accuracy; "
                  "2D hard Dice pooled over the slices beside it; no postprocessing):")
        L_.append("")
        L_.append(_common.md_table(["recipe", "fold", "slices of", "dice_coef_multiclass", "liver Dice 2D",
                                    "tumour Dice 2D", "slices"], erows))
    # deltas and targets
    by = {(r["recipe"], r["fold"]): r for r in runs}
    drows = []
    for (rk, fk), rb in sorted(by.items()):
        if rk != "b" or ("a", fk) not in by:
            continue
        ra = by[("a", fk)]
        for cid in rb["cases"]:
            cb, ca = rb["cases"][cid], ra["cases"].get(cid)
            if not ca:
                continue
            dl = cb["liver"]["dice"] - ca["liver"]["dice"]
            dt = (cb["tumour"]["dice"] - ca["tumour"]["dice"]) if cb["tumour"] and ca["tumour"] else None
            drows.append([fk, cid, _f(dl, signed=True),
                          "yes" if dl >= TARGETS["delta_liver"] else "no",
                          _f(dt, signed=True) if dt is not None else "n/a",
                          ("yes" if dt >= TARGETS["delta_tumour"] else "no") if dt is not None else "n/a"])
    if drows:
        L_.append("")
        L_.append(f"Deltas (b) - (a), same data and budget (targets: liver >= +{TARGETS['delta_liver']}, "
                  f"tumour >= +{TARGETS['delta_tumour']}):")
        L_.append("")
        L_.append(_common.md_table(["fold", "case", "liver Dice (b)-(a)", "met", "tumour Dice (b)-(a)", "met"],
                                   drows))
    grows = []
    for r in runs:
        if r["recipe"] != "b":
            continue
        for cid, c in r["cases"].items():
            grows.append([r["fold"], cid, _f(c["liver"]["dice"]),
                          "yes" if c["liver"]["dice"] >= TARGETS["liver"] else "no",
                          _f(c["tumour"]["dice"]) if c["tumour"] else "n/a",
                          ("yes" if c["tumour"]["dice"] >= TARGETS["tumour"] else "no") if c["tumour"] else "n/a"])
    if grows:
        L_.append("")
        L_.append(f"Targets for (b): held-out liver Dice >= {TARGETS['liver']}, tumour Dice >= {TARGETS['tumour']}:")
        L_.append("")
        L_.append(_common.md_table(["fold", "case", "liver Dice", "met", "tumour Dice", "met"], grows))
    # stage timings
    srows = []
    for r in runs:
        st = r["stages"]
        inf = r.get("infer", {})
        pred = "; ".join(f"{c} {v['slices']} sl. {v['predict_s']:.0f} s" for c, v in inf.items())

        def cell(name):
            s = st.get(name)
            if not s:
                return "–"
            return f"{s['seconds']:.0f} s" + (f" / {s['peak_rss_mb'] / 1024:.1f} GB" if s.get("peak_rss_mb") else "")

        tr = r["train"]
        sl = r["slices"]
        ips = (tr.get("epochs", 0) * sl["train"] / tr["train_seconds"]) if tr.get("train_seconds") else None
        util = st.get("train", {}).get("cpu_util")
        srows.append([f"({r['recipe']})", r["fold"], f"{sl['train']}/{sl['valid']}/{sl['test']}", cell("slice"),
                      cell("train"), _f(util, 2), tr.get("precision", "?"), _f(ips, 2), cell("evaluate"),
                      cell("infer_volume"), pred or "–", cell("evaluate_volume")])
    if srows:
        L_.append("")
        L_.append("Stages (wall seconds / peak RSS of the stage's process). train CPU = CPU seconds of the training "
                  f"process and its loader workers per wall second (about {meta.get('machine', {}).get('cores', '?')} "
                  "when it had the machine to itself; lower means other work took the cores and the fixed "
                  "wall-clock budget bought less training). train img/s = completed epochs x train slices / "
                  "training seconds (validation included; a partial last epoch is not counted):")
        L_.append("")
        L_.append(_common.md_table(["recipe", "fold", "slices tr/va/te", "slice", "train", "train CPU",
                                    "precision", "train img/s", "evaluate 2D", "infer-volume", "predict",
                                    "evaluate-volume"], srows))
    failed = [r for r in report["runs"] if not r.get("ok")]
    if failed:
        L_.append("")
        L_.append("Failed runs:")
        for r in failed:
            L_.append(f"- ({r['recipe']}) fold {r['fold']}: {r.get('error')}")
    L_.append("")
    return "\n".join(L_)


# --------------------------------------------------------------------------- driver


def run_benchmark(*, recipes: dict[str, Recipe], folds: list[Fold], phantom_fold: Fold | None, cases: Path,
                  cases_minmax: Path | None, out: Path, budget_minutes: float, phantom_minutes: float,
                  meta: dict, data: dict, sets: dict | None = None, reuse: bool = False,
                  inprocess: bool = False, keep_checkpoints: bool = False) -> dict:
    """Run every recipe x fold, write ``out/quality.md`` and ``out/quality.json``; return the report dict."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ctx = {"out": str(out), "cases": str(cases), "cases_minmax": str(cases_minmax or cases), "sets": sets or {},
           "reuse": reuse, "inprocess": inprocess, "keep_checkpoints": keep_checkpoints}
    n_folds = max(len(folds), 1)
    fold_minutes = budget_minutes / n_folds
    plan: list[tuple[Recipe, Fold, float]] = []
    for fold in folds:
        for k in ("a", "b"):
            if k in recipes:
                plan.append((recipes[k], fold, fold_minutes))
    if "c" in recipes and phantom_fold is not None:
        plan.append((recipes["c"], phantom_fold, phantom_minutes))
    meta = dict(meta)
    meta["budget_text"] = (f"{budget_minutes:g} min of training per recipe (a, b), split over {len(folds)} fold(s): "
                           f"{fold_minutes:.2f} min per model; recipe (c) {phantom_minutes:.2f} min "
                           "(one model). Slicing, inference and metrics are extra (see Stages).")
    report = {"meta": meta, "data": data,
              "folds": [dataclasses.asdict(f) for f in folds + ([phantom_fold] if phantom_fold and "c" in recipes
                                                                 else [])],
              "recipes": {k: {"title": r.title, "template_source": r.template_source,
                              "preprocessing": ("per-volume HU min-max -> 0..255, grey x3 (no 2.5D)"
                                                if r.preprocessing == "minmax" else "config HU window, 2.5D"),
                              "postprocess": r.postprocess, "sets": {kk: repr(v) for kk, v in r.sets.items()}}
                          for k, r in recipes.items()},
              "targets": TARGETS, "runs": []}
    md_path, json_path = out / "quality.md", out / "quality.json"
    for recipe, fold, minutes in plan:
        try:
            res = run_one(recipe, fold, minutes, ctx)
        except Exception as exc:  # keep going: one failed run must not lose the others
            qd.log(f"({recipe.key}) fold {fold.name} FAILED: {exc}")
            res = {"recipe": recipe.key, "fold": fold.name, "ok": False, "error": str(exc)}
        res = {k: v for k, v in res.items() if k != "config_text"}
        report["runs"].append(res)
        meta["wall_minutes"] = (time.perf_counter() - t0) / 60
        meta["load_average_end"] = _common.load_average()
        md_path.write_text(render(report))
        _common.save_results("quality", report, json_path)
    text = render(report)
    md_path.write_text(text)
    _common.save_results("quality", report, json_path)
    print(text)
    print(f"wrote {md_path} and {json_path}")
    return report


def _parse_sets(items) -> dict:
    """``[RECIPE:]section.key=value`` strings -> {scope: {"section.key": value}} (scope "*" = every recipe).

    The value is read as ``flexunet --set`` reads it (:func:`flexunet.config.loader.apply_override`)."""
    out: dict = {}
    for it in items or []:
        scope, kv = (it[0], it[2:]) if re.match(r"^[abc*]:", it) else ("*", it)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--budget-minutes", type=float, default=60.0,
                    help="training minutes per recipe (a, b), split equally over the folds (default 60)")
    ap.add_argument("--phantom-minutes", type=float, default=None,
                    help="training minutes of recipe (c) (default: one fold's share of --budget-minutes)")
    ap.add_argument("--folds", default="all", choices=["all", "tumour", "liver"])
    ap.add_argument("--recipes", default="a,b,c", help="comma list of a, b, c (default a,b,c)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default bench/results/quality)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="data cache (default bench/results/cache)")
    ap.add_argument("--data-root", default=str(qd.SHARED_DATA), help="folder holding 3Dircadb1/ (../shared/data)")
    ap.add_argument("--phantoms", type=int, default=8, help="phantom cases for recipe (c) (default 8)")
    ap.add_argument("--p1-in-tumour-fold", default="liver", choices=["liver", "exclude"],
                    help="fold T: train on patient 1 with its liver-only label (default) or leave it out")
    ap.add_argument("--set", action="append", metavar="[RECIPE:]SECTION.KEY=VALUE",
                    help="override a config value for every recipe or one (a:, b:, c:), repeatable")
    ap.add_argument("--train-phantoms", type=int, default=0,
                    help="add N phantom cases to the training set of every real fold, for (a) and (b) alike "
                         "(default 0)")
    ap.add_argument("--reuse", action="store_true", help="skip runs whose result.json has the same config")
    ap.add_argument("--keep-checkpoints", action="store_true",
                    help="keep each run's models/last.ckpt (deleted after training by default: 1.5 GB for (a))")
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.recipes.split(",") if k.strip()]
    bad = [k for k in keys if k not in ("a", "b", "c")]
    if bad:
        raise SystemExit(f"quality.py: --recipes {args.recipes!r}: unknown {bad}; expected a, b, c")
    meta = _common.print_header("FlexUNet real-CT quality benchmark", argv=[sys.argv[0], *(argv if argv is not None
                                                                                          else sys.argv[1:])])
    cache, out = Path(args.cache), Path(args.out)
    data = qd.prepare_real(cache, Path(args.data_root))
    have = set(data["cases"])
    folds, notes = real_folds(have, args.folds, args.p1_in_tumour_fold)
    data["notes"] += notes
    cases = Path(data["cases_dir"])
    extra: list[str] = []
    if args.train_phantoms > 0 and folds:
        ph = qd.make_phantoms(cache / "phantoms_train", args.train_phantoms, seed=1)
        for p in ph:  # seed 1: other phantoms than recipe (c)'s (seed 0)
            extra.append(p.replace("phantom_", "phantomtr_"))
            qd.link_case(cache / "phantoms_train" / p, cases / extra[-1])
        for f in folds:
            f.train += extra
        data["notes"].append(f"{len(extra)} phantom cases added to every real fold's training set (a and b)")
    for n in data["notes"]:
        qd.log(n)
    if not folds and "c" not in keys:
        print("quality.py: no real-CT fold can run (see the notes above); nothing to do")
        return 0
    ct_text, ct_src = _template(CT_CONFIG)
    seed_text, seed_src = _template(SEED_CONFIG, ORIGINAL_CONFIG_TEXT)
    recipes = build_recipes(keys, ct_text, ct_src, seed_text, seed_src)
    cases_minmax = None
    if "a" in recipes and folds:
        ids = sorted({c for f in folds for c in f.train + f.test})
        qd.log("min-max preprocessing for recipe (a): " + ", ".join(ids))
        ranges = qd.make_minmax(Path(data["cases_dir"]), cache / "cases_minmax", ids)
        data["minmax_hu_ranges"] = ranges
        cases_minmax = cache / "cases_minmax"
    phantom_fold = None
    if "c" in recipes:
        tests = [c for c in ("ircadb_1", "ircadb_17") if c in have]
        if not tests:
            data["notes"].append("recipe (c) skipped: no real patient to evaluate on")
        else:
            ph = qd.make_phantoms(cache / "phantoms", args.phantoms)
            for p in ph:
                qd.link_case(cache / "phantoms" / p, cases / p)
            phantom_fold = Fold("P", "phantom-only: train on phantoms, test on real patients", ph[:-1], tests,
                                valid=[ph[-1]], tumour_cases=[c for c in tests if c == "ircadb_17"],
                                note=f"{len(ph) - 1} phantom cases train, 1 validates; liver Dice on real CT")
    fold_share = args.budget_minutes / max(len(folds), 1)
    run_benchmark(recipes=recipes, folds=folds, phantom_fold=phantom_fold, cases=cases, cases_minmax=cases_minmax,
                  out=out, budget_minutes=args.budget_minutes,
                  phantom_minutes=args.phantom_minutes if args.phantom_minutes is not None else fold_share,
                  meta=meta, data=data, sets=_parse_sets(args.set), reuse=args.reuse,
                  keep_checkpoints=args.keep_checkpoints)
    return 0


if __name__ == "__main__":
    sys.exit(main())
