#!/usr/bin/env python
"""FlexUNet speed on this CPU, as ratios to the original (TensorFlowFlexUNet rebuilt in Keras), same run.

What it measures (all in one sitting, so the ratios are fair even when absolute figures are not):

1. Train images/s (batch 2, Adam, CE loss, gradient value clipping, one optimizer step incl. backward,
   like ``shared/tools/tf_anchor.py``) and infer slices/s (batch 4, ``Predictor.probs`` under
   ``torch.inference_mode``, softmax included) for three configs:

   * ``A`` the seed config (512², 3 ch, 3 classes, 16 filters, 9x9, 8 layers, no BN),
   * ``B`` 256², 6 layers, 3x3 (tf_anchor's B),
   * ``R`` the recommended config file (``projects/liver-tumor-ct/train_eval_infer.config``:
     B plus BatchNorm), compared with TF's B;

   on the paths ``fp32`` (NCHW), ``fp32_cl`` (channels_last), ``bf16_cl`` (bf16 autocast + channels_last,
   only where the CPU has native bf16: elsewhere bf16 is a 10-70x *slowdown*), ``*_fused`` (BatchNorm
   folded into the convolutions, inference only, R only) and ``torch.compile`` of the best eager path (in a
   subprocess, so a failure or a hang cannot stop the run).  The paths of one config are timed in
   interleaved rounds (``--rounds``), so a change of machine load hits all of them alike.  The TF anchor
   runs for A and B in subprocesses in the same run (``--skip-tf`` skips it; ``--tf-repeats 2`` runs it
   again after FlexUNet's runs and shows the spread).
2. Threads: the best eager path of R in fresh processes with N threads, N threads and
   ``OMP_WAIT_POLICY=PASSIVE``, and 1 thread (PyTorch's OpenMP threads spin while waiting, which costs
   a lot when other processes compete for the cores; ``--omp-passive`` runs the whole benchmark so).
3. Label drift of the faster paths against fp32 on phantom CT slices (:func:`label_agreement`, also used
   by ``bench/quality.py``).  With random weights the figure is only indicative; pass ``--weights``.
4. ``flexunet infer-volume`` on a 512x512x200 CT as a user runs it, a fresh process per runtime and
   precision, and the stages of one call (imports, model load, read, window, stacking, model, resize and
   argmax, postprocessing, write): ``bench/infer_stages.py``, whose table is part of the report.
5. Peak RSS of training (``SegmentationModule`` + Lightning, batch 8, recommended config) per precision.
6. A markdown table for the README (command and machine on top), ``bench/results/speed.json`` and
   ``bench/results/speed.md`` (``--report JSON`` prints the table of a saved run again).

    .venv/bin/python bench/speed.py                 # full run, ~20 min on 2 busy cores
    .venv/bin/python bench/speed.py --quick         # smoke run, ~3 min idle / ~6 min busy (R and TF B)
    .venv/bin/python bench/speed.py --threads 1     # equal single threads: immune to OpenMP spinning
    .venv/bin/python bench/speed.py --skip-tf --configs R --weights models/best.pt
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

if "--omp-passive" in sys.argv:  # must precede the first import of torch (libgomp reads it once)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.ensure_src_on_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from flexunet.infer.precision import autocast, cpu_has_native_bf16  # noqa: E402
from flexunet.infer.predictor import fold_batchnorm  # noqa: E402

DEFAULT_RECOMMENDED = C.REPO_ROOT / "projects" / "liver-tumor-ct" / "train_eval_infer.config"
TF_ANCHOR = C.SHARED_DIR / "tools" / "tf_anchor.py"
TF_PYTHON = Path("/tmp/tf-venv/bin/python")

#: tf_anchor.py's configs, as FlexUNet [model] sections
BENCH_MODELS = {
    "A": dict(image_width=512, image_height=512, image_channels=3, num_classes=3, base_filters=16,
              base_kernels=(9, 9), num_layers=8, dropout_rate=0.04, dilation=(1, 1), normalization=False),
    "B": dict(image_width=256, image_height=256, image_channels=3, num_classes=3, base_filters=16,
              base_kernels=(3, 3), num_layers=6, dropout_rate=0.04, dilation=(1, 1), normalization=False),
}
CONFIG_TITLES = {"A": "A: seed, 512², 8 layers, 9x9", "B": "B: 256², 6 layers, 3x3",
                 "R": "R: recommended (B + BatchNorm)"}
#: the TF anchor each config is compared with
TF_FOR = {"A": "A", "B": "B", "R": "B"}

#: eager paths: name -> (channels_last, autocast mode); ``<path>_fused``: the same with each BatchNorm folded into
#: the convolution before it (inference only; :func:`flexunet.infer.predictor.fold_batchnorm`)
PATHS = {"fp32": (False, "32"), "fp32_cl": (True, "32"), "bf16_cl": (True, "bf16"), "bf16": (False, "bf16")}
PATHS.update({f"{k}_fused": v for k, v in list(PATHS.items())})
PATH_TITLES = {"fp32": "fp32 NCHW", "fp32_cl": "fp32 channels_last", "bf16_cl": "bf16 autocast + channels_last",
               "bf16": "bf16 autocast NCHW", "compile": "torch.compile", "tf": "TF anchor (original)"}
PATH_TITLES.update({f"{k}_fused": f"{v} + BN folded (infer only)" for k, v in list(PATH_TITLES.items())})
TRAIN_BATCH, INFER_BATCH = 2, 4
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- configs and models


def bench_config(name: str, recommended: str | os.PathLike = DEFAULT_RECOMMENDED):
    """Config ``A``/``B`` (tf_anchor's) or ``R`` (the recommended config file)."""
    from flexunet.config import config_from_dict, load_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "R":
            return load_config(recommended)
        return config_from_dict({"model": dict(BENCH_MODELS[name])}, source=f"<bench {name}>")


def build_model(cfg, seed: int = 0, weights: str | None = None) -> torch.nn.Module:
    from flexunet.models import create_model

    torch.manual_seed(seed)
    model = create_model(cfg.model)
    if weights:
        from flexunet.models.checkpoint import load_weights_into

        load_weights_into(model, weights, cfg.model.model)
    return model


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def make_train_step(model: torch.nn.Module, cfg, channels_last: bool, mode: str, batch: int = TRAIN_BATCH,
                    seed: int = 0, clipvalue: float = 0.4):
    """One optimizer step like tf_anchor's ``train_on_batch``: forward, CE, backward, clip by value, Adam."""
    m = cfg.model
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, m.image_channels, m.image_height, m.image_width, generator=g)
    y = torch.randint(0, m.num_classes, (batch, m.image_height, m.image_width), generator=g)
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.9, 0.999))
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(CPU, mode):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_value_(params, clipvalue)
        opt.step()
        return loss

    return step


def infer_input(cfg, batch: int = INFER_BATCH, seed: int = 1) -> torch.Tensor:
    m = cfg.model
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, m.image_channels, m.image_height, m.image_width, generator=g)


# --------------------------------------------------------------------------- realistic slices and drift


def realistic_batch(cfg, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, np.ndarray | None]:
    """``n`` CT-like slices at the model's input size, prepared exactly as ``infer-volume`` prepares them
    (HU window -> uint8 -> 2.5D channels -> [0, 1] -> optional standardisation), and their labels.

    Uses :mod:`flexunet.data.phantom` when present (slices through the liver, tumours included);
    otherwise smooth synthetic images and ``None`` labels.
    """
    from flexunet.data.images import normalize_image

    m = cfg.model
    size = (m.image_height, m.image_width)
    try:
        from flexunet.data.phantom import generate_phantom
        from flexunet.data.slicer import context_enabled, hu_to_uint8, slice_channels, to_view
    except ImportError:
        generate_phantom = None
    if generate_phantom is None:
        g = torch.Generator().manual_seed(seed)
        x = F.interpolate(torch.rand(n, m.image_channels, 16, 16, generator=g), size=size, mode="bicubic",
                          align_corners=False).clamp(0, 1)
        return x, None
    img, lab, _ = generate_phantom((seed, 0), shape=(size[1], size[0], 48))
    u8 = hu_to_uint8(img, cfg.slice.hu_window)
    zs = np.flatnonzero((lab > 0).any(axis=(0, 1)))
    if len(zs) == 0:
        zs = np.arange(lab.shape[2])
    ks = np.unique(np.linspace(zs[0], zs[-1], n).round().astype(int))
    context = context_enabled(m.image_channels, cfg.slice.context_slices)
    xs = [normalize_image(slice_channels(u8, int(k), m.image_channels, context).astype(np.float32) / 255.0,
                          m.input_normalize) for k in ks]
    x = torch.from_numpy(np.stack(xs)).float()
    truth = np.stack([to_view(lab[:, :, int(k)]) for k in ks]).astype(np.int64)
    if tuple(x.shape[2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        truth = None
    return x, truth


def _dice_per_class(a: np.ndarray, b: np.ndarray, num_classes: int) -> list[float | None]:
    out = []
    for c in range(num_classes):
        pa, pb = a == c, b == c
        s = int(pa.sum() + pb.sum())
        out.append(None if s == 0 else round(2.0 * float(np.logical_and(pa, pb).sum()) / s, 5))
    return out


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # constant-fold weights, pre-pack for oneDNN (inference only)
    return torch.compile(model)


def path_logits(model: torch.nn.Module, batch: torch.Tensor, path: str, chunk: int = 4) -> torch.Tensor:
    """fp32 logits of ``model`` (a copy is used; the model is not changed) on ``path``:
    an eager path of :data:`PATHS` or ``compile_<eager path>``."""
    compiled = path.startswith("compile_")
    eager = path[len("compile_"):] if compiled else path
    cl, mode = PATHS[eager]
    m = copy.deepcopy(model).eval()
    if eager.endswith("_fused"):
        m = fold_batchnorm(m)
    x = batch.float()
    if cl:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compiled:
        m = _compiled(m)
    outs = []
    ctx = torch.no_grad if compiled else torch.inference_mode
    with ctx():
        for i in range(0, x.shape[0], chunk):
            with autocast(CPU, mode):
                outs.append(m(x[i:i + chunk]).float())
    return torch.cat(outs)


def label_agreement(model: torch.nn.Module, batch: torch.Tensor, paths=("bf16_cl",), reference: str = "fp32_cl",
                    truth: np.ndarray | None = None) -> dict:
    """How much a faster path changes the labels: argmax of each path in ``paths`` vs ``reference``.

    ``model``: a registry model (not changed); ``batch``: float (N, C, H, W) prepared inputs;
    ``paths``: names in :data:`PATHS` or ``compile_<name>``; ``truth``: optional (N, H, W) labels.
    Returns ``{"reference", "n_pixels", "paths": {path: {pixel_agreement, changed_pixels,
    dice_vs_reference (per class), rel_logit_err, max_abs_prob_diff[, dice_vs_truth]}}}`` and, with
    ``truth``, the reference's own ``dice_vs_truth``.  Errors of one path are reported, not raised.
    """
    ref_logits = path_logits(model, batch, reference)
    k = ref_logits.shape[1]
    ref_lab = ref_logits.argmax(1).numpy()
    ref_prob = torch.softmax(ref_logits, 1)
    out = {"reference": reference, "n_pixels": int(ref_lab.size), "paths": {}}
    if truth is not None:
        out["reference_dice_vs_truth"] = _dice_per_class(ref_lab, truth, k)
    for p in paths:
        try:
            t0 = time.perf_counter()
            lg = path_logits(model, batch, p)
            lab = lg.argmax(1).numpy()
            r = {"pixel_agreement": round(float((lab == ref_lab).mean()), 6),
                 "changed_pixels": int((lab != ref_lab).sum()),
                 "dice_vs_reference": _dice_per_class(lab, ref_lab, k),
                 "rel_logit_err": round(float((lg - ref_logits).norm() / ref_logits.norm().clamp_min(1e-12)), 6),
                 "max_abs_prob_diff": round(float((torch.softmax(lg, 1) - ref_prob).abs().max()), 6),
                 "seconds": round(time.perf_counter() - t0, 2)}
            if truth is not None:
                r["dice_vs_truth"] = _dice_per_class(lab, truth, k)
        except Exception as exc:  # a path that fails is a finding, not a crash
            r = {"error": f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
        out["paths"][p] = r
    return out


# --------------------------------------------------------------------------- eager timings


class TrainBench:
    """One model and one Adam optimizer for all eager paths, switched between memory formats and
    autocast modes, so the paths can be timed in interleaved rounds without one model per path."""

    def __init__(self, base: torch.nn.Module, cfg, batch: int = TRAIN_BATCH, seed: int = 0, clipvalue: float = 0.4):
        m = cfg.model
        g = torch.Generator().manual_seed(seed)
        self.x0 = torch.rand(batch, m.image_channels, m.image_height, m.image_width, generator=g)
        self.y = torch.randint(0, m.num_classes, (batch, m.image_height, m.image_width), generator=g)
        self.model = copy.deepcopy(base).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=5e-5, betas=(0.9, 0.999))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.clipvalue = clipvalue
        self.set_path("fp32")

    def set_path(self, path: str) -> None:
        cl, self.mode = PATHS[path]
        fmt = torch.channels_last if cl else torch.contiguous_format
        self.model.to(memory_format=fmt)
        for state in self.opt.state.values():  # keep Adam's moments in the parameters' layout
            for k, v in state.items():
                if torch.is_tensor(v) and v.dim() == 4:
                    state[k] = v.contiguous(memory_format=fmt)
        self.x = self.x0.contiguous(memory_format=fmt)

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        with autocast(CPU, self.mode):
            logits = self.model(self.x)
        loss = F.cross_entropy(logits.float(), self.y)
        loss.backward()
        torch.nn.utils.clip_grad_value_(self.params, self.clipvalue)
        self.opt.step()
        return loss


def measure_eager(cfg, base: torch.nn.Module, paths: list[str], timing: dict, rounds: int = 2,
                  log=print) -> dict:
    """Train img/s and infer slices/s of ``base`` (copied) on each eager path, the paths interleaved in
    ``rounds`` rounds (each round: every path for ``t_floor/rounds`` s) so load changes hit all alike."""
    from flexunet.infer.predictor import Predictor

    rounds = max(1, int(rounds))
    per = dict(n_min=max(1, -(-timing["n_min"] // rounds)), t_floor=timing["t_floor"] / rounds,
               t_cap=timing["t_cap"] / rounds)
    warm_s = max(5.0, timing["t_floor"] / 2)
    out = {p: {"path": p, "train": [], "infer": []} for p in paths}
    for phase in ("train", "infer"):
        try:
            if phase == "train":
                phase_paths = [p for p in paths if not p.endswith("_fused")]
                tb = TrainBench(base, cfg)
                runners = {p: (lambda p=p: tb.set_path(p), tb.step) for p in phase_paths}
                items = TRAIN_BATCH
            else:
                phase_paths = list(paths)
                x = infer_input(cfg)
                preds = {p: Predictor(fold_batchnorm(copy.deepcopy(base)) if p.endswith("_fused")
                                      else copy.deepcopy(base),
                                      precision=PATHS[p][1], channels_last=PATHS[p][0]) for p in paths}
                runners = {p: (lambda: None, lambda pr=preds[p]: pr.probs(x)) for p in paths}
                items = INFER_BATCH
            for r in range(rounds):
                for p in phase_paths:
                    setup, fn = runners[p]
                    setup()
                    res = C.timed_loop(fn, items_per_call=items, warmup=2 if r == 0 else int(phase == "infer"),
                                       warmup_max_s=warm_s if r == 0 else 0.0, **per)
                    out[p][phase].append(res)
                    log(f"      {phase} {p} round {r + 1}/{rounds}: {res['rate']} /s (cpu {res['cpu_util']})")
        except Exception as exc:
            for p in paths:
                out[p][phase] = [{"error": f"{exc.__class__.__name__}: {str(exc)[:300]}"}]
        finally:
            tb = preds = runners = None  # free the models before the next phase
    for p in paths:
        for phase in ("train", "infer"):
            parts = out[p][phase]
            if not parts:
                out[p][phase] = {"skipped": "inference only"}
                continue
            out[p][phase] = parts[0] if "error" in parts[0] else C.merge_loops(parts)
        if "infer" in out[p] and "rate" in out[p]["infer"]:
            out[p]["infer"]["predictor_mode"] = PATHS[p][1]
    return out


def combine_tf_runs(runs: list[dict]) -> dict:
    """Several tf_anchor.py runs of one config (before and after FlexUNet's runs): mean seconds per step
    and per batch, the rates from them, the largest peak RSS, and the spread of the rates."""
    ok = [r for r in runs if "train_img_s" in r]
    if not ok:
        return dict(runs[-1])
    out = dict(ok[0])
    if len(runs) == 1:
        return out
    for key, rate, batch in (("train_s_per_step", "train_img_s", TRAIN_BATCH),
                             ("infer_s_per_batch", "infer_slices_s", INFER_BATCH)):
        vals = [r[key] for r in ok if key in r]
        if vals:
            out[key] = round(sum(vals) / len(vals), 4)
            out[rate] = round(batch / out[key], 4)
            rates = [r[rate] for r in ok if rate in r]
            out[f"{rate}_runs"] = rates
            out[f"{rate}_spread"] = round(max(rates) / min(rates), 2)
    for key in ("train_cpu_util", "infer_cpu_util"):
        vals = [r[key] for r in ok if key in r]
        if vals:
            out[key] = round(sum(vals) / len(vals), 2)
    out["train_peak_rss_mb"] = max(r.get("train_peak_rss_mb", 0) for r in ok)
    out["runs"] = len(runs)
    out["failed_runs"] = len(runs) - len(ok)
    return out


def run_tf_anchor(cfg_name: str, threads: int, timeout: float) -> dict:
    if not TF_ANCHOR.is_file():
        return {"skipped": f"{TF_ANCHOR} not found"}
    if not TF_PYTHON.is_file():
        return {"skipped": f"{TF_PYTHON} not found (python3 -m venv /tmp/tf-venv && "
                           "/tmp/tf-venv/bin/pip install tensorflow-cpu)"}
    cmd = [str(TF_PYTHON), str(TF_ANCHOR), cfg_name, str(threads), "1"]
    res = C.run_result_subprocess(cmd, timeout=timeout, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    res["command"] = " ".join(cmd)
    return res


# --------------------------------------------------------------------------- subprocess workers


def _worker_argv(args, kind: str, *extra: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--threads", str(args.threads),
            "--recommended", str(args.recommended)]
    if args.weights:
        argv += ["--weights", str(args.weights)]
    return argv + list(extra)


def worker_compile(args) -> dict:
    """torch.compile of the best eager path for ``--config-name``: compile time, then infer and train rates
    of the eager and the compiled model in interleaved rounds, and label drift of the compiled model."""
    import torch._inductor.config as inductor_config

    cfg = bench_config(args.config_name, args.recommended)
    base = build_model(cfg, weights=args.weights if args.config_name == "R" else None)
    eager = "bf16_cl" if cpu_has_native_bf16() else "fp32_cl"
    cl, mode = PATHS[eager]
    rounds = max(1, args.rounds)
    per = dict(n_min=max(1, -(-args.n_min // rounds)), t_floor=args.t_floor / rounds, t_cap=args.t_cap / rounds)
    res: dict = {"config": args.config_name, "eager_path": eager, "torch": torch.__version__, "rounds": rounds}
    x = infer_input(cfg).contiguous(memory_format=torch.channels_last)

    def softmax_of(m, grad_ctx):
        def f():
            with grad_ctx(), autocast(CPU, mode):
                return torch.softmax(m(x).float(), 1)
        return f

    def error(exc) -> list[dict]:
        return [{"error": f"{exc.__class__.__name__}: {str(exc)[:300]}"}]

    def eager_vs_compiled(kind: str, eager, compiled, items: int, later_warmup: int) -> None:
        """Time ``eager()`` and ``compiled()`` (each makes a step function) in interleaved rounds into
        ``res["<kind>_eager"]`` / ``res["<kind>_compiled"]``; the first compiled call's time is
        ``res["<kind>_compile_s"]``.  A failed compile is recorded and the eager path still timed."""
        parts: dict = {f"{kind}_eager": [], f"{kind}_compiled": []}
        try:
            fns = {f"{kind}_eager": eager()}
            try:
                fns[f"{kind}_compiled"] = compiled()
                t0 = time.perf_counter()
                fns[f"{kind}_compiled"]()
                res[f"{kind}_compile_s"] = round(time.perf_counter() - t0, 1)
            except Exception as exc:
                parts[f"{kind}_compiled"] = error(exc)
                fns.pop(f"{kind}_compiled", None)
            for r in range(rounds):
                for key, fn in fns.items():
                    parts[key].append(C.timed_loop(fn, items_per_call=items, warmup=2 if r == 0 else later_warmup,
                                                   **per))
        except Exception as exc:
            parts[f"{kind}_compiled"] = error(exc)
        for key, pl in parts.items():
            res[key] = pl[0] if pl and "error" in pl[0] else C.merge_loops(pl)
        print("PARTIAL " + json.dumps(res), flush=True)

    # inference: compiled with freezing (weights folded and pre-packed for oneDNN; needs no_grad)
    eager_vs_compiled(
        "infer",
        lambda: softmax_of(copy.deepcopy(base).eval().to(memory_format=torch.channels_last), torch.inference_mode),
        lambda: softmax_of(_compiled(copy.deepcopy(base).eval().to(memory_format=torch.channels_last)), torch.no_grad),
        INFER_BATCH, later_warmup=1)
    # training: compiled without freezing (parameters change)
    inductor_config.freezing = False
    torch._dynamo.reset()
    eager_vs_compiled(
        "train",
        lambda: make_train_step(copy.deepcopy(base), cfg, cl, mode),
        lambda: make_train_step(torch.compile(copy.deepcopy(base)), cfg, cl, mode),
        TRAIN_BATCH, later_warmup=0)
    # drift of the compiled path (same phantom batch as the main process)
    if args.config_name == "R":
        try:
            torch._dynamo.reset()
            batch, truth = realistic_batch(cfg, n=args.drift_slices)
            res["drift"] = label_agreement(base, batch, paths=(f"compile_{eager}",), reference="fp32_cl",
                                           truth=truth if args.weights else None)
        except Exception as exc:
            res["drift"] = {"error": f"{exc.__class__.__name__}: {str(exc)[:300]}"}
    res["peak_rss_mb"] = round(C.peak_rss_mb(), 1)
    return res


def worker_loop(args) -> dict:
    """Train and infer rate of one eager path in a fresh process (for the thread/OpenMP comparison)."""
    from flexunet.infer.predictor import Predictor

    cfg = bench_config(args.config_name, args.recommended)
    base = build_model(cfg)
    path = args.loop_path
    timing = dict(n_min=args.n_min, t_floor=args.t_floor, t_cap=args.t_cap)
    tb = TrainBench(base, cfg)
    tb.set_path(path)
    res = {"config": args.config_name, "path": path, "threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}
    res["train"] = C.timed_loop(tb.step, items_per_call=TRAIN_BATCH, warmup=2, **timing)
    del tb
    pred = Predictor(copy.deepcopy(base), precision=PATHS[path][1], channels_last=PATHS[path][0])
    x = infer_input(cfg)
    res["infer"] = C.timed_loop(lambda: pred.probs(x), items_per_call=INFER_BATCH, warmup=2, **timing)
    return res


def worker_train(args) -> dict:
    """Peak RSS (and rate) of ``args.steps`` Lightning training steps with the recommended config."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from flexunet.infer.precision import trainer_precision
    from flexunet.train.module import SegmentationModule

    cfg = bench_config("R", args.recommended)
    m, t = cfg.model, cfg.train
    batch = args.batch or t.batch_size
    torch.manual_seed(0)
    n = batch * args.steps
    x = torch.rand(n, m.image_channels, m.image_height, m.image_width)
    y = torch.randint(0, m.num_classes, (n, m.image_height, m.image_width))
    dl = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False, num_workers=0)
    module = SegmentationModule(cfg)
    stamps: list[float] = []

    class Stamp(L.Callback):
        def on_train_batch_end(self, *a, **k):
            stamps.append(time.perf_counter())

    precision = trainer_precision(args.precision, "cpu")
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, precision=precision,
                        gradient_clip_val=m.clipvalue, gradient_clip_algorithm="value" if m.clipvalue else None,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Stamp()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        trainer.fit(module, dl)
    res = {"precision": args.precision, "trainer_precision": precision, "batch": batch, "steps": len(stamps),
           "fit_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(C.peak_rss_mb(), 1),
           "data_mb": round((x.numel() * 4 + y.numel() * 8) / 2 ** 20, 1)}
    if len(stamps) >= 4:
        res["img_s_after_warmup"] = round(batch * (len(stamps) - 2) / (stamps[-1] - stamps[1]), 3)
    return res


# --------------------------------------------------------------------------- report


def _fmt(v, nd=3):
    return None if v is None else round(v, nd)


def _vs_tf(d: dict, tf_rate, tf_cpu_per_item) -> str | None:
    """``wall ratio (CPU-time ratio)`` of a merged timing ``d`` against TF's rate."""
    if "rate" not in d:
        return "error" if "error" in d else None
    if not tf_rate:
        return None
    wall = d["rate"] / tf_rate
    cpu = tf_cpu_per_item / d["cpu_s_per_item"] if tf_cpu_per_item and d.get("cpu_s_per_item") else None
    return f"{wall:.2f}" + (f" ({cpu:.2f})" if cpu else "")


def speed_rows(results: dict) -> list[list]:
    rows = []
    for name, res in results["configs"].items():
        tf = results["tf"].get(TF_FOR[name], {})
        tf_train = tf.get("train_img_s")
        tf_infer = tf.get("infer_slices_s")
        tf_train_cpu = tf["train_s_per_step"] * tf["train_cpu_util"] / TRAIN_BATCH if tf_train else None
        tf_infer_cpu = tf["infer_s_per_batch"] * tf["infer_cpu_util"] / INFER_BATCH if tf_infer else None
        label = CONFIG_TITLES[name]
        tag = f" vs TF {TF_FOR[name]}" if TF_FOR[name] != name else ""
        if name in ("A", "B") and (tf_train or tf_infer):
            rows.append([label, PATH_TITLES["tf"], tf_train, "1", tf_infer, "1",
                         f"{tf.get('train_cpu_util')} / {tf.get('infer_cpu_util')}"])
        elif name in ("A", "B"):
            rows.append([label, PATH_TITLES["tf"], tf.get("skipped") or str(tf.get("error", "not run"))[:60],
                         None, None, None, None])
        for path, r in res["paths"].items():
            if r.get("skipped"):
                rows.append([label, PATH_TITLES.get(path, path), r["skipped"], None, None, None, None])
                continue
            tr, inf = r.get("train", {}), r.get("infer", {})
            vt, vi = _vs_tf(tr, tf_train, tf_train_cpu), _vs_tf(inf, tf_infer, tf_infer_cpu)
            rows.append([label, PATH_TITLES.get(path, path), tr.get("rate", tr.get("error")),
                         vt + tag if vt and vt != "error" else vt, inf.get("rate", inf.get("error")),
                         vi + tag if vi and vi != "error" else vi,
                         f"{tr.get('cpu_util', '–')} / {inf.get('cpu_util', '–')}"])
        comp = (results.get("compile") or {}).get(name) or {}
        eager = comp.get("eager_path")
        if eager and eager in res["paths"]:
            main = res["paths"][eager]
            cells = []
            for ph, kc, ke, tfr in (("train", "train_compiled", "train_eager", tf_train),
                                    ("infer", "infer_compiled", "infer_eager", tf_infer)):
                k = C.ratio((comp.get(kc) or {}).get("rate"), (comp.get(ke) or {}).get("rate"))
                base_rate = (main.get(ph) or {}).get("rate")
                est = base_rate * k if (k and base_rate) else None
                cells += [round(est, 4) if est else ("failed" if "error" in (comp.get(kc) or {}) else None),
                          (f"{est / tfr:.2f}{tag}" if est and tfr else None)]
            rows.append([label, f"torch.compile of {eager} (est.: the {eager} row × compiled/eager speed-up "
                                "of the compile run)",
                         *cells, None])
    return rows


def report(results: dict) -> str:
    lines = [f"### FlexUNet speed vs the original (TensorFlow), {results['started']}", "",
             f"Command: `{results['command']}`  ", f"Machine: {C.machine_line(results['machine'])}  "]
    tfv = next((t.get("tf") for t in results["tf"].values() if isinstance(t, dict) and t.get("tf")), None)
    lines.append(f"TensorFlow: {tfv or 'not run'}; threads: {results['threads']} "
                 f"(TF intra {results['threads']}, inter 1); train batch {TRAIN_BATCH} (Adam, CE, clip 0.4, "
                 f"one step incl. backward), infer batch {INFER_BATCH} (inference_mode, softmax).")
    lines.append("")
    lines.append("×TF = FlexUNet rate / TF rate measured in this run (in brackets: the same ratio in CPU seconds "
                 "per item, less sensitive to other load); CPU use = process CPU s / wall s, "
                 f"{results['threads']} means the cores were ours.")
    lines.append("")
    lines.append(C.md_table(["config", "path", "train img/s", "train ×TF", "infer slices/s", "infer ×TF",
                             "CPU use train / infer"], speed_rows(results)))
    comp = results.get("compile") or {}
    if comp:
        lines += ["", "torch.compile (subprocess, best eager path vs its compiled version, same process):", ""]
        crow = []
        for name, c in comp.items():
            if "error" in c and "infer_eager" not in c:
                crow.append([name, c.get("eager_path"), "failed: " + str(c["error"])[:80], None, None, None, None])
                continue
            ie, ic = c.get("infer_eager", {}), c.get("infer_compiled", {})
            te, tc = c.get("train_eager", {}), c.get("train_compiled", {})
            crow.append([name, c.get("eager_path"),
                         f"{ie.get('rate')} → {ic.get('rate', ic.get('error', '?'))}",
                         _fmt(C.ratio(ic.get("rate"), ie.get("rate")), 2), c.get("infer_compile_s"),
                         f"{te.get('rate')} → {tc.get('rate', str(tc.get('error', '?'))[:60])}",
                         _fmt(C.ratio(tc.get("rate"), te.get("rate")), 2)])
        lines.append(C.md_table(["config", "eager path", "infer slices/s eager → compiled", "infer ×eager",
                                 "compile s", "train img/s eager → compiled", "train ×eager"], crow))
    th = results.get("threads_cmp") or {}
    if th.get("variants"):
        tf = results["tf"].get(TF_FOR.get(th["config"], "B"), {})
        lines += ["", f"Threads and OpenMP waiting, config {th['config']}, {th['path']}, each in a fresh process "
                  "(interleaved rounds). PyTorch's OpenMP threads spin while they wait; when other processes "
                  "compete for the cores a spinning thread steals the time its partner needs:", ""]
        trow = []
        for label, v in th["variants"].items():
            tr, inf = v.get("train", {}), v.get("infer", {})
            trow.append([label, tr.get("rate", tr.get("error")),
                         _fmt(C.ratio(tr.get("rate"), tf.get("train_img_s")), 2),
                         inf.get("rate", inf.get("error")), _fmt(C.ratio(inf.get("rate"), tf.get("infer_slices_s")), 2),
                         f"{tr.get('cpu_util')} / {inf.get('cpu_util')}"])
        lines.append(C.md_table(["variant", "train img/s", f"×TF {TF_FOR.get(th['config'], 'B')}", "infer slices/s",
                                 f"×TF {TF_FOR.get(th['config'], 'B')}", "CPU use train / infer"], trow))
    drift = results.get("drift") or {}
    if drift:
        lines += ["", f"Label drift vs fp32 channels_last on {drift.get('n_slices', '?')} phantom slices "
                  f"({drift.get('weights_note', '')}):", ""]
        drow = []
        for src in ("eager", "compile"):
            d = drift.get(src) or {}
            for p, r in (d.get("paths") or {}).items():
                if "error" in r:
                    drow.append([p, r["error"][:80], None, None, None, None])
                    continue
                drow.append([p, f"{100 * r['pixel_agreement']:.3f} %", r["changed_pixels"],
                             ", ".join("–" if v is None else f"{v:.4f}" for v in r["dice_vs_reference"]),
                             r["rel_logit_err"],
                             ", ".join("–" if v is None else f"{v:.3f}" for v in r.get("dice_vs_truth", []))
                             or None])
        lines.append(C.md_table(["path", "pixels agreeing", "pixels changed", "Dice vs fp32 per class",
                                 "rel. logit error", "Dice vs phantom truth per class"], drow))
        ref = (drift.get("eager") or {}).get("reference_dice_vs_truth")
        if ref:
            lines.append(f"\n(fp32 itself vs phantom truth: {', '.join('–' if v is None else f'{v:.3f}' for v in ref)})")
    e2e = results.get("e2e") or {}
    if e2e.get("e2e"):
        import infer_stages

        lines += ["", infer_stages.report(e2e)]
    elif e2e.get("error"):
        lines += ["", f"infer-volume processes: failed ({e2e['error'][-300:]})"]
    tr = results.get("train_rss") or {}
    if tr.get("runs"):
        lines += ["", f"Training memory, recommended config (SegmentationModule + Lightning, batch "
                  f"{tr.get('batch')}, {tr.get('steps')} steps, whole process):", ""]
        trow = []
        for r in tr["runs"]:
            trow.append([f"{r.get('precision')} → {r.get('trainer_precision', '?')}", r.get("peak_rss_mb", r.get("error")),
                         r.get("img_s_after_warmup"), r.get("data_mb")])
        tfb = results["tf"].get("B", {})
        if "train_peak_rss_mb" in tfb:
            trow.append(["TF anchor B (batch 2, for scale)", tfb["train_peak_rss_mb"], tfb.get("train_img_s"), None])
        lines.append(C.md_table(["precision", "peak RSS MB", "train img/s", "in-memory data MB"], trow))
    notes = list(results.get("notes") or [])
    for tfn, tf in (results.get("tf") or {}).items():
        for rate in ("train_img_s", "infer_slices_s"):
            if tf.get(f"{rate}_runs"):
                sp = tf[f"{rate}_spread"]
                notes.append(f"TF {tfn} {rate} over {len(tf[f'{rate}_runs'])} runs: {tf[f'{rate}_runs']} "
                             f"(max/min {sp})" + ("; the load changed a lot during the run: the ratios to TF "
                                                  "are unreliable, rerun on a quiet machine" if sp > 1.3 else ""))
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch threads and TF intra-op threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="~3 min smoke run: config R (+ TF B), short loops, 24-slice volume")
    ap.add_argument("--skip-tf", action="store_true", help="do not run the TF anchor")
    ap.add_argument("--configs", default=None, help="comma list of A,B,R (default A,B,R; --quick: R)")
    ap.add_argument("--paths", default="fp32,fp32_cl,bf16_cl,fp32_cl_fused,bf16_cl_fused",
                    help="eager paths: fp32, fp32_cl, bf16_cl, bf16 (bf16* only where native bf16); "
                         "<path>_fused: BatchNorm folded into the convolutions, inference only, "
                         "configs with BatchNorm only")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds over the paths compared in one process (default 3; quick 1)")
    ap.add_argument("--compile", default=None,
                    help="configs to try torch.compile on (default R; --quick: none; 'none' to skip)")
    ap.add_argument("--compile-timeout", type=float, default=900.0)
    ap.add_argument("--recommended", default=str(DEFAULT_RECOMMENDED), help="the recommended config file (R)")
    ap.add_argument("--weights", default=None, help="trained weights for R (best.pt): makes the drift meaningful")
    ap.add_argument("--n-min", type=int, default=None, help="timed calls at least (default 3; quick 2)")
    ap.add_argument("--t-floor", type=float, default=None, help="seconds per measurement at least (default 10; quick 2)")
    ap.add_argument("--t-cap", type=float, default=None, help="seconds per measurement at most (default 30; quick 6)")
    ap.add_argument("--tf-timeout", type=float, default=1200.0)
    ap.add_argument("--tf-repeats", type=int, default=1,
                    help="runs of each TF anchor: the first before FlexUNet's runs of that config, the others "
                         "after them; TF's figure is their mean and the report shows the spread (default 1; "
                         "2 on a busy machine)")
    ap.add_argument("--drift-slices", type=int, default=None, help="phantom slices for the drift (default 16; quick 4)")
    ap.add_argument("--skip-e2e", action="store_true", help="skip the 512x512xN volume run")
    ap.add_argument("--slices", type=int, default=None, help="slices of the e2e volume (default 200; quick 24)")
    ap.add_argument("--skip-train-rss", action="store_true")
    ap.add_argument("--train-steps", type=int, default=None, help="steps of the training-RSS run (default 10; quick 3)")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/speed.json)")
    ap.add_argument("--md", default=None, help="also write the markdown report here (default bench/results/speed.md)")
    ap.add_argument("--omp-passive", action="store_true",
                    help="run everything with OMP_WAIT_POLICY=PASSIVE (see the threads section of the report)")
    ap.add_argument("--skip-threads", action="store_true",
                    help="skip the thread/OpenMP comparison (fresh processes: N threads, N threads with "
                         "OMP_WAIT_POLICY=PASSIVE, 1 thread)")
    ap.add_argument("--threads-config", default="R", help="config of the thread/OpenMP comparison (default R)")
    ap.add_argument("--report", metavar="JSON", default=None,
                    help="only print the markdown report of a saved results JSON")
    # internal: subprocess workers
    ap.add_argument("--worker", choices=("compile", "train", "loop"), help=argparse.SUPPRESS)
    ap.add_argument("--loop-path", default="fp32_cl", help=argparse.SUPPRESS)
    ap.add_argument("--config-name", default="R", help=argparse.SUPPRESS)
    ap.add_argument("--volume", help=argparse.SUPPRESS)
    ap.add_argument("--outdir", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    q = args.quick
    for key, full, quick in (("n_min", 3, 2), ("t_floor", 10.0, 2.0), ("t_cap", 30.0, 6.0), ("drift_slices", 16, 4),
                             ("slices", 200, 24), ("train_steps", 10, 4), ("rounds", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if q else full)
    if args.configs is None:
        args.configs = "R" if q else "A,B,R"
    if args.compile is None:
        args.compile = "none" if q else "R"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    if args.worker:
        fn = {"compile": worker_compile, "train": worker_train, "loop": worker_loop}[args.worker]
        try:
            res = fn(args)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            res = {"error": f"{exc.__class__.__name__}: {exc}"}
        print("RESULT " + json.dumps(res, default=C._json_default), flush=True)
        return 0

    head = C.print_header("FlexUNet speed vs TensorFlowFlexUNet (bench/speed.py)", args.threads)
    results = {**head, "threads": args.threads, "quick": args.quick, "train_batch": TRAIN_BATCH,
               "infer_batch": INFER_BATCH, "timing": {"n_min": args.n_min, "t_floor": args.t_floor,
                                                      "t_cap": args.t_cap},
               "tf": {}, "configs": {}, "compile": {}, "drift": {}, "e2e": {}, "train_rss": {}, "notes": []}
    out_json = Path(args.out) if args.out else C.RESULTS_DIR / "speed.json"
    save = lambda: C.save_results("speed", results, out_json)  # noqa: E731
    bf16_ok = cpu_has_native_bf16()
    m = results["machine"]
    results["bf16_gate"] = {"precision.cpu_has_native_bf16": bf16_ok, "isa_avx512_bf16": m.get("isa_avx512_bf16"),
                            "isa_amx_tile": m.get("isa_amx_tile")}
    if bf16_ok and m.get("isa_avx512_bf16") is False and m.get("isa_amx_tile") is False:
        results["notes"].append("WARNING: flexunet.infer.precision.cpu_has_native_bf16() is True but the CPU has "
                                "neither AVX512-BF16 nor AMX (oneDNN's check only needs AVX512BW/VL/DQ): `auto` "
                                "picks bf16 here, which is emulated and slower than fp32.")
    if not bf16_ok:
        results["notes"].append("bf16 paths skipped: oneDNN reports no native bf16 on this CPU (there bf16 autocast "
                                "runs 10-70x slower than fp32; `auto` precision picks fp32).")
    configs = [c.strip().upper() for c in args.configs.split(",") if c.strip()]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    timing = dict(n_min=args.n_min, t_floor=args.t_floor, t_cap=args.t_cap)
    t_start = time.perf_counter()

    # 1. TF anchor (subprocesses) and eager paths, config by config
    tf_runs: dict[str, list] = {}
    last_user = {TF_FOR[n]: n for n in configs}  # the TF anchor's repeats run after its last user

    def tf_run(tf_name: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] TF anchor {tf_name} (run {len(tf_runs[tf_name]) + 1}/"
              f"{args.tf_repeats}) ...", flush=True)
        tf = run_tf_anchor(tf_name, args.threads, args.tf_timeout)
        tf["load_average"] = C.load_average()
        tf_runs[tf_name].append(tf)
        results["tf"][tf_name] = combine_tf_runs(tf_runs[tf_name])
        print(f"    TF {tf_name}: train {tf.get('train_img_s')} img/s, infer {tf.get('infer_slices_s')} "
              f"slices/s {tf.get('error') or tf.get('skipped') or ''}", flush=True)
        save()

    for name in configs:
        tf_name = TF_FOR[name]
        if tf_name not in results["tf"]:
            if args.skip_tf:
                results["tf"][tf_name] = {"skipped": "--skip-tf"}
            else:
                tf_runs[tf_name] = []
                tf_run(tf_name)
        cfg = bench_config(name, args.recommended)
        base = build_model(cfg, weights=args.weights if name == "R" else None)
        nparams = sum(p.numel() for p in base.parameters())
        results["configs"][name] = {"title": CONFIG_TITLES[name], "params": nparams,
                                    "tf_params": results["tf"].get(tf_name, {}).get("params"), "paths": {}}
        run_paths = []
        for path in paths:
            if path.endswith("_fused") and not has_batchnorm(base):
                continue  # nothing to fold: the same as the unfused path
            if path.startswith("bf16") and not bf16_ok:
                results["configs"][name]["paths"][path] = {"skipped": "no native bf16"}
            else:
                run_paths.append(path)
        print(f"[{time.perf_counter() - t_start:6.0f} s] {name}: {', '.join(run_paths)} in {args.rounds} "
              "interleaved rounds ...", flush=True)
        measured = measure_eager(cfg, base, run_paths, timing, rounds=args.rounds,
                                 log=lambda msg: print(msg, flush=True))
        for path in run_paths:
            r = measured[path]
            results["configs"][name]["paths"][path] = r
            print(f"    {name} {path}: train {r['train'].get('rate', r['train'].get('error'))} img/s "
                  f"(cpu {r['train'].get('cpu_util')}), infer {r['infer'].get('rate', r['infer'].get('error'))} "
                  f"slices/s (cpu {r['infer'].get('cpu_util')})", flush=True)
        results["configs"][name]["paths"] = {p: results["configs"][name]["paths"][p] for p in paths
                                             if p in results["configs"][name]["paths"]}
        save()
        results["configs"][name]["load_average_after"] = C.load_average()
        for tf_name, user in last_user.items():
            if user == name and tf_name in tf_runs:
                while len(tf_runs[tf_name]) < args.tf_repeats:
                    tf_run(tf_name)
        # 2. drift on phantom slices (R only: the model people will run)
        if name == "R":
            batch, truth = realistic_batch(cfg, n=args.drift_slices)
            drift_paths = [p for p in ("fp32", "fp32_cl_fused", "bf16_cl", "bf16_cl_fused")
                           if (bf16_ok or not p.startswith("bf16")) and (has_batchnorm(base) or "fused" not in p)]
            results["drift"] = {"n_slices": int(batch.shape[0]),
                                "weights_note": f"weights {args.weights}" if args.weights else
                                "random weights: only indicative, rerun with --weights or see bench/quality.py",
                                "eager": label_agreement(base, batch, paths=drift_paths, reference="fp32_cl",
                                                         truth=truth if args.weights else None)}
            save()
        del base

    # torch.compile (subprocess per config)
    comp = [c.strip().upper() for c in args.compile.split(",") if c.strip() and c.strip().lower() != "none"]
    for name in comp:
        print(f"[{time.perf_counter() - t_start:6.0f} s] torch.compile {name} (subprocess) ...", flush=True)
        res = C.run_result_subprocess(_worker_argv(args, "compile", "--config-name", name, "--n-min", str(args.n_min),
                                                   "--t-floor", str(args.t_floor), "--t-cap", str(args.t_cap),
                                                   "--drift-slices", str(args.drift_slices),
                                                   "--rounds", str(args.rounds)),
                                      timeout=args.compile_timeout)
        if "error" in res and "partial" in res:
            res = {**res["partial"], "error": res["error"]}
        results["compile"][name] = res
        if name == "R" and "drift" in res and results.get("drift"):
            results["drift"]["compile"] = res["drift"]
        ic, tc = res.get("infer_compiled", {}), res.get("train_compiled", {})
        print(f"    infer {res.get('infer_eager', {}).get('rate')} -> {ic.get('rate', ic.get('error'))}, train "
              f"{res.get('train_eager', {}).get('rate')} -> {tc.get('rate', tc.get('error'))} "
              f"{res.get('error', '')}", flush=True)
        save()

    # thread / OpenMP comparison in fresh processes, interleaved rounds
    if not args.skip_threads:
        name = args.threads_config.upper()
        path = "bf16_cl" if cpu_has_native_bf16() else "fp32_cl"
        variants = [(f"{args.threads} threads, OMP default", args.threads, {"OMP_WAIT_POLICY": None}),
                    (f"{args.threads} threads, OMP_WAIT_POLICY=PASSIVE", args.threads, {"OMP_WAIT_POLICY": "PASSIVE"})]
        if args.threads > 1:
            variants.append(("1 thread", 1, {"OMP_WAIT_POLICY": None}))
        results["threads_cmp"] = {"config": name, "path": path, "variants": {}}
        tparts: dict = {v[0]: {"train": [], "infer": []} for v in variants}
        t_rounds = min(args.rounds, 2)
        for r in range(t_rounds):
            for label, nthr, env in variants:
                print(f"[{time.perf_counter() - t_start:6.0f} s] {name} {path} {label} (subprocess, round "
                      f"{r + 1}/{t_rounds}) ...", flush=True)
                argv = _worker_argv(args, "loop", "--config-name", name, "--loop-path", path, "--n-min",
                                    str(max(1, -(-args.n_min // t_rounds))), "--t-floor",
                                    str(args.t_floor / t_rounds), "--t-cap", str(args.t_cap / t_rounds))
                argv[argv.index("--threads") + 1] = str(nthr)
                res = C.run_result_subprocess(argv, timeout=900, env=env)
                for ph in ("train", "infer"):
                    tparts[label][ph].append(res.get(ph) or {"error": res.get("error", "?")})
                print(f"    train {(res.get('train') or {}).get('rate', res.get('error'))} img/s, infer "
                      f"{(res.get('infer') or {}).get('rate')} slices/s", flush=True)
        for label, nthr, env in variants:
            results["threads_cmp"]["variants"][label] = {
                "threads": nthr, "env": {k: v for k, v in env.items() if v},
                **{ph: C.merge_loops(tparts[label][ph]) for ph in ("train", "infer")}}
        save()

    # 3. end to end on a volume
    with tempfile.TemporaryDirectory(prefix="flexunet-speed-") as tmp:
        if not args.skip_e2e:
            # infer-volume as a user runs it (a process per runtime), and where its time goes: bench/infer_stages.py
            print(f"[{time.perf_counter() - t_start:6.0f} s] infer-volume on a 512x512x{args.slices} CT: processes "
                  "and stages (bench/infer_stages.py) ...", flush=True)
            stages_out = Path(args.out).parent / "infer_stages" if args.out else C.RESULTS_DIR / "infer_stages"
            cmd = [sys.executable, str(Path(__file__).resolve().parent / "infer_stages.py"), "--slices",
                   str(args.slices), "--repeats", "1" if args.quick else "2", "--out", str(stages_out)]
            if args.weights:
                cmd += ["--weights", args.weights]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
            stages_json = stages_out / "infer_stages.json"
            results["e2e"] = (json.loads(stages_json.read_text()) if proc.returncode == 0 and stages_json.exists()
                              else {"error": proc.stderr[-2000:]})
            save()
        # 4. training memory
        if not args.skip_train_rss:
            cfg_r = bench_config("R", args.recommended)
            results["train_rss"] = {"batch": cfg_r.train.batch_size, "steps": args.train_steps, "runs": []}
            for p in ["32", "auto"]:
                print(f"[{time.perf_counter() - t_start:6.0f} s] training RSS precision={p} (subprocess) ...",
                      flush=True)
                r = C.run_result_subprocess(_worker_argv(args, "train", "--precision", p, "--steps",
                                                         str(args.train_steps)), timeout=1800)
                results["train_rss"]["runs"].append(r)
                print(f"    peak RSS {r.get('peak_rss_mb', r.get('error'))} MB, "
                      f"{r.get('img_s_after_warmup')} img/s", flush=True)
                save()

    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    results["load_average_end"] = C.load_average()
    results["notes"].append(f"load average at start {results['machine'].get('load_average')}, at end "
                            f"{results['load_average_end']} on {results['machine'].get('cores')} cores: "
                            "other work on the machine lowers every figure; trust ratios, not absolutes.")
    md = report(results)
    results["markdown"] = md
    path = save()
    md_path = Path(args.md) if args.md else out_json.with_suffix(".md")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(md + "\n")
    print()
    print(md)
    print(f"\nresults: {path}\nmarkdown: {md_path}\ntotal {results['total_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
