#!/usr/bin/env python
"""Compare every registered architecture: parameters, GFLOPs and CPU latency per slice.

Latency: fp32, ``torch.inference_mode``, channels_last, batch 1, one warm-up
forward then the median of ``--repeats`` timed forwards of a ``1 x C x S x S``
slice, with ``--threads`` intra-op threads.  GFLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2).
All models are built from one config (printed at the top); models that cannot
run at ``--size`` are listed with the reason.

    python bench/models.py --size 512 --threads 2 --repeats 3
    python bench/models.py --size 256 --only unet,u2net,swin_unet

When ``bench/zoo_quality.py`` has run, its per-model liver and tumour Dice on the held-out real
patient (same short training budget for every model) are added as two more columns.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.ensure_src_on_path()

from flexunet.config import config_from_dict  # noqa: E402
from flexunet.errors import ConfigError  # noqa: E402
from flexunet.models import resolve_name  # noqa: E402
from flexunet.models.summary import count_parameters, format_models_table, models_table  # noqa: E402

LATENCY = "CPU ms/slice"
CPU_USE = "CPU use"


def latency_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(median wall ms, CPU use) of ``repeats`` forwards after one warm-up (inference mode, channels_last).

    CPU use is process CPU seconds per wall second over the timed forwards: well below the thread
    count means the process was starved by other work and the latency is pessimistic.
    """
    model = model.eval().to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        model(x)
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
        use = (time.process_time() - c0) / max(time.perf_counter() - w0, 1e-9)
    return statistics.median(times), use


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="slice size S (S x S), default 512")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, default 2")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per model (median), default 3")
    parser.add_argument("--only", default="", help="comma-separated model names or aliases, default all")
    parser.add_argument("--base-filters", type=int, default=16, help="[model] base_filters, default 16")
    parser.add_argument("--num-layers", type=int, default=5, help="[model] num_layers, default 5")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3), help="[model] image_channels, default 3")
    parser.add_argument("--classes", type=int, default=3, help="[model] num_classes, default 3")
    parser.add_argument("--dice-from", default=str(Path(__file__).resolve().parent / "results" / "zoo_quality"
                                                   / "zoo_quality.json"),
                        help="bench/zoo_quality.py's JSON, whose real-CT Dice per model is added as columns "
                             "(default bench/results/zoo_quality/zoo_quality.json; '' to leave them out)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    _common.print_header("Model zoo: parameters, GFLOPs, CPU latency per slice", threads=args.threads,
                         argv=None if argv is None else [sys.argv[0], *argv])
    cfg = config_from_dict({"model": {"image_width": args.size, "image_height": args.size,
                                      "image_channels": args.channels, "num_classes": args.classes,
                                      "base_filters": args.base_filters, "num_layers": args.num_layers}}).model
    print(f"config: [model] base_filters={cfg.base_filters} num_layers={cfg.num_layers} "
          f"base_kernels={cfg.base_kernels} dilation={cfg.dilation} normalization={cfg.normalization} "
          f"activation={cfg.activation} image_channels={cfg.image_channels} num_classes={cfg.num_classes}; "
          f"input 1x{cfg.image_channels}x{args.size}x{args.size} fp32, batch 1, channels_last, inference_mode, "
          f"median of {args.repeats} after 1 warm-up")
    print("(models with a fixed depth or width of their own ignore some of these keys; see each module's doc)\n")

    def measure(model: torch.nn.Module, cfg) -> dict:
        x = torch.rand(1, cfg.image_channels, cfg.image_height, cfg.image_width)
        ms, use = latency_ms(model, x, args.repeats)
        print(f"{cfg.model}: {count_parameters(model):,} params, {ms:.1f} ms (CPU use {use:.2f})", flush=True)
        return {LATENCY: ms, CPU_USE: use}

    names = [n.strip() for n in args.only.split(",") if n.strip()] or None
    try:
        names = names and [resolve_name(n) for n in names]
    except ConfigError as exc:
        parser.error(f"--only: {exc}")
    rows = models_table(cfg, size=args.size, names=names, measure=measure)
    extra = [LATENCY, CPU_USE]
    dice = zoo_dice(Path(args.dice_from)) if args.dice_from else {}
    if dice:
        label = f"({dice.pop('_minutes'):g} min)"
        for r in rows:
            d = dice.get(r["name"], {})
            r[f"liver Dice {label}"], r[f"tumour Dice {label}"] = d.get("liver"), d.get("tumour")
        extra += [f"liver Dice {label}", f"tumour Dice {label}"]
        print(f"Dice: held-out IRCADb patient 17 after the same short training per model, from {args.dice_from} "
              "(bench/zoo_quality.py)")
    print()
    print(format_models_table(rows, extra=tuple(extra)))
    return 0


def zoo_dice(path: Path) -> dict:
    """``{model: {"liver", "tumour"}}`` per-case Dice from bench/zoo_quality.py's JSON (empty when absent)."""
    import json

    if not path.exists():
        print(f"(no {path}: run bench/zoo_quality.py for the Dice columns)")
        return {}
    report = json.loads(path.read_text())
    out: dict = {"_minutes": float(report.get("minutes", 0))}
    for r in report.get("runs", []):
        case = next(iter((r.get("cases") or {}).values()), None) if r.get("ok") else None
        if case:
            out[r["model"]] = {"liver": case["liver"]["dice"],
                               "tumour": case["tumour"]["dice"] if case.get("tumour") else None}
    return out


if __name__ == "__main__":
    sys.exit(main())
