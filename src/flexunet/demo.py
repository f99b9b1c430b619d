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


MIN_CASES = 3
DEFAULT_CASES = 10


def split_overrides(cases: int) -> list[str]:
    """``[slice]`` split for ``cases`` phantoms: the demo config's own for 10 cases; otherwise the last
    one (two from 5 cases on) to test, the one before to validation, the rest to training.

    Raises:
        ConfigError: fewer than :data:`MIN_CASES` cases.
    """
    from .errors import ConfigError

    if cases < MIN_CASES:
        raise ConfigError(f"--cases {cases}: the demo needs at least {MIN_CASES} phantom cases "
                          "(one each to train, validate and test); expected --cases >= 3")
    if cases == DEFAULT_CASES:
        return []
    names = [f"phantom_{i:03d}" for i in range(cases)]
    n_test = 2 if cases >= 5 else 1
    test, valid, train = names[cases - n_test:], names[cases - n_test - 1:cases - n_test], names[:cases - n_test - 1]
    return [f"slice.train_cases={train!r}", f"slice.valid_cases={valid!r}", f"slice.test_cases={test!r}"]


def run_demo(out_dir: str = "demo_run", minutes: float | None = None, cases: int = 10, quiet: bool = False,
             overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the demo in ``out_dir``.

    Args:
        out_dir: working folder; the demo config is copied into it and its outputs replaced.
        minutes: training time cap (default: the demo config's ``[train] max_time_minutes``).
        cases: phantom cases to generate.
        quiet: no progress bars.
        overrides: ``section.key=value`` strings (as ``--set``), applied to every step, so a variant
            is trained, evaluated and inferred the same way.

    Returns:
        ``{"aggregate": volume metrics, "verdict": {class: target met}, "seconds": float, "config": path}``.

    Raises:
        ConfigError: a bad override (before any work).  DataError, TrainingAborted: from the steps.
    """
    import json

    from . import api
    from .io.atomic import atomic_copy, atomic_save_text
    from .metrics.volume_eval import format_table

    overrides = split_overrides(cases) + list(overrides)  # the caller's own --set values win
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "train_eval_infer.config"
    atomic_save_text(cfg_path, _embedded_config_text())
    overrides = list(overrides) + ([f"train.max_time_minutes={minutes}"] if minutes else [])
    cfg = api.load_config(cfg_path, overrides)  # a bad override fails here, before any work
    shown = " ".join(f"--set {o}" for o in overrides)
    t0 = time.perf_counter()
    steps = []

    def step(name, command, fn):
        s = time.perf_counter()
        print(f"\n== {name}: flexunet {command}", flush=True)
        result = fn()
        steps.append((name, time.perf_counter() - s))
        return result

    for sub in ("cases", "dataset", "models", "eval", "pred", "epoch_change_infer", "mini_test_output"):
        if (out / sub).is_symlink():  # rmtree refuses links; left in place, the demo would write through it
            (out / sub).unlink()
        else:
            shutil.rmtree(out / sub, ignore_errors=True)
    cfg = api.load_config(cfg_path, overrides)  # again: its paths resolved through links that are gone now
    step("phantom", f"phantom {out / 'cases'} --cases {cases} --seed 0",
         lambda: print(f"wrote {cases} phantom cases, manifest "
                       f"{api.write_phantoms(out / 'cases', cases=cases, seed=0)}"))
    step("slice", f"slice {cfg_path} {shown}", lambda: api.slice_cases(cfg, quiet=quiet))
    res = step("train", f"train {cfg_path} {shown}", lambda: api.train(cfg, quiet=quiet))
    print(api.train_summary(res))
    step("evaluate", f"evaluate {cfg_path} {shown}", lambda: api.evaluate(cfg, quiet=quiet))
    step("infer (2D overlays)", f"infer {cfg_path} {shown}", lambda: api.infer(cfg, quiet=quiet))
    test_cases = list(cfg.slice.test_cases)
    gt = out / "gt"
    shutil.rmtree(gt, ignore_errors=True)
    for c in test_cases:
        (gt / c).mkdir(parents=True)
        atomic_copy(out / "cases" / c / "label.nii.gz", gt / c / "label.nii.gz")
    inputs = [str(out / "cases" / c / "image.nii.gz") for c in test_cases]
    step("infer-volume", f"infer-volume {cfg_path} {' '.join(inputs)} --output {out / 'pred'} {shown}",
         lambda: api.infer_volumes(cfg, inputs, out / "pred", quiet=quiet))

    def evaluate_volumes():
        res = api.evaluate_volumes(out / "pred", gt, output_dir=out / "eval")
        print(format_table(res))
        print(f"wrote {out / 'eval' / 'volume_metrics.csv'} and volume_metrics.json")

    step("evaluate-volume", f"evaluate-volume {out / 'pred'} {gt} --output {out / 'eval'}", evaluate_volumes)
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
    return {"aggregate": agg, "verdict": verdict, "seconds": time.perf_counter() - t0, "config": str(cfg_path)}
