#!/usr/bin/env python
"""Where the time of one ``flexunet infer-volume`` call goes, and which runtime is fastest, on this machine.

    .venv/bin/python bench/infer_stages.py                  # 512x512x200 CT, ~10 min on 2 cores
    .venv/bin/python bench/infer_stages.py --slices 24 --repeats 1 --variants eager-32,onnxruntime   # smoke

1. **End to end, as a user runs it**: ``python -m flexunet --quiet infer-volume CONFIG ct.nii.gz --output D``
   in a fresh process per variant (runtime x precision: ``eager-32``, ``eager-bf16``, ``onnxruntime``,
   ``compile``), interleaved over ``--repeats`` rounds so a change of machine load hits every variant alike;
   the wall time includes the interpreter's start, the imports, the model load, reading, predicting,
   postprocessing and writing.  Peak RSS is the command's own (GNU ``time``).  Each variant's labels are
   compared with ``eager-32``'s (Dice of liver and tumour; voxels that differ).
2. **Stages**, in one fresh process (``--worker stages``) that runs the library's own functions one by one:
   interpreter start (``python -c pass``, timed by the parent), imports, model load (``VolumePredictor``),
   read and decompress (``read_volume``), reorient and window (``prepare_volume``), then per batch of
   slices the 2.5D stacking and resizing to the model, the model, and the resize back with argmax, then
   postprocessing (``postprocess_volume``, applied to the case's true label volume too, since a random
   model's labels are not a liver) and the NIfTI write.  The stage loop's labels are checked equal to
   ``predict_volume``'s, so the split describes the code users run.

The model is ``projects/liver-tumor-ct``'s config trained for ``--phantom-minutes`` (3) on 8 generated
phantoms, unless ``--weights`` is given (``--phantom-minutes 0``: random weights).  Both the model's speed
and postprocessing depend on the weights: a random model's activations and labels are unlike a trained
one's.  Postprocessing is also timed on the case's true label volume.  The CT is a phantom
stored LAS (not canonical), as ``bench/speed.py`` writes it.

Output: a table (printed), ``<out>/infer_stages.json`` and ``.md``; ``--report-dir bench/reports`` also
writes the summary there for the docs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import _common as C  # noqa: E402

C.ensure_src_on_path()

REPO = BENCH.parent
CT_CONFIG = REPO / "projects" / "liver-tumor-ct" / "train_eval_infer.config"
SEED_CONFIG = REPO.parent / "shared" / "seed" / "train_eval_infer.config"
TF_PYTHON = Path("/tmp/tf-venv/bin/python")
VARIANTS = {  # name -> --set overrides
    "eager-32": ["infer.runtime='eager'", "train.precision='32'"],
    "eager-bf16": ["infer.runtime='eager'", "train.precision='bf16'"],
    "onnxruntime": ["infer.runtime='onnxruntime'", "train.precision='32'"],
    "compile": ["infer.runtime='compile'", "train.precision='32'"],
}
DEFAULT_VARIANTS = "eager-32,eager-bf16,onnxruntime"


def train_on_phantoms(work: Path, minutes: float) -> Path:
    """The CT config trained for ``minutes`` on 8 generated phantoms (7 train, 1 valid): a model whose labels
    look like a liver, which is what speed and memory of inference depend on (random weights give
    labels everywhere and ill-conditioned activations)."""
    from flexunet import api

    root = work / "phantom_model"
    best = root / "models" / "best.pt"
    if best.exists():
        return best
    root.mkdir(parents=True, exist_ok=True)
    cfg_path = root / "train_eval_infer.config"
    cfg_path.write_text(CT_CONFIG.read_text())
    api.write_phantoms(root / "cases", cases=8, seed=0)
    names = [f"phantom_{i:03d}" for i in range(8)]
    overrides = [f"slice.train_cases={names[:7]!r}", f"slice.valid_cases={names[7:]!r}", "slice.test_cases=[]",
                 f"train.max_time_minutes={minutes}", "train.epoch_change_infer=False", "train.num_workers=1"]
    cfg = api.load_config(cfg_path, overrides)
    api.slice_cases(cfg, quiet=True)
    api.train(cfg, quiet=True)
    return best


def prepare(work: Path, slices: int, weights: str | None) -> tuple[Path, Path, Path]:
    """The CT (NIfTI, LAS), its true labels, and a config whose model_dir holds the weights to run."""
    import nibabel as nib
    import numpy as np

    from flexunet.api import load_config
    from flexunet.data.phantom import generate_phantom
    from flexunet.models import create_model
    from flexunet.models.checkpoint import save_weights

    work.mkdir(parents=True, exist_ok=True)
    ct, truth = work / "ct.nii.gz", work / "truth.nii.gz"
    if not ct.exists():
        spacing = (0.75, 0.75, 1.5)
        img, lab, affine = generate_phantom((0, 0), shape=(512, 512, slices), spacing=spacing)
        affine = np.array(affine, dtype=np.float64)
        affine[:, 0] *= -1  # stored LAS: i runs right -> left, so the reorientation round trip runs
        affine[0, 3] += spacing[0] * (512 - 1)
        nib.save(nib.Nifti1Image(np.asarray(img)[::-1].astype(np.int16), affine), str(truth.with_name("tmp.nii.gz")))
        nib.save(nib.Nifti1Image(np.asarray(lab)[::-1].astype(np.uint8), affine), str(truth))
        os.replace(truth.with_name("tmp.nii.gz"), ct)
    cfg_path = work / "train_eval_infer.config"
    text = CT_CONFIG.read_text()
    cfg_path.write_text(text)
    models = work / "models"
    models.mkdir(exist_ok=True)
    if weights:
        shutil.copyfile(weights, models / "best.pt")
    elif not (models / "best.pt").exists():
        import torch

        cfg = load_config(cfg_path, ["train.model_dir='./models/'"])
        torch.manual_seed(0)
        save_weights(models / "best.pt", create_model(cfg.model), cfg.model)
    return ct, truth, cfg_path


def run_process(argv: list[str]) -> dict:
    """Wall time and the command's own peak RSS.

    The command runs under GNU ``time`` where it exists: a process forked from this one would inherit
    this process's high-water mark (the phantom training here), one forked from ``time`` does not.
    """
    use_time = Path("/usr/bin/time").is_file()
    cmd = ["/usr/bin/time", "-f", "FLEXUNET_MAXRSS_KB %M", *argv] if use_time else list(argv)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = None
    for line in proc.stderr.splitlines():
        if line.startswith("FLEXUNET_MAXRSS_KB "):
            rss = round(int(line.split()[1]) / 1024.0, 1)
    return {"wall_s": round(wall, 2), "peak_rss_mb": rss, "returncode": proc.returncode,
            "stderr_tail": proc.stderr[-800:] if proc.returncode else ""}


def dice(a, b) -> float | None:
    import numpy as np

    s = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return None if s == 0 else round(2.0 * int(np.count_nonzero(a & b)) / s, 5)


def agreement(ref_path: Path, path: Path) -> dict:
    import nibabel as nib
    import numpy as np

    a, b = np.asarray(nib.load(ref_path).dataobj), np.asarray(nib.load(path).dataobj)
    return {"voxels_differ": int(np.count_nonzero(a != b)), "liver_dice": dice(a >= 1, b >= 1),
            "tumour_dice": dice(a == 2, b == 2)}


# --------------------------------------------------------------------------- the stage worker


def worker_stages(args) -> dict:
    """Runs in a fresh process: the stages of one infer-volume call, timed one by one."""
    t_start = time.perf_counter()
    import numpy as np
    import torch
    import torch.nn.functional as F

    from flexunet.api import load_config
    from flexunet.data.images import normalize_image
    from flexunet.data.slicer import from_view, slice_channels
    from flexunet.infer.volume import VolumePredictor, postprocess_volume, predict_volume, prepare_volume
    from flexunet.io.volumes import read_volume, write_nifti
    from flexunet.metrics.volumetry import voxel_volume_ml

    t = {"imports": time.perf_counter() - t_start}
    overrides = VARIANTS[args.variant]
    s = time.perf_counter()
    cfg = load_config(args.config, overrides)
    vp = VolumePredictor(cfg)
    t["model_load"] = time.perf_counter() - s
    s = time.perf_counter()
    vol = read_volume(args.volume)
    t["read_decompress"] = time.perf_counter() - s
    s = time.perf_counter()
    prep = prepare_volume(vol, vp.settings.hu_window)
    t["reorient_window"] = time.perf_counter() - s
    st = vp.settings
    windowed = prep.windowed
    nz = windowed.shape[2]
    out = np.zeros(windowed.shape, np.uint8)
    t["stack_resize_in"] = t["model"] = t["resize_out_argmax"] = 0.0
    size = tuple(st.image_size)
    for start in range(0, nz, st.batch_size):
        a = time.perf_counter()
        ks = range(start, min(start + st.batch_size, nz))
        imgs = [normalize_image(slice_channels(windowed, k, st.channels, st.context).astype(np.float32) / 255.0,
                                st.standardize) for k in ks]
        x = torch.from_numpy(np.stack(imgs))
        native = x.shape[2:]
        if tuple(native) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        b = time.perf_counter()
        probs = vp.predictor.probs(x)
        if st.tta_context_flip:
            probs = (probs + vp.predictor.probs(x.flip(1))) / 2
        c = time.perf_counter()
        if tuple(native) != size:
            probs = F.interpolate(probs, size=native, mode="bilinear", align_corners=False)
        labels = probs.argmax(1).to(torch.uint8).cpu().numpy()
        for k, lab in zip(ks, labels):
            out[:, :, k] = from_view(lab)
        d = time.perf_counter()
        t["stack_resize_in"] += b - a
        t["model"] += c - b
        t["resize_out_argmax"] += d - c
    same = bool(np.array_equal(out, predict_volume(vp.predictor, windowed, st)))
    voxel_mm3 = voxel_volume_ml(prep.affine) * 1000.0
    s = time.perf_counter()
    post = postprocess_volume(out, windowed, prep.spacing, voxel_mm3, st)
    t["postprocess"] = time.perf_counter() - s
    truth = np.asarray(prep.undo.to_canonical(np.asarray(read_volume(args.truth, label=True).array)))
    s = time.perf_counter()
    postprocess_volume(truth.astype(np.uint8), windowed, prep.spacing, voxel_mm3, st)
    t["postprocess_true_labels"] = time.perf_counter() - s
    s = time.perf_counter()
    labels = np.ascontiguousarray(prep.undo(post)).astype(np.uint8)
    write_nifti(labels, Path(args.outdir) / "stages.nii.gz", affine=prep.affine, header=prep.header, dtype=np.uint8)
    t["undo_write"] = time.perf_counter() - s
    return {"stages_s": {k: round(v, 3) for k, v in t.items()}, "loop_equals_predict_volume": same,
            "slices": int(nz), "threads": torch.get_num_threads(), "peak_rss_mb": round(C.peak_rss_mb(), 1)}


# --------------------------------------------------------------------------- the seed model against the original


def seed_vs_tf(work: Path, ct: Path, repeats: int, threads: int = 2) -> dict:
    """The same CT through the seed config's model at 512²: ``flexunet infer-volume`` as a process (fp32 and
    bf16) against the original's TensorFlow model predicting the same slices (``tf_seed_predict.py``)."""
    import numpy as np

    from flexunet.api import load_config
    from flexunet.data.slicer import slice_channels
    from flexunet.infer.volume import VolumeSettings, prepare_volume
    from flexunet.io.volumes import read_volume
    from flexunet.models import create_model
    from flexunet.models.checkpoint import save_weights

    seed = work / "seed"
    (seed / "models").mkdir(parents=True, exist_ok=True)
    cfg_path = seed / "train_eval_infer.config"
    cfg_path.write_text(SEED_CONFIG.read_text())
    cfg = load_config(cfg_path)
    if not (seed / "models" / "best.pt").exists():
        import torch

        torch.manual_seed(0)
        save_weights(seed / "models" / "best.pt", create_model(cfg.model), cfg.model)
    st = VolumeSettings.from_config(cfg)
    npy = seed / "slices.npy"
    if not npy.exists():
        prep = prepare_volume(read_volume(ct), st.hu_window)
        stack = np.stack([np.moveaxis(slice_channels(prep.windowed, k, st.channels, st.context), 0, -1)
                          for k in range(prep.windowed.shape[2])])
        np.save(npy, stack)
    out: dict = {"flexunet-32": [], "flexunet-bf16": [], "tensorflow": []}
    py = sys.executable
    for _ in range(repeats):
        for name, prec in (("flexunet-32", "32"), ("flexunet-bf16", "bf16")):
            run = run_process([py, "-m", "flexunet", "--quiet", "infer-volume", str(cfg_path), str(ct), "--output",
                               str(seed / f"out_{prec}"), "--set", f"train.precision='{prec}'"])
            out[name].append(run)
            print(f"seed model, {name}: {run['wall_s']} s", flush=True)
        if TF_PYTHON.is_file():
            tf = C.run_result_subprocess([str(TF_PYTHON), str(BENCH / "tf_seed_predict.py"), str(npy), str(threads)],
                                         timeout=3600)
            out["tensorflow"].append(tf)
            print(f"seed model, tensorflow: {tf.get('wall_s')} s ({tf.get('error') or tf.get('predict_s')})", flush=True)
        else:
            out["tensorflow"].append({"skipped": f"{TF_PYTHON} not found (python3 -m venv /tmp/tf-venv && "
                                                 "/tmp/tf-venv/bin/pip install tensorflow-cpu)"})
    return out


def seed_report(seed: dict) -> str:
    rows = []
    tf_walls = [r["wall_s"] for r in seed.get("tensorflow", []) if "wall_s" in r and "error" not in r]
    tf_best = min(tf_walls) if tf_walls else None
    for name, runs in seed.items():
        walls = [r["wall_s"] for r in runs if r.get("returncode", 0) == 0 and "wall_s" in r and "error" not in r]
        if not walls:
            rows.append([name, (runs[0].get("skipped") or runs[0].get("error") or "failed")[:80] if runs else "-",
                         "", "", ""])
            continue
        best = min(walls)
        extra = ""
        if name == "tensorflow":
            r = min((r for r in runs if "wall_s" in r and "error" not in r), key=lambda r: r["wall_s"])
            extra = f"import {r.get('import_s')} s, build {r.get('build_s')} s, predict {r.get('predict_s')} s"
        rows.append([name, best, round(tf_best / best, 2) if tf_best else "", runs[0].get("peak_rss_mb", ""), extra])
    return "\n".join(["The seed model (512², 8 levels, 9x9; random weights) on the same CT, as processes: "
                      "`flexunet infer-volume` with the seed config against the original's TensorFlow model "
                      "predicting the same slices one by one (`bench/tf_seed_predict.py`; its file reading and "
                      "PNG writing left out):", "",
                      C.md_table(["", "best s", "speed-up vs TF", "peak RSS MB", "TF's parts"], rows)])


# --------------------------------------------------------------------------- report


STAGE_NAMES = [("interpreter", "interpreter start (`python -c pass`)"), ("imports", "imports"),
               ("model_load", "model load"), ("read_decompress", "read and decompress"),
               ("reorient_window", "reorient and HU window"), ("stack_resize_in", "2.5D stacking, resize in"),
               ("model", "model"), ("resize_out_argmax", "resize back, argmax"),
               ("postprocess", "postprocessing (the model's labels)"),
               ("postprocess_true_labels", "postprocessing (true labels, for scale)"),
               ("undo_write", "reorient back, NIfTI write")]


def report(res: dict) -> str:
    lines = [f"# infer-volume: stages and runtimes, {res['shape']}", "",
             f"Command: `{res['command']}`  ", f"Machine: {res['machine']}  ",
             f"Weights: {res.get('weights')}", ""]
    rows = []
    for name, v in res["e2e"].items():
        walls = [r["wall_s"] for r in v["runs"] if r["returncode"] == 0]
        agree = v.get("agreement") or {}
        rss = [r["peak_rss_mb"] for r in v["runs"] if r.get("peak_rss_mb") is not None]
        rows.append([name, min(walls) if walls else "failed", round(sorted(walls)[len(walls) // 2], 2) if walls else "",
                     max(rss) if rss else "", agree.get("voxels_differ", ""),
                     agree.get("liver_dice", ""), agree.get("tumour_dice", "")])
    if rows:
        lines += ["End to end (`python -m flexunet --quiet infer-volume ...`, one fresh process per run, "
                  f"{res['repeats']} interleaved rounds):", "",
                  C.md_table(["variant", "best s", "median s", "peak RSS MB", "voxels != eager-32",
                              "liver Dice vs eager-32", "tumour Dice vs eager-32"], rows), ""]
    for name, st in res["stages"].items():
        stages = dict(st.get("stages_s", {}))
        stages["interpreter"] = res.get("interpreter_s")
        srows = [[label, stages.get(key)] for key, label in STAGE_NAMES if stages.get(key) is not None]
        counted = sum(v for k, v in stages.items() if v is not None and k != "postprocess_true_labels")
        srows.append(["sum (without the true-label row)", round(counted, 2)])
        lines += [f"Stages of `{name}` (`--worker stages`; loop labels equal `predict_volume`'s: "
                  f"{st.get('loop_equals_predict_volume')}):", "", C.md_table(["stage", "seconds"], srows), ""]
    if res.get("seed_vs_tf"):
        lines += [seed_report(res["seed_vs_tf"]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the end-to-end runs")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--stages-of", default="eager-32", help="variants whose stages are profiled (comma list)")
    ap.add_argument("--weights", default=None, help="a trained best.pt of the liver-tumor-ct config")
    ap.add_argument("--phantom-minutes", type=float, default=3.0,
                    help="without --weights: train the CT config this long on generated phantoms first "
                         "(0: random weights)")
    ap.add_argument("--seed-vs-tf", action="store_true",
                    help="also the seed model at 512² against the original's TensorFlow predict (needs /tmp/tf-venv)")
    ap.add_argument("--out", default=str(C.RESULTS_DIR / "infer_stages"))
    ap.add_argument("--report-dir", default=None, help="also write the summary JSON/MD here (e.g. bench/reports)")
    ap.add_argument("--worker", choices=("stages",), help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--volume", help=argparse.SUPPRESS)
    ap.add_argument("--truth", help=argparse.SUPPRESS)
    ap.add_argument("--outdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "stages":
        print("RESULT " + json.dumps(worker_stages(args)), flush=True)
        return 0

    out = Path(args.out)
    work = out / f"work_{args.slices}"
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")
    info = C.print_header("infer-volume stages and runtimes", argv=argv)
    weights = args.weights
    if not weights and args.phantom_minutes > 0:
        weights = str(train_on_phantoms(out, args.phantom_minutes))
    ct, truth, cfg_path = prepare(work, args.slices, weights)
    res_weights = weights or "random (seed 0)"
    res = {"command": info["command"], "machine": C.machine_line(info["machine"]), "shape": f"512x512x{args.slices}",
           "repeats": args.repeats, "e2e": {v: {"runs": []} for v in variants}, "stages": {},
           "weights": res_weights}
    py = sys.executable
    res["interpreter_s"] = min(run_process([py, "-c", "pass"])["wall_s"] for _ in range(3))
    for r in range(args.repeats):
        for v in variants:
            dst = work / f"out_{v}"
            argv_v = [py, "-m", "flexunet", "--quiet", "infer-volume", str(cfg_path), str(ct), "--output", str(dst)]
            for o in VARIANTS[v]:
                argv_v += ["--set", o]
            run = run_process(argv_v)
            res["e2e"][v]["runs"].append(run)
            print(f"[round {r + 1}] {v}: {run['wall_s']} s, peak RSS {run['peak_rss_mb']} MB"
                  + (f", FAILED: {run['stderr_tail']}" if run["returncode"] else ""), flush=True)
    ref = work / "out_eager-32" / "ct.nii.gz"
    for v in variants:
        mine = work / f"out_{v}" / "ct.nii.gz"
        if ref.exists() and mine.exists():
            res["e2e"][v]["agreement"] = agreement(ref, mine)
    for v in [s.strip() for s in args.stages_of.split(",") if s.strip()]:
        got = C.run_result_subprocess([py, str(Path(__file__).resolve()), "--worker", "stages", "--variant", v,
                                       "--config", str(cfg_path), "--volume", str(ct), "--truth", str(truth),
                                       "--outdir", str(work)], timeout=3600)
        res["stages"][v] = got
        print(f"stages of {v}: {got.get('stages_s') or got}", flush=True)
    if args.seed_vs_tf:
        res["seed_vs_tf"] = seed_vs_tf(work, ct, args.repeats)
    text = report(res)
    print(text)
    C.save_report("infer_stages", res, text, out, args.report_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
