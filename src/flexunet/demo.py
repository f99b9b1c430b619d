"""``flexunet demo``: the whole volume pipeline on generated phantoms, in about 10 minutes on 2 cores.

phantom (10 cases: 7 train, 1 valid, 2 test) -> slice (patient-wise) -> train (29 epochs, capped at 11 min) -> evaluate (2D)
-> infer-volume on the held-out cases -> evaluate-volume, then a per-class table
and the output paths.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "projects" / "phantom-demo" / "train_eval_infer.config"
TARGETS = {"liver": 0.95, "tumour": 0.80}


def _embedded_config_text() -> str:
    from .errors import DataError

    if not DEMO_CONFIG.exists():
        raise DataError(f"{DEMO_CONFIG}: demo config not found; expected a source checkout (pip install -e .)")
    return DEMO_CONFIG.read_text()


def run_demo(out_dir: str = "demo_run", minutes: float | None = None, cases: int = 10, quiet: bool = False,
             overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the demo in ``out_dir``; ``overrides`` (``section.key=value``, as ``--set``) apply to every
    step that reads the config, so a variant is trained, evaluated and inferred the same way."""
    from .cli import main
    from .config import load_config

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "train_eval_infer.config"
    from .io.atomic import atomic_save_text

    atomic_save_text(cfg_path, _embedded_config_text())
    q = ["--quiet"] if quiet else []
    overrides = list(overrides) + ([f"train.max_time_minutes={minutes}"] if minutes else [])
    cfg = load_config(cfg_path, overrides)  # a bad override fails here, before any work
    sets = [a for o in overrides for a in ("--set", o)]
    t0 = time.perf_counter()
    steps = []

    def step(name, argv):
        s = time.perf_counter()
        print(f"\n== {name}: flexunet {' '.join(argv)}", flush=True)
        rc = main(q + argv)
        steps.append((name, time.perf_counter() - s))
        if rc != 0:
            raise SystemExit(f"demo step {name!r} failed with exit code {rc}")

    for sub in ("cases", "dataset", "models", "eval", "pred", "epoch_change_infer", "mini_test_output"):
        if (out / sub).is_symlink():  # rmtree refuses links; left in place, the demo would write through it
            (out / sub).unlink()
        else:
            shutil.rmtree(out / sub, ignore_errors=True)
    step("phantom", ["phantom", str(out / "cases"), "--cases", str(cases), "--seed", "0"])
    step("slice", ["slice", str(cfg_path), *sets])
    step("train", ["train", str(cfg_path), *sets])
    step("evaluate", ["evaluate", str(cfg_path), *sets])
    step("infer (2D overlays)", ["infer", str(cfg_path), *sets])
    test_cases = list(cfg.slice.test_cases)
    gt = out / "gt"
    shutil.rmtree(gt, ignore_errors=True)
    for c in test_cases:
        (gt / c).mkdir(parents=True)
        shutil.copy(out / "cases" / c / "label.nii.gz", gt / c / "label.nii.gz")
    inputs = [str(out / "cases" / c / "image.nii.gz") for c in test_cases]
    step("infer-volume", ["infer-volume", str(cfg_path), *inputs, "--output", str(out / "pred"), *sets])
    step("evaluate-volume", ["evaluate-volume", str(out / "pred"), str(gt), "--output", str(out / "eval")])
    import json

    res = json.loads((out / "eval" / "volume_metrics.json").read_text())
    agg = res["aggregate"]
    print("\n== demo summary")
    verdict = {}
    for cls, target in TARGETS.items():
        dice = agg[cls]["dice_mean"]
        verdict[cls] = dice >= target
        print(f"{cls:7s} per-case Dice {dice:.3f} (target >= {target}): {'met' if verdict[cls] else 'NOT met'}"
              f"; global Dice (pooled over the cases) {agg[cls]['dice_global']:.3f}")
    for name, s in steps:
        print(f"  {name:20s} {s:6.1f} s")
    print(f"  total                {time.perf_counter() - t0:6.1f} s")
    print(f"outputs: {out / 'pred'} (label NIfTI), {out / 'eval'} (metrics, training curves), "
          f"{out / 'mini_test_output_overlay'} (overlays), {out / 'epoch_change_infer'} (epoch snapshots)")
    return {"aggregate": agg, "verdict": verdict, "seconds": time.perf_counter() - t0}
