"""How a model trained only on phantoms (the demo's, ``demo_run/models/best.pt``) segments real livers.

Runs ``flexunet infer-volume`` with the demo config on IRCADb patients 1 and 17 (imported by
``bench/quality.py`` into ``bench/results/cache/cases``) and ``flexunet evaluate-volume`` against
their labels; prints liver Dice (liver = label >= 1, so patient 1's liver-with-tumours label counts
as it should).

    python bench/phantom_to_real.py [--demo demo_run] [--cases bench/results/cache/cases] [--set infer.KEY=VALUE ...]

``--set`` goes to ``infer-volume`` (e.g. ``--set 'infer.weights=["best.pt","last.ckpt"]'`` for a bench row
whose folder holds an older copy of the demo config).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default=str(ROOT / "demo_run"))
    ap.add_argument("--cases", default=str(ROOT / "bench/results/cache/cases"))
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="passed to infer-volume (repeatable)")
    args = ap.parse_args()
    demo, cases = Path(args.demo), Path(args.cases)
    cfg = demo / "train_eval_infer.config"
    if not (demo / "models" / "best.pt").exists():
        raise SystemExit(f"{demo}/models/best.pt missing: run `make demo` first")
    print(f"command: `{' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}`\n")
    print("| real case | liver Dice | liver ASSD mm | liver mL pred/gt |\n|---|---|---|---|")
    for case in ("ircadb_1", "ircadb_17"):
        if not (cases / case / "image.nii.gz").exists():
            print(f"| {case} | (not imported: run bench/quality.py first) | | |")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "gt" / case).mkdir(parents=True)
            (tmp / "gt" / case / "label.nii.gz").symlink_to((cases / case / "label.nii.gz").resolve())
            for argv in (["infer-volume", str(cfg), str(cases / case / "image.nii.gz"), "--output", str(tmp / "pred"),
                          *[a for x in args.set for a in ("--set", x)]],
                         ["evaluate-volume", str(tmp / "pred"), str(tmp / "gt"), "--output", str(tmp / "pred")]):
                proc = subprocess.run([sys.executable, "-m", "flexunet", "--quiet", *argv], capture_output=True,
                                      text=True)
                if proc.returncode:
                    raise SystemExit(proc.stderr[-2000:])
            res = json.loads((tmp / "pred" / "volume_metrics.json").read_text())
            row = res["cases"][0]
            liver = row["liver"] if "liver" in row else row["classes"]["liver"]
            vol = row.get("volumetry", {})
            print(f"| {case} | {liver['dice']:.3f} | {liver.get('assd_mm', float('nan')):.2f} | "
                  f"{vol.get('pred', {}).get('liver_ml', float('nan')):.0f}/"
                  f"{vol.get('gt', {}).get('liver_ml', float('nan')):.0f} |")


if __name__ == "__main__":
    main()
