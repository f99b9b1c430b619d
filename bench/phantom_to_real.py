"""How a model trained only on phantoms (the demo's, ``demo_run/models/best.pt``) segments real livers.

Runs ``flexunet infer-volume`` with each demo folder's config on IRCADb patients 1, 7 and 17 (imported
by ``bench/quality.py`` into ``bench/results/cache/cases``) and ``flexunet evaluate-volume`` against
their labels; prints liver Dice (liver = label >= 1, so a liver-with-tumours label counts as it should),
ASSD, liver volumes and the tumour volume labelled (patient 7 has none in its liver).

    python bench/phantom_to_real.py [--demo demo_run ...] [--cases bench/results/cache/cases]
                                    [--set infer.KEY=VALUE ...] [--report-dir bench/reports/phantom_to_real]

``--demo`` is repeatable (e.g. the three seeds' runs of ``bench/demo_variants.py``).  ``--set`` goes to
``infer-volume`` (e.g. ``--set 'infer.weights=["best.pt","last.ckpt"]'`` for a bench row whose folder
holds an older copy of the demo config).  The table and its JSON (figures only) go to ``--report-dir``,
the folder that is committed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402

ROOT = BENCH.parent
CASES = ("ircadb_1", "ircadb_7", "ircadb_17")


def score(demo: Path, case_dir: Path, sets: list[str]) -> dict:
    """One demo model on one real case: liver Dice, ASSD, predicted and reference liver and tumour mL."""
    case = case_dir.name
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "gt" / case).mkdir(parents=True)
        (tmp / "gt" / case / "label.nii.gz").symlink_to((case_dir / "label.nii.gz").resolve())
        for argv in (["infer-volume", str(demo / "train_eval_infer.config"), str(case_dir / "image.nii.gz"),
                      "--output", str(tmp / "pred"), *[a for x in sets for a in ("--set", x)]],
                     ["evaluate-volume", str(tmp / "pred"), str(tmp / "gt"), "--output", str(tmp / "pred")]):
            proc = subprocess.run([sys.executable, "-m", "flexunet", "--quiet", *argv], capture_output=True,
                                  text=True)
            if proc.returncode:
                raise SystemExit(f"{demo} on {case}: " + proc.stderr[-2000:])
        row = json.loads((tmp / "pred" / "volume_metrics.json").read_text())["cases"][0]
    liver, vol = row["classes"]["liver"], row["volumetry"]
    return {"demo": os.path.relpath(demo.resolve(), ROOT), "case": case, "liver_dice": liver["dice"],
            "liver_assd_mm": liver["assd_mm"], "liver_ml_pred": vol["pred"]["liver_ml"],
            "liver_ml_gt": vol["gt"]["liver_ml"], "tumour_ml_pred": vol["pred"]["tumour_ml"],
            "tumour_ml_gt": vol["gt"]["tumour_ml"]}


def render(report: dict) -> str:
    """The report as Markdown: command, machine, one row per demo model and real case."""
    def fmt(x, nd):
        return _common.fmt_num(x, nd, missing="-")

    rows = [[Path(r["demo"]).name, r["case"], fmt(r["liver_dice"], 3), fmt(r["liver_assd_mm"], 2),
             f"{fmt(r['liver_ml_pred'], 0)} / {fmt(r['liver_ml_gt'], 0)}",
             f"{fmt(r.get('tumour_ml_pred'), 1)} / {fmt(r.get('tumour_ml_gt'), 1)}"] for r in report["rows"]]
    return "\n".join(["# Phantom-trained models on real patients", "",
                      f"- command: `{report['meta']['command']}`",
                      f"- machine: {_common.machine_line(report['meta']['machine'])}", "",
                      _common.md_table(["demo model", "real case", "liver Dice", "liver ASSD mm",
                                        "liver mL pred / gt", "tumour mL pred / gt"], rows)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", action="append", type=Path, metavar="DIR",
                    help="a demo output folder (repeatable; default: demo_run)")
    ap.add_argument("--cases", type=Path, default=ROOT / "bench/results/cache/cases")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="passed to infer-volume (repeatable)")
    ap.add_argument("--report-dir", type=Path, default=BENCH / "reports" / "phantom_to_real",
                    help="where phantom_to_real.json/.md are written (committed: figures only)")
    args = ap.parse_args(argv)
    demos = args.demo or [ROOT / "demo_run"]
    for demo in demos:
        if not (demo / "models" / "best.pt").exists():
            raise SystemExit(f"{demo}/models/best.pt missing: expected a finished demo (`make demo`, or a run "
                             "of bench/demo_variants.py)")
    missing = [c for c in CASES if not (args.cases / c / "image.nii.gz").exists()]
    if missing:
        raise SystemExit(f"{args.cases}: {', '.join(missing)} not imported; run bench/quality.py first")
    command = _common.command_line(None if argv is None else [__file__, *argv])  # argv holds no script name
    report = {"meta": {"command": command, "machine": _common.machine_info()},
              "rows": [score(demo, args.cases / c, args.set) for demo in demos for c in CASES]}
    text = render(report)
    _common.save_report("phantom_to_real", report, text, args.report_dir)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
