"""The GPU path, checked on a machine with a CUDA GPU: training steps, the demo, infer-volume.

    python bench/gpu_check.py --out DIR [--skip-demo]

1. Training-step throughput of the demo's model (256x256, 3 channels, batch 16; forward, loss,
   backward, AdamW step) on the GPU in fp32 and under bf16 autocast, and on the machine's CPU
   (all its cores), side by side in one run: images per second.
2. ``flexunet demo`` as a user runs it (``[train] accelerator = auto`` and ``precision = auto``
   pick the GPU and bf16-mixed, ``[infer] device = auto`` the GPU): its Dice and step times.
3. ``flexunet infer-volume`` of the demo's test phantoms with ``[infer] device`` cuda and cpu:
   seconds, and how far the two label volumes agree (they differ only by floating-point rounding).

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``; prints both.  Fails (exit 1) when no GPU is
visible, a training loss is not finite, or the GPU and CPU label volumes disagree on more than 0.1%
of the voxels.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, ensure_src_on_path, md_table, print_header, save_results, timed_loop

ensure_src_on_path()


def step_throughput(device: str, autocast_bf16: bool, batch: int = 16, seconds: float = 8.0) -> dict:
    """Training steps per second of the demo model on ``device``; images per second."""
    import torch

    from flexunet.config import load_config
    from flexunet.demo import DEMO_CONFIG
    from flexunet.models import create_model
    from flexunet.train.losses import build_loss

    cfg = load_config(DEMO_CONFIG)
    torch.manual_seed(0)
    model = create_model(cfg.model).to(device).to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.model.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    h, w = cfg.model.image_height, cfg.model.image_width
    x = torch.rand(batch, cfg.model.image_channels, h, w, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, cfg.model.num_classes, (batch, h, w), device=device)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=autocast_bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    r = timed_loop(step, n_min=5, t_floor=seconds, t_cap=3 * seconds, warmup=3, items_per_call=batch)
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    return {"device": device, "bf16_autocast": autocast_bf16, "batch": batch, "images_per_s": r["rate"],
            "s_per_step": r["s_per_call"], "steps": r["calls"], "losses_finite": finite}


def run_demo_on_gpu(work: Path) -> dict:
    from flexunet.demo import run_demo

    t0 = time.perf_counter()
    res = run_demo(str(work / "demo_run"), quiet=True)
    from flexunet.config import load_config
    from flexunet.infer.precision import trainer_precision

    hist = json.loads((work / "demo_run" / "history.json").read_text())
    t = load_config(work / "demo_run" / "train_eval_infer.config").train
    agg = res["aggregate"]
    return {"seconds": round(time.perf_counter() - t0, 1), "epochs": len(hist.get("val_loss", [])),
            "liver_dice": agg["liver"]["dice_mean"], "tumour_dice": agg["tumour"]["dice_mean"],
            "tumour_dice_global": agg["tumour"]["dice_global"], "verdict": res["verdict"],
            "precision": trainer_precision(t.precision, t.accelerator)}


def infer_volume_devices(demo_dir: Path, work: Path, gpu: str = "cuda") -> dict:
    """infer-volume of the demo's test phantoms on ``gpu`` and on the cpu: seconds and agreement."""
    import nibabel as nib
    import numpy as np

    from flexunet.cli import main
    from flexunet.config import load_config

    cfg_path = demo_dir / "train_eval_infer.config"
    cfg = load_config(cfg_path)
    inputs = [str(demo_dir / "cases" / c / "image.nii.gz") for c in cfg.slice.test_cases]
    out = {}
    for label, dev in (("gpu", gpu), ("cpu", "cpu"), ("gpu", gpu)):  # the GPU twice: the first pays CUDA's start
        dst = work / f"pred_{label}"
        shutil.rmtree(dst, ignore_errors=True)
        t0 = time.perf_counter()
        rc = main(["--quiet", "infer-volume", str(cfg_path), *inputs, "--output", str(dst),
                   "--set", f"infer.device={dev}"])
        s = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"infer-volume on {dev} failed with exit code {rc}")
        out.setdefault(label, []).append(round(s, 2))
    agree = []
    for p in sorted((work / "pred_gpu").glob("*.nii.gz")):
        a = np.asarray(nib.load(p).dataobj)
        b = np.asarray(nib.load(work / "pred_cpu" / p.name).dataobj)
        agree.append({"case": p.name, "voxels_differing": int((a != b).sum()), "voxels": int(a.size)})
    return {"seconds": out, "voxels": sum(a["voxels"] for a in agree), "agreement": agree,
            "gpu_warm_vs_cpu": round(out["cpu"][0] / out["gpu"][-1], 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    ap.add_argument("--skip-demo", action="store_true", help="steps only (no demo, no infer-volume)")
    args = ap.parse_args(argv)
    import torch

    report = print_header("FlexUNet GPU check", threads=torch.get_num_threads(), argv=argv)
    if not torch.cuda.is_available():
        print("no CUDA device is visible to torch; this check needs a GPU", file=sys.stderr)
        return 1
    report["gpu"] = {"name": torch.cuda.get_device_name(0), "torch": torch.__version__,
                     "bf16": torch.cuda.is_bf16_supported()}
    print(f"gpu: {report['gpu']}", flush=True)
    steps = [step_throughput("cuda", False), step_throughput("cuda", True), step_throughput("cpu", False, seconds=10)]
    report["train_steps"] = steps
    ok = all(s["losses_finite"] for s in steps)
    cpu_rate = steps[2]["images_per_s"]
    rows = [[s["device"], "bf16 autocast" if s["bf16_autocast"] else "fp32", s["batch"], s["images_per_s"],
             round(s["images_per_s"] / cpu_rate, 1)] for s in steps]
    md = [f"- command: `{report['command']}`", f"- gpu: {report['gpu']}", "",
          md_table(["device", "precision", "batch", "training images/s", "x CPU"], rows)]
    if not args.skip_demo:
        work = Path(tempfile.mkdtemp(prefix="flexunet-gpu-"))
        report["demo"] = run_demo_on_gpu(work)
        report["infer_volume"] = infer_volume_devices(work / "demo_run", work)
        d, iv = report["demo"], report["infer_volume"]
        md += ["", f"- `flexunet demo` on the GPU: {d['seconds']} s, {d['epochs']} epochs, precision "
               f"{d['precision']}; liver Dice {d['liver_dice']:.3f}, tumour Dice {d['tumour_dice']:.3f} "
               f"(global {d['tumour_dice_global']:.3f})",
               f"- infer-volume of the two test phantoms: GPU {iv['seconds']['gpu']} s (first, then warm), "
               f"CPU {iv['seconds']['cpu']} s; CPU / warm GPU = {iv['gpu_warm_vs_cpu']}",
               "- voxels differing between the cuda and cpu labels: "
               + ", ".join(f"{a['case']} {a['voxels_differing']} of {a['voxels']}" for a in iv["agreement"])]
        ok = ok and all(a["voxels_differing"] <= 0.001 * a["voxels"] for a in iv["agreement"])
    report["ok"] = ok
    text = "\n".join(md) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    save_results("gpu_check", report, args.out / "gpu_check.json")
    (args.out / "gpu_check.md").write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
