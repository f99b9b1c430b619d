#!/usr/bin/env python
"""int8 against fp32: label drift and model speed of ``flexunet export --int8`` for a trained model.

    .venv/bin/python bench/int8_drift.py demo_run/train_eval_infer.config \\
        --cases demo_run/cases/phantom_006 demo_run/cases/phantom_007 [--weights W] [--report-dir bench/reports]

For each case folder (``image.nii.gz`` + ``label.nii.gz``) it segments the volume with the eager fp32
model and with the int8 ONNX export (onnxruntime), both through ``flexunet.VolumePredictor`` (postprocessing
included), and reports each one's Dice against the truth, their difference, and the voxels that differ.
Speed: the model alone on 8 slices at the model's size, eager fp32 / eager bf16 / onnxruntime fp32 /
onnxruntime int8, in interleaved rounds.  The int8 calibration images are the config's ``[valid]`` (else
``[train]``) images, as ``flexunet export --int8`` takes them.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import _common as C  # noqa: E402

C.ensure_src_on_path()


def dice(a, b):
    import numpy as np

    s = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return None if s == 0 else round(2.0 * int(np.count_nonzero(a & b)) / s, 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--cases", nargs="+", required=True, help="case folders with image.nii.gz and label.nii.gz")
    ap.add_argument("--weights", default=None, help="one checkpoint (default: [infer] weights' first, or best.pt)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config overrides")
    ap.add_argument("--report-dir", default=None, help="also write int8_drift.json/.md here (e.g. bench/reports)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import flexunet
    from flexunet.infer.common import load_predictor, weight_paths
    from flexunet.infer.onnx import OnnxModule, calibration_images, export_onnx
    from flexunet.io.volumes import read_volume

    info = C.print_header("int8 against fp32", argv=argv)
    cfg = flexunet.load_config(args.config, args.set)
    weights = str(args.weights or weight_paths(cfg)[0])
    res = {"command": info["command"], "machine": C.machine_line(info["machine"]), "weights": weights, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="flexunet-int8-") as tmp:
        onnx_int8 = Path(tmp) / "model_int8.onnx"
        t0 = time.perf_counter()
        export_onnx(cfg, [weights], onnx_int8, int8=True)
        res["export_int8_s"] = round(time.perf_counter() - t0, 1)
        fp32 = flexunet.VolumePredictor(cfg, [weights], predictor=load_predictor(cfg, [weights], precision="32"))
        int8 = flexunet.VolumePredictor(cfg, [str(onnx_int8)])
        for case in map(Path, args.cases):
            truth = np.asarray(read_volume(case / "label.nii.gz", label=True).array)
            a = fp32.segment(case / "image.nii.gz").labels
            b = int8.segment(case / "image.nii.gz").labels
            row = {"voxels_differ": int(np.count_nonzero(a != b))}
            for name, cls in (("liver", lambda x: x >= 1), ("tumour", lambda x: x == 2)):
                da, db = dice(cls(a), cls(truth)), dice(cls(b), cls(truth))
                row[f"{name}_dice_fp32"], row[f"{name}_dice_int8"] = da, db
                row[f"{name}_drift"] = None if da is None or db is None else round(db - da, 4)
            res["cases"][case.name] = row
            print(case.name, row, flush=True)
        # the model alone, interleaved
        images, _ = calibration_images(cfg, limit=8)
        x = torch.from_numpy(images[:8])
        paths = {"eager fp32": load_predictor(cfg, [weights], precision="32"),
                 "eager bf16": load_predictor(cfg, [weights], precision="bf16"),
                 "onnxruntime fp32": load_predictor(cfg, [weights], runtime="onnxruntime"),
                 "onnxruntime int8": load_predictor(cfg, [str(onnx_int8)])}
        times = {k: [] for k in paths}
        for p in paths.values():
            p.probs(x)
        for _ in range(args.rounds):
            for k, p in paths.items():
                s = time.perf_counter()
                p.probs(x)
                times[k].append(time.perf_counter() - s)
        res["model_s_per_8_slices"] = {k: round(min(v), 3) for k, v in times.items()}
    rows = [[c, r["liver_dice_fp32"], r["liver_dice_int8"], r["liver_drift"], r["tumour_dice_fp32"],
             r["tumour_dice_int8"], r["tumour_drift"], r["voxels_differ"]] for c, r in res["cases"].items()]
    base = res["model_s_per_8_slices"]["eager fp32"]
    srows = [[k, v, round(base / v, 2)] for k, v in res["model_s_per_8_slices"].items()]
    text = "\n".join([
        "# int8 against fp32", "", f"Command: `{res['command']}`  ", f"Machine: {res['machine']}", "",
        C.md_table(["case", "liver Dice fp32", "liver Dice int8", "drift", "tumour Dice fp32", "tumour Dice int8",
                    "drift", "voxels differ"], rows), "",
        f"The model alone, 8 slices, best of {args.rounds} interleaved rounds:", "",
        C.md_table(["path", "seconds", "speed-up vs eager fp32"], srows)])
    print(text)
    C.save_report("int8_drift", res, text, C.RESULTS_DIR, args.report_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
