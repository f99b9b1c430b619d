#!/usr/bin/env python
"""``infer-volume`` postprocessing settings on real CT: saved real-CT models of ``bench/quality.py``
segment their held-out patient again under each setting.

No training: each run folder (``<results>/runs/<recipe>_<fold>``, as ``bench/quality.py`` leaves them,
with ``models/best.pt``, ``cases/`` and the held-out labels in ``gt/``) is segmented again with
``flexunet infer-volume --set ...`` for each setting, then scored with ``flexunet evaluate-volume``.
The run's own config is used otherwise unchanged (its tumour filters as it had them).  A setting is
``NAME=infer.KEY=VALUE;infer.KEY=VALUE``; the default settings compare tumour growing off and on.

    python bench/postprocess_real.py [--runs bench/results/quality/runs/b_T bench/results/synth_T/runs/b_T]
                                     [--setting grow0=infer.tumour_grow=0 ...] [--out bench/results/postprocess_real]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402

_common.ensure_src_on_path()

from flexunet.cli import main as flexunet  # noqa: E402
from flexunet.io.atomic import atomic_save_text  # noqa: E402

DEFAULT_RUNS = [BENCH / "results" / "quality" / "runs" / "b_T", BENCH / "results" / "synth_T" / "runs" / "b_T"]


DEFAULT_SETTINGS = ["grow0=infer.tumour_grow=0", "grow2=infer.tumour_grow=2"]


def parse_setting(spec: str) -> tuple[str, list[str]]:
    name, _, sets = spec.partition("=")
    sets_list = [x for x in sets.split(";") if x]
    if not name or not sets_list or any(not x.startswith("infer.") or "=" not in x for x in sets_list):
        raise SystemExit(f"--setting {spec!r}: expected NAME=infer.KEY=VALUE;infer.KEY=VALUE")
    return name, sets_list


def score(run: Path, name: str, sets: list[str], out: Path) -> list[dict]:
    cfg = run / "train_eval_infer.config"
    cases = sorted(p.name for p in (run / "gt").iterdir() if (p / "label.nii.gz").exists())
    dst = out / f"{run.parent.parent.name}_{run.name}_{name}"
    inputs = [str(run / "cases" / c / "image.nii.gz") for c in cases]
    if flexunet(["--quiet", "infer-volume", str(cfg), *inputs, "--output", str(dst / "pred"),
                 *[a for x in sets for a in ("--set", x)]]) != 0:
        raise SystemExit(f"{run}: infer-volume failed")
    if flexunet(["--quiet", "evaluate-volume", str(dst / "pred"), str(run / "gt"), "--output", str(dst / "eval")]) != 0:
        raise SystemExit(f"{run}: evaluate-volume failed")
    res = json.loads((dst / "eval" / "volume_metrics.json").read_text())
    return [{"run": f"{run.parent.parent.name}/{run.name}", "setting": name, "sets": sets, "case": c["case_id"],
             **{f"{cls}_{k}": c["classes"][cls].get(k) for cls in ("liver", "tumour")
                for k in ("dice", "pred_ml", "gt_ml")}} for c in res["cases"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", type=Path, default=DEFAULT_RUNS)
    ap.add_argument("--setting", action="append", metavar="NAME=infer.KEY=VALUE;...",
                    help=f"a postprocessing setting to score (repeat; default: {' '.join(DEFAULT_SETTINGS)})")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "postprocess_real")
    args = ap.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "models" / "best.pt").exists()]
    if missing:
        ap.error(f"no trained run in {missing}; expected bench/quality.py run folders (run it first)")
    meta = {"command": _common.command_line(argv), "machine": _common.machine_info()}
    settings = [parse_setting(x) for x in (args.setting or DEFAULT_SETTINGS)]
    rows = [r for run in args.runs for name, sets in settings for r in score(run, name, sets, args.out)]
    table = _common.md_table(
        ["run", "setting", "case", "liver Dice", "tumour Dice", "tumour mL pred / label"],
        [[r["run"], f"{r['setting']} ({'; '.join(r['sets'])})", r["case"], "%.3f" % r["liver_dice"],
          "%.3f" % r["tumour_dice"] if r["tumour_dice"] is not None else "-",
          "%.1f / %.1f" % (r["tumour_pred_ml"], r["tumour_gt_ml"])] for r in rows])
    text = f"# infer-volume postprocessing on real CT\n\n- command: `{meta['command']}`\n- machine: {_common.machine_line(meta['machine'])}\n\n{table}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    _common.save_results("postprocess_real", {"meta": meta, "rows": rows}, args.out / "postprocess_real.json")
    atomic_save_text(args.out / "postprocess_real.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
