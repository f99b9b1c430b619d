#!/usr/bin/env python
"""The phantom demo under variants of its config: which recipe to ship as ``projects/phantom-demo``.

    python bench/demo_variants.py [--only shipped,seed7] [--minutes M] [--out bench/results/demo_variants]
                                  [--variant NAME=SECTION.KEY=VALUE;SECTION.KEY=VALUE ...] [--lesions] [--select]
                                  [--post NAME=BASE:infer.KEY=VALUE;infer.KEY=VALUE ...] [--post-infer-settings]
                                  [--finish NAME,NAME] [--report-dir bench/reports/demo_variants]

``demo.cases=N`` (8 <= N <= 20) in a variant's list generates N phantoms and trains on all but phantom_005-007.

Each variant runs the whole ``flexunet demo`` (10 phantoms, seed 0: train 7, valid phantom_005, test
phantom_006/007) in its own folder with ``--set`` overrides, in a subprocess, one after another.
Besides the demo's own test figures, the valid case phantom_005 is segmented as a volume by the same
model and scored the same way.  The test Dice of the chosen variant is what docs/results.md reports
(choosing on the two test cases would tune to them).

One valid phantom holds two lesions, one of them large, so it tells recipes apart weakly.  Each
variant's model is therefore also scored on a **selection set**: phantoms 020-029 of the same seed,
generated only for this (never trained on, never the demo's test cases); the recipe is chosen there:
mean and pooled tumour Dice over its cases with tumour, and false tumour on its tumour-free cases.  ``--select`` scores the runs already in
``<out>`` this way without training them again.

Output: ``<out>/demo_variants.md`` / ``.json`` (git-ignored, with each run's folder and ``logs/``), also
printed, and the same two files in ``--report-dir`` (default ``bench/reports/demo_variants/``, committed:
figures, each demo's step times and peak RSS, the commands).  With ``--only``, rows of other variants
already in ``<out>/demo_variants.json`` are kept, so one variant can be rerun.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402

_common.ensure_src_on_path()

from flexunet.io.atomic import atomic_save_text  # noqa: E402

DEFAULT_OUT = BENCH / "results" / "demo_variants"
DEFAULT_REPORT_DIR = BENCH / "reports" / "demo_variants"
# the subprocesses run this checkout's flexunet, whatever is installed
_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_common.REPO_ROOT / "src"),
                                                                  os.environ.get("PYTHONPATH")])))
# The demo config (projects/phantom-demo) as shipped, with three training seeds; the other rows run the
# same three trained models with other [infer] settings.  Those rows run best.pt alone, so they compare
# with one another and, through best1, with the shipped best.pt + last.ckpt average.
BEST_ONLY = ['infer.weights=["best.pt"]']
BEYOND1 = ["infer.tumour_grow_beyond=1"]
FILL_ON = ["infer.fill_holes=True"]
GROW_OFF = ["infer.tumour_grow=0"]
SEEDS = {"": [], "_seed7": ["train.seed=7"], "_seed123": ["train.seed=123"]}
INFER_SETTINGS: dict[str, list[str]] = {
    "best1": BEST_ONLY,                                  # best.pt alone, the demo's other [infer] settings
    "grow3": BEST_ONLY + ["infer.tumour_grow=3"],        # 3 growing steps instead of 2
    "beyond1": BEST_ONLY + BEYOND1,                      # growing at most 1 voxel past the organ's outline
    "fill": BEST_ONLY + BEYOND1 + FILL_ON,               # beyond1 with the organ's holes filled slice by slice
    "nogrow": BEST_ONLY + BEYOND1 + FILL_ON + GROW_OFF,  # fill without tumour growing
}


def infer_post_specs() -> list[str]:
    """``--post`` specs of every ``INFER_SETTINGS`` row on each seed's trained run (``best1=shipped:...``,
    ``best1_seed7=seed7:...``, ...): the rows rescored without training."""
    bases = {suffix: suffix.lstrip("_") or "shipped" for suffix in SEEDS}
    return [f"{name}{suffix}={bases[suffix]}:" + ";".join(sets)
            for name, sets in INFER_SETTINGS.items() for suffix in SEEDS]


VARIANTS: dict[str, list[str]] = {"shipped": [], "seed7": ["train.seed=7"], "seed123": ["train.seed=123"]}
VARIANTS.update({name + suffix: sets + seed for name, sets in INFER_SETTINGS.items() for suffix, seed in SEEDS.items()})


def _case_rows(metrics_json: Path) -> dict:
    res = json.loads(metrics_json.read_text())
    rows: dict = {}
    for r in res["cases"]:
        rows[r["case_id"]] = {cls: {k: c.get(k) for k in ("dice", "pred_ml", "gt_ml", "status")}
                              for cls, c in r["classes"].items()}
    return {"cases": rows, "aggregate": {k: v.get("dice_mean") for k, v in res["aggregate"].items()
                                         if isinstance(v, dict)}}


def _demo_sets(sets: list[str]) -> tuple[list[str], list[str]]:
    """Split the pseudo key ``demo.cases=N`` off ``sets``: it becomes ``demo --cases N`` and a train list
    of every generated phantom but the valid (005) and test (006, 007) ones, which stay the same volumes."""
    extra, rest = [], []
    for s in sets:
        if s.startswith("demo.cases="):
            n = int(s.partition("=")[2])
            if not 8 <= n <= int(SELECT[0][-3:]):
                raise SystemExit(f"{s}: expected 8 <= N <= {int(SELECT[0][-3:])} (phantoms from "
                                 f"{SELECT[0]} on are the selection set)")
            train = [f"phantom_{i:03d}" for i in range(n) if i not in (5, 6, 7)]
            extra = ["--cases", str(n)]
            rest.append("slice.train_cases=[" + ",".join(f'"{c}"' for c in train) + "]")
        else:
            rest.append(s)
    return extra, rest


SELECT = [f"phantom_{i:03d}" for i in range(20, 30)]


def _flexunet(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "flexunet", "--quiet", *argv], check=True, capture_output=True, env=_ENV)


def selection_set(out: Path) -> Path:
    """Phantoms 020-029 (seed 0) as case folders under ``<out>/selection`` (generated once)."""
    import shutil

    sel = out / "selection"
    if all((sel / c / "label.nii.gz").exists() for c in SELECT):
        return sel
    tmp = out / "selection_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _flexunet("phantom", str(tmp), "--cases", str(int(SELECT[-1][-3:]) + 1), "--seed", "0")
    shutil.rmtree(sel, ignore_errors=True)
    sel.mkdir(parents=True)
    for c in SELECT:
        (tmp / c).rename(sel / c)
    shutil.rmtree(tmp)
    return sel


def score_selection(d: Path, sets_args: list[str], sel: Path) -> dict:
    """The run's model on the selection set: per-case liver and tumour Dice, and summaries."""
    import shutil

    gt = d / "gt_select"
    shutil.rmtree(gt, ignore_errors=True)
    for c in SELECT:
        (gt / c).mkdir(parents=True)
        shutil.copy(sel / c / "label.nii.gz", gt / c / "label.nii.gz")
    _flexunet("infer-volume", str(d / "train_eval_infer.config"), *[str(sel / c / "image.nii.gz") for c in SELECT],
              "--output", str(d / "pred_select"), *sets_args)
    _flexunet("evaluate-volume", str(d / "pred_select"), str(gt), "--output", str(d / "eval_select"))
    rows = _case_rows(d / "eval_select" / "volume_metrics.json")["cases"]
    with_t = [r["tumour"] for r in rows.values() if (r["tumour"].get("gt_ml") or 0) > 0]
    inter = sum(t["dice"] * (t["pred_ml"] + t["gt_ml"]) / 2 for t in with_t)
    total = sum(t["pred_ml"] + t["gt_ml"] for t in with_t)
    free = [r["tumour"] for r in rows.values() if not (r["tumour"].get("gt_ml") or 0) > 0]
    return {"cases": rows,
            "liver_mean": sum(r["liver"]["dice"] for r in rows.values()) / len(rows),
            "tumour_mean": sum(t["dice"] for t in with_t) / len(with_t) if with_t else None,
            "tumour_pooled": 2 * inter / total if total else None,
            "n_with_tumour": len(with_t),
            "fp_on_tumour_free": sum(1 for t in free if t.get("status") == "false_positive"),
            "n_tumour_free": len(free)}


def run_variant(name: str, sets: list[str], out: Path, minutes: float | None) -> dict:
    d = out / "runs" / name
    extra, demo_sets = _demo_sets(sets)
    sets_args = [a for s in demo_sets for a in ("--set", s)]
    cmd = [sys.executable, "-m", "flexunet", "--quiet", "demo", str(d), *extra, *sets_args]
    if minutes:
        cmd += ["--minutes", str(minutes)]
    print(f"== {name}: {' '.join(cmd[2:])}", flush=True)
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rc, peak_gb = _common.run_peak_rss(cmd, log, env=_ENV)  # the demo's own peak, not this process's
    text = log.read_text()
    row = {"name": name, "sets": sets, "seconds": time.perf_counter() - t0, "ok": rc == 0,
           "peak_rss_gb": peak_gb, "steps": demo_steps(text)}
    if not row["ok"]:
        row["error"] = text.strip().splitlines()[-1:]
        print(text[-4000:])
        return row
    row.update(_training_figures(d))
    row.update(score_run(d, sets_args, out))
    return row


def demo_steps(text: str) -> dict:
    """Seconds per step from the step table ``flexunet demo`` prints after ``== demo summary``."""
    import re

    steps = {}
    for line in text.partition("== demo summary")[2].splitlines():
        m = re.match(r"^  (\S.*?)\s+([0-9.]+) s$", line)
        if m:
            steps[m.group(1)] = float(m.group(2))
    return steps


def _training_figures(d: Path) -> dict:
    """Epochs the demo run in ``d`` trained (rows of its loss CSV) and its best-valid-loss epoch."""
    hist = d / "eval" / "train_losses.csv"
    return {"epochs": max(0, len(hist.read_text().strip().splitlines()) - 1) if hist.exists() else None,
            "best_epoch": _best_epoch(d)}


def finish_variant(row: dict, out: Path) -> dict:
    """A variant whose training finished but whose demo stopped after it (a later step failed or was
    interrupted): its saved model segments and scores the test cases as the demo would, then the
    valid and selection cases.  No training."""
    import shutil

    d = out / "runs" / row["name"]
    if not (d / "models" / "best.pt").exists():
        raise SystemExit(f"--finish {row['name']}: no {d / 'models' / 'best.pt'}; expected a run whose training finished")
    _, demo_sets = _demo_sets(row["sets"])
    sets_args = [a for s in demo_sets for a in ("--set", s)]
    print(f"== {row['name']}: finishing from its saved model", flush=True)
    cfg = d / "train_eval_infer.config"
    cases = sorted(p.name for p in (d / "gt").iterdir()) if (d / "gt").is_dir() else []
    if not cases:
        raise SystemExit(f"--finish {row['name']}: no test labels in {d / 'gt'}; expected the demo to have reached infer-volume")
    shutil.rmtree(d / "pred", ignore_errors=True)
    _flexunet("infer-volume", str(cfg), *[str(d / "cases" / c / "image.nii.gz") for c in cases],
              "--output", str(d / "pred"), *sets_args)
    _flexunet("evaluate-volume", str(d / "pred"), str(d / "gt"), "--output", str(d / "eval"))
    new = {"name": row["name"], "sets": row["sets"], "seconds": row.get("seconds"), "ok": True,
           "finished_later": True, **_training_figures(d)}
    new.update(score_run(d, sets_args, out))
    return new


def score_run(d: Path, sets_args: list[str], out: Path) -> dict:
    """A demo run's test, valid, selection and lesion figures; its test cases are already predicted
    and scored (``<d>/eval``)."""
    res = {"test": _case_rows(d / "eval" / "volume_metrics.json")}
    # the valid case, segmented and scored exactly like the test cases
    cfg = d / "train_eval_infer.config"
    gt = d / "gt_valid" / "phantom_005"
    gt.mkdir(parents=True, exist_ok=True)
    (gt / "label.nii.gz").write_bytes((d / "cases" / "phantom_005" / "label.nii.gz").read_bytes())
    for argv in (["infer-volume", str(cfg), str(d / "cases" / "phantom_005" / "image.nii.gz"),
                  "--output", str(d / "pred_valid"), *sets_args],
                 ["evaluate-volume", str(d / "pred_valid"), str(d / "gt_valid"), "--output", str(d / "eval_valid")]):
        _flexunet(*argv)
    res["valid"] = _case_rows(d / "eval_valid" / "volume_metrics.json")
    res["select"] = score_selection(d, sets_args, selection_set(out))
    res["lesions"] = lesions(d, sorted(res["test"]["cases"]))
    res["false_tumour"] = false_tumour(d, sorted(res["test"]["cases"]))
    res["select_lesions"] = lesion_summary(lesions(d, SELECT, selection_set(out), d / "pred_select"))
    return res


def _case_arrays(cases_dir: Path, pred_dir: Path, case: str):
    """(image HU float32, label, prediction) of one case, as stored."""
    import nibabel as nib
    import numpy as np

    return (np.asarray(nib.load(cases_dir / case / "image.nii.gz").dataobj, dtype=np.float32),
            np.asarray(nib.load(cases_dir / case / "label.nii.gz").dataobj),
            np.asarray(nib.load(pred_dir / f"{case}.nii.gz").dataobj))


def _best_epoch(d: Path) -> int | None:
    """1-based epoch of the lowest valid loss in the history of the run that trained ``<d>``'s model:
    its own, or for a ``--post`` row (no history of its own) that of the run its models/ links to."""
    h = d / "history.json"
    if not h.exists() and (d / "models").is_symlink():
        h = (d / "models").resolve().parent / "history.json"  # resolve() follows a chain of links too
    if not h.exists():
        return None
    loss = json.loads(h.read_text()).get("val_loss") or []
    return 1 + min(range(len(loss)), key=loss.__getitem__) if loss else None


def false_tumour(d: Path, cases: list[str]) -> list[dict]:
    """Each predicted tumour component (26-connected) of the test cases that is mostly not tumour in
    the label: size, mean HU, and the shares of it the label calls background and liver."""
    import numpy as np
    from scipy import ndimage

    rows = []
    for case in cases:
        img, lab, pred = _case_arrays(d / "cases", d / "pred", case)
        comp, n = ndimage.label(pred == 2, structure=np.ones((3, 3, 3), bool))
        for i in range(1, n + 1):
            m = comp == i
            if (lab[m] == 2).mean() >= 0.5:
                continue
            rows.append({"case": case, "voxels": int(m.sum()), "hu": float(img[m].mean()),
                         "label_background": float((lab[m] == 0).mean()), "label_liver": float((lab[m] == 1).mean())})
    return rows


def lesion_summary(rows: list[dict], small: int = 100) -> dict:
    """How many lesions are found (at least half their voxels labelled tumour) and how many are
    mostly labelled background, split at ``small`` voxels."""
    out = {}
    for key, sel in (("small", [r for r in rows if r["voxels"] < small]),
                     ("large", [r for r in rows if r["voxels"] >= small])):
        out[key] = {"n": len(sel), "found": sum(r["found"] >= 0.5 for r in sel),
                    "background": sum(r["background"] >= 0.5 for r in sel),
                    # of those mostly labelled background: how many reach the liver's surface
                    "background_at_surface": sum(r["background"] >= 0.5 and r.get("surface", 0) > 0 for r in sel)}
    return out


def post_variant(name: str, base: dict, extra: list[str], out: Path) -> dict:
    """``base``'s trained model with other inference settings (``[infer]`` keys only): the test, valid
    and selection cases are segmented again into ``runs/<name>``; no training."""
    import shutil

    if name == base["name"]:
        raise SystemExit(f"--post {name}: the new row needs its own name (its folder would replace the base run's)")
    bad = [s for s in extra if not s.startswith("infer.")]
    if bad:
        raise SystemExit(f"--post {name}: {bad} change more than inference; expected [infer] keys only")
    d = out / "runs" / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for sub in ("models", "cases"):
        # to the folder of the run that trained the model, not through the base's own link (a row renamed
        # later would break a chain of links); relative, as runs/ may move
        target = (out / "runs" / base["name"] / sub).resolve()
        (d / sub).symlink_to(os.path.relpath(target, d), target_is_directory=True)
    # a row's sets are relative to the current demo config, not to the copy in the base run's folder:
    # the new row is scored with the current config + its sets
    from flexunet.demo import DEMO_CONFIG

    shutil.copy(DEMO_CONFIG, d / "train_eval_infer.config")
    sets = list(base["sets"]) + list(extra)
    _, demo_sets = _demo_sets(sets)
    sets_args = [a for s in demo_sets for a in ("--set", s)]
    print(f"== {name}: the model of {base['name']} with {'; '.join(extra)}", flush=True)
    cases = sorted(base["test"]["cases"])
    for c in cases:
        (d / "gt" / c).mkdir(parents=True)
        shutil.copy(d / "cases" / c / "label.nii.gz", d / "gt" / c / "label.nii.gz")
    _flexunet("infer-volume", str(d / "train_eval_infer.config"), *[str(d / "cases" / c / "image.nii.gz") for c in cases],
              "--output", str(d / "pred"), *sets_args)
    _flexunet("evaluate-volume", str(d / "pred"), str(d / "gt"), "--output", str(d / "eval"))
    row = {"name": name, "sets": sets, "post_of": base["name"], "seconds": base["seconds"], "ok": True,
           "epochs": base.get("epochs"), "best_epoch": base.get("best_epoch")}
    row.update(score_run(d, sets_args, out))
    return row


def lesions(d: Path, cases: list[str], cases_dir: Path | None = None, pred_dir: Path | None = None) -> list[dict]:
    """Each lesion (26-connected label 2) of ``cases`` (default: the test cases, ``<d>/cases``,
    predicted in ``<d>/pred``): size, mean +- SD HU against a 3-voxel ring of liver around it, the
    fractions of its voxels the prediction labels tumour and background (the rest is liver), and
    ``surface``: the share of the voxels touching it that the label calls background (0: wholly
    inside the liver)."""
    import numpy as np
    from scipy import ndimage

    cases_dir, pred_dir = cases_dir or d / "cases", pred_dir or d / "pred"
    rows = []
    for case in cases:
        img, lab, pred = _case_arrays(cases_dir, pred_dir, case)
        comp, n = ndimage.label(lab == 2, structure=np.ones((3, 3, 3), bool))
        for i in range(1, n + 1):
            m = comp == i
            ring = ndimage.binary_dilation(m, iterations=3) & ~m & (lab == 1)
            shell = ndimage.binary_dilation(m, structure=np.ones((3, 3, 3), bool)) & ~m
            rows.append({"case": case, "voxels": int(m.sum()),
                         "hu": [float(img[m].mean()), float(img[m].std())],
                         "ring_hu": [float(img[ring].mean()), float(img[ring].std())],
                         "found": float((pred[m] == 2).mean()), "background": float((pred[m] == 0).mean()),
                         "surface": float((lab[shell] == 0).mean())})
    return rows


def _sel(r: dict, key: str) -> str:
    v = (r.get("select") or {}).get(key)
    return "-" if v is None else f"{v:.3f}"


def _fp(r: dict) -> str:
    s = r.get("select") or {}
    if "n_tumour_free" not in s:
        return "-"
    ml = [c["tumour"]["pred_ml"] or 0.0 for c in s["cases"].values() if not (c["tumour"].get("gt_ml") or 0) > 0]
    return f"{s['fp_on_tumour_free']} of {s['n_tumour_free']}" + (f" (up to {max(ml):.2f} mL)" if max(ml, default=0) else "")


def _found(r: dict) -> str:
    s = (r.get("select_lesions") or {}).get("large")
    if not s:
        return "-"
    at = f" ({s['background_at_surface']} at the liver's surface)" if "background_at_surface" in s else ""
    return f"{s['found']} / {s['background']}{at} of {s['n']}"


def render(report: dict) -> str:
    """Markdown of ``report``, its rows in the order of VARIANTS (others after them)."""
    order = {name: i for i, name in enumerate(VARIANTS)}
    report = dict(report, runs=sorted(report["runs"], key=lambda r: order.get(r["name"], len(order))))
    m = report["meta"]
    lines = ["# Phantom demo variants", "", f"- command: `{m['command']}`"]
    lines += [f"- also (rows kept from or added by): `{c}`"
              for c in m.get("earlier_commands", []) + m.get("later_commands", [])]
    lines += [f"- machine: {_common.machine_line(m['machine'])}",
              "- data: `flexunet phantom --cases 10 --seed 0`; train phantom_000-004, 008, 009 (with demo.cases=N: "
              "every phantom below N but 005-007); valid phantom_005; test phantom_006, phantom_007",
              "- choose on the **selection set** (phantoms 020-029, seed 0: mean and pooled tumour Dice over its "
              "cases with tumour, false tumour on the tumour-free ones); the test columns are what the demo "
              "reports", ""]
    rows = []
    for r in report["runs"]:
        if not r.get("ok"):
            rows.append([r["name"], "; ".join(r["sets"]) or "-", "failed"] + [""] * 13)
            continue
        v = r["valid"]["cases"].get("phantom_005", {})
        t = r["test"]["cases"]
        epochs = r.get("epochs", "-")
        if r.get("best_epoch"):
            epochs = f"{epochs} (best {r['best_epoch']})"
        rows.append([r["name"], "; ".join(r["sets"]) or "(the shipped demo config)", epochs,
                     f"{v.get('liver', {}).get('dice', float('nan')):.3f}",
                     f"{v.get('tumour', {}).get('dice', float('nan')):.3f}",
                     _sel(r, "liver_mean"), _sel(r, "tumour_mean"), _sel(r, "tumour_pooled"), _fp(r), _found(r),
                     f"{r['test']['aggregate'].get('liver', float('nan')):.3f}",
                     f"{r['test']['aggregate'].get('tumour', float('nan')):.3f}",
                     " / ".join(f"{t[c]['tumour']['dice']:.3f}" for c in sorted(t) if "tumour" in t[c]),
                     f"{r['seconds'] / 60:.1f}", _common.fmt_num(r.get("steps", {}).get("train"), 1, missing="-"),
                     _common.fmt_num(r.get("peak_rss_gb"), 2, missing="-")])
    lines.append(_common.md_table(["variant", "overrides", "epochs (best valid loss)", "valid liver", "valid tumour",
                                   "select liver", "select tumour (mean)", "select tumour (pooled)",
                                   "select tumour-free cases with tumour labelled",
                                   "select lesions >= 100 voxels found / mostly labelled background",
                                   "test liver (mean)", "test tumour (mean)", "test tumour 006 / 007",
                                   "demo min", "train s", "peak RSS GB"], rows))
    for r in report["runs"]:
        if r.get("lesions"):
            lines += ["", f"Test lesions, variant {r['name']} (HU: mean +- SD; ring: liver within 3 voxels):", ""]
            lines.append(_common.md_table(
                ["case", "voxels", "lesion HU", "ring HU", "contrast HU", "labelled tumour", "labelled background"],
                [[x["case"], x["voxels"], "%.0f +- %.0f" % tuple(x["hu"]), "%.0f +- %.0f" % tuple(x["ring_hu"]),
                  "%+.0f" % (x["hu"][0] - x["ring_hu"][0]), "%.0f%%" % (100 * x["found"]),
                  "%.0f%%" % (100 * x["background"]) if "background" in x else "-"] for x in r["lesions"]]))
        if r.get("false_tumour"):
            lines += ["", f"False tumour in the test cases, variant {r['name']} (components mostly not tumour "
                          "in the label):", ""]
            lines.append(_common.md_table(
                ["case", "voxels", "mean HU", "label: background", "label: liver"],
                [[x["case"], x["voxels"], "%.0f" % x["hu"], "%.0f%%" % (100 * x["label_background"]),
                  "%.0f%%" % (100 * x["label_liver"])] for x in r["false_tumour"]]))
    return "\n".join(lines) + "\n"


def _save(report: dict, path: Path, out: Path, report_dir: Path | None = None) -> None:
    """The results JSON and its Markdown rendering, both atomically; with ``report_dir``, a copy of both
    there too (the small summary that is committed: figures only, no weights or volumes)."""
    _common.save_results("demo_variants", report, path)
    text = render(report)
    atomic_save_text(out / "demo_variants.md", text)
    if report_dir is not None:
        _common.save_results("demo_variants", report, report_dir / "demo_variants.json")
        atomic_save_text(report_dir / "demo_variants.md", text)


def _put_row(report: dict, row: dict, path: Path, out: Path, report_dir: Path | None = None) -> None:
    """``row`` replaces the report's row of that name (or joins it); then saved."""
    report["runs"] = [r for r in report["runs"] if r["name"] != row["name"]] + [row]
    _save(report, path, out, report_dir)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma list of variant names (default: all)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=SET;SET",
                    help="add a variant: NAME=section.key=value;section.key=value")
    ap.add_argument("--post", action="append", default=[], metavar="NAME=BASE:SET;SET",
                    help="score a saved run's model again with other [infer] settings (no training), "
                         "e.g. pp=shipped:infer.min_tumour_mm3=300")
    ap.add_argument("--post-infer-settings", action="store_true",
                    help="--post every row of INFER_SETTINGS on each seed's trained run (shipped, seed7, seed123): "
                         "the 15 rows of docs/results.md's inference-settings table")
    ap.add_argument("--finish", metavar="NAME,NAME",
                    help="variants whose training finished but whose demo failed after it: segment and score "
                         "their saved models (no training)")
    ap.add_argument("--minutes", type=float, help="training budget (default: the demo config's)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR,
                    help="where the summary (demo_variants.json/.md, no weights) is copied to be committed "
                         "(default: bench/reports/demo_variants)")
    ap.add_argument("--select", action="store_true",
                    help="only score the runs already in --out on the selection set (no training)")
    ap.add_argument("--lesions", action="store_true",
                    help="only recompute the lesion tables of the runs already in --out (no training)")
    args = ap.parse_args(argv)
    command = _common.command_line(None if argv is None else [__file__, *argv])  # argv holds no script name
    if args.post_infer_settings:
        args.post = infer_post_specs() + args.post
    old = args.out / "demo_variants.json"
    rdir = args.report_dir
    if args.lesions or args.select or args.finish or args.post:
        if not old.exists():
            ap.error(f"{old} not found: expected the report of trained runs (run without --post, --finish, "
                     "--select or --lesions first)")
        report = json.loads(old.read_text())
        # the rows these options add or rescore come from this command: the report keeps it beside the first
        report["meta"].setdefault("later_commands", []).append(command)
    if args.lesions or args.select:
        sel = selection_set(args.out) if args.select else None
        for r in report["runs"]:
            if not r.get("ok") or (args.only and r["name"] not in args.only.split(",")):
                continue
            if args.select:
                _, demo_sets = _demo_sets(r["sets"])
                print(f"== {r['name']}: scoring on the selection set", flush=True)
                r["select"] = score_selection(args.out / "runs" / r["name"],
                                              [a for x in demo_sets for a in ("--set", x)], sel)
            if args.lesions:
                d = args.out / "runs" / r["name"]
                r["best_epoch"] = _best_epoch(args.out / "runs" / r["name"])
                r["lesions"] = lesions(d, sorted(r["test"]["cases"]))
                r["false_tumour"] = false_tumour(d, sorted(r["test"]["cases"]))
                r["select_lesions"] = lesion_summary(lesions(d, SELECT, selection_set(args.out), d / "pred_select"))
        _save(report, old, args.out, rdir)
        print(render(report))
        return 0
    if args.finish:
        for name in args.finish.split(","):
            rows = [r for r in report["runs"] if r["name"] == name]
            if not rows:
                ap.error(f"--finish {name}: no row {name!r} in {old}")
            _put_row(report, finish_variant(rows[0], args.out), old, args.out, rdir)
        print(render(report))
        return 0
    if args.post:
        by_name = {r["name"]: r for r in report["runs"]}
        for spec in args.post:
            name, _, rest = spec.partition("=")
            base, _, sets = rest.partition(":")
            if base not in by_name or not by_name[base].get("ok"):
                ap.error(f"--post {spec}: no finished run {base!r} in {old}; expected one of {sorted(by_name)}")
            by_name[name] = row = post_variant(name, by_name[base], [x for x in sets.split(";") if x], args.out)
            _put_row(report, row, old, args.out, rdir)
        print(render(report))
        return 0
    variants = dict(VARIANTS)
    for v in args.variant:
        name, _, sets = v.partition("=")
        variants[name] = [s for s in sets.split(";") if s]
    names = args.only.split(",") if args.only else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; expected some of {sorted(variants)}")
    meta = {"command": command, "machine": _common.machine_info(), "minutes": args.minutes}
    args.out.mkdir(parents=True, exist_ok=True)
    kept = []
    if args.only and old.exists():
        prev = json.loads(old.read_text())
        if prev["meta"].get("minutes") == args.minutes:
            kept = [r for r in prev["runs"] if r["name"] not in names]
            if kept:  # the commands that made the kept rows
                meta["earlier_commands"] = ([prev["meta"]["command"]] + prev["meta"].get("earlier_commands", [])
                                            + prev["meta"].get("later_commands", []))
    runs = []
    for n in names:
        runs.append(run_variant(n, variants[n], args.out, args.minutes))
        report = {"meta": meta, "runs": kept + runs}
        _save(report, old, args.out, rdir)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
