"""Dice drift and end-to-end time of the fast inference path against fp32, with trained models.

For each trained recipe-(b) run of ``bench/quality.py`` (``bench/results/quality/runs/b_*``), the
held-out patient is segmented twice through the CLI (``flexunet infer-volume``): once with
``precision = "32"`` (the reference) and once with ``"auto"`` (bf16 autocast where the CPU has
native bf16), each scored with ``flexunet evaluate-volume``.  It prints per-class Dice of both,
their difference (the target is |drift| <= 0.005) and the wall seconds of each whole command
(process start, read DICOM-derived NIfTI, infer, postprocess, write).

Then it times ``infer-volume`` on a synthetic 512x512x200 CT (``--slices``) with the trained
model, fp32 and auto, end to end.

    python bench/drift.py [--runs bench/results/quality/runs] [--slices 200]
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, machine_line  # noqa: E402


def flexunet(*args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flexunet", "--quiet", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"flexunet {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def dice_of(out_dir: Path) -> dict:
    res = json.loads((out_dir / "volume_metrics.json").read_text())
    return {cls: res["aggregate"][cls]["dice_mean"] for cls in ("liver", "tumour") if cls in res["aggregate"]}


def synthetic_ct(path: Path, slices: int) -> None:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = np.mgrid[:512, :512]
    body = ((x - 256) / 220) ** 2 + ((y - 256) / 170) ** 2 < 1
    liver = ((x - 200) / 90) ** 2 + ((y - 230) / 70) ** 2 < 1
    sl = np.where(body, 40.0, -1000.0)
    sl[liver] = 60.0
    vol = np.repeat(sl[:, :, None], slices, axis=2) + rng.normal(0, 15, (512, 512, slices))
    nib.save(nib.Nifti1Image(vol.astype(np.int16), np.diag([0.75, 0.75, 1.5, 1.0])), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(ROOT / "bench/results/quality/runs"))
    ap.add_argument("--slices", type=int, default=200)
    args = ap.parse_args()
    print(f"command: `{' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}`")
    print(f"machine: {machine_line(machine_info(2))}\n")
    runs = sorted(p for p in Path(args.runs).glob("b_*") if (p / "models" / "best.pt").exists())
    if not runs:
        raise SystemExit(f"no trained recipe-(b) runs under {args.runs}: run bench/quality.py first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for run in runs:
            cfg = run / "train_eval_infer.config"
            cases = run / "cases"
            case = json.loads((run / "result.json").read_text())["test_cases"][0]
            image = cases / case / "image.nii.gz"
            gt = tmp / f"gt_{run.name}" / case
            gt.mkdir(parents=True)
            (gt / "label.nii.gz").symlink_to((cases / case / "label.nii.gz").resolve())
            res = {}
            for prec in ("32", "auto"):
                out = tmp / f"{run.name}_{prec}"
                secs = flexunet("infer-volume", str(cfg), str(image), "--output", str(out),
                                "--set", f"train.precision='{prec}'")
                flexunet("evaluate-volume", str(out), str(gt.parent), "--output", str(out))
                res[prec] = (dice_of(out), secs)
            rows.append((run.name, case, res))
        print("| run | held-out case | class | Dice fp32 | Dice auto (bf16) | drift | infer-volume s fp32 / auto |")
        print("|---|---|---|---|---|---|---|")
        for name, case, res in rows:
            for cls in res["32"][0]:
                a, b = res["32"][0][cls], res["auto"][0][cls]
                print(f"| {name} | {case} | {cls} | {a:.4f} | {b:.4f} | {b - a:+.4f} | "
                      f"{res['32'][1]:.1f} / {res['auto'][1]:.1f} |")
        ct = tmp / "ct512.nii.gz"
        synthetic_ct(ct, args.slices)
        cfg = runs[0] / "train_eval_infer.config"
        print(f"\nEnd to end `flexunet infer-volume` (process start, read, infer, postprocess, write) on a "
              f"512x512x{args.slices} CT, trained model of {runs[0].name}:\n")
        print("| precision | seconds |\n|---|---|")
        for prec in ("32", "auto"):
            secs = flexunet("infer-volume", str(cfg), str(ct), "--output", str(tmp / f"e2e_{prec}"),
                            "--set", f"train.precision='{prec}'")
            print(f"| {prec} | {secs:.1f} |")


if __name__ == "__main__":
    main()
