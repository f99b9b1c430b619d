"""Peak memory of batch inference: does RSS stay flat when the batch grows?

``flexunet infer`` streams a folder of slices (read a batch, predict, write, drop) and
``flexunet infer-volume`` streams volumes (one loader thread, a queue of one volume), so their peak
resident set size (RSS) should not depend on how many files there are.  This script checks that: it
generates N PNG slices and M NIfTI volumes, runs each command as a child process on a small and a large
batch, and reads the child's own peak RSS from the kernel (``os.wait4`` rusage ``ru_maxrss``, which counts
the whole life of the process, so no peak is missed between samples; the child is started through a small
trampoline so that the figure is not this script's own high-water mark).

    python bench/memory.py                      # 200 vs 2000 slices of 64x64, 2 vs 20 volumes
    python bench/memory.py --n 2000 --size 512  # realistic 512x512 slices (slower)
    python bench/memory.py --quick              # 20 vs 200 slices, 1 vs 4 volumes

The model is an untrained TensorFlowFlexUNet of the size the config gives (weights do not change
memory or speed); the point is the growth with N, shown as the ratio large/small.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
import _common  # noqa: E402

CONFIG = """[model]
model = "TensorFlowFlexUNet"
image_width = {size}
image_height = {size}
image_channels = 3
num_classes = 3
base_filters = 8
base_kernels = (3,3)
num_layers = 4
[train]
model_dir = "./models/"
precision = "32"
[infer]
images_dir = "./slices_small/"
output_dir = "./out_2d/"
batch_size = 8
[slice]
hu_window = (-100, 250)
[mask]
rgb_map = {{(0,0,0):0,(0,0,255):1,(255,0,0):2}}
"""


def write_slices(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """n CT-like RGB PNGs (grey body, bright disc) of size x size; existing files are kept."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        path = folder / f"slice_{i:05d}.png"
        if path.exists():
            continue
        cy, cx, r = rng.integers(size // 3, 2 * size // 3, 2).tolist() + [int(rng.integers(size // 8, size // 4))]
        img = np.full((size, size), 40.0) + rng.normal(0, 8, (size, size))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 120
        grey = np.clip(img, 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, -1)).save(path)


def write_volumes(folder: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> list[Path]:
    """n synthetic HU volumes (NIfTI, 0.8 x 0.8 x 2.5 mm): body, liver ellipsoid, noise."""
    import nibabel as nib
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    body = x ** 2 + y ** 2 < 0.8
    liver = ((x + 0.2) / 0.45) ** 2 + (y / 0.35) ** 2 + (z / 0.8) ** 2 < 1
    paths = []
    for i in range(n):
        path = folder / f"case_{i:03d}.nii.gz"
        paths.append(path)
        if path.exists():
            continue
        hu = np.where(body, 40.0, -1000.0).astype(np.float32)
        hu[liver] = 90.0
        hu += rng.normal(0, 15, shape).astype(np.float32)
        nib.save(nib.Nifti1Image(hu, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    return paths


def _shell_word(arg: str) -> str:
    return f'"{arg}"' if "'" in arg and '"' not in arg else shlex.quote(arg)


def run_measured(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd`` in ``cwd``; return its exit code, wall seconds, its own peak RSS (MB) and its last lines.

    The peak comes from :func:`_common.run_peak_rss`: a child started straight from this process would
    report at least this process's own high-water mark (the kernel carries ``ru_maxrss`` across fork)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    log = cwd / "run.log"
    t0 = time.perf_counter()
    rc, peak_gb = _common.run_peak_rss(cmd, log, env=env, cwd=cwd)
    seconds = time.perf_counter() - t0
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    return {"rc": rc, "seconds": seconds, "peak_rss_mb": peak_gb * 1e9 / 2 ** 20, "log_tail": tail}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="slices in the large 2D batch (default 2000)")
    ap.add_argument("--n-small", type=int, default=200, help="slices in the small 2D batch (default 200)")
    ap.add_argument("--size", type=int, default=64, help="slice and model size in pixels (default 64; 512 is realistic)")
    ap.add_argument("--volumes", type=int, default=20, help="volumes in the large batch (default 20)")
    ap.add_argument("--volumes-small", type=int, default=2, help="volumes in the small batch (default 2)")
    ap.add_argument("--shape", default="192,192,48", help="volume shape x,y,z (default 192,192,48)")
    ap.add_argument("--work", help="working folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--quick", action="store_true", help="20 vs 200 slices, 1 vs 4 volumes")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.n_small, args.volumes, args.volumes_small = 200, 20, 4, 1
    shape = tuple(int(v) for v in args.shape.split(","))

    tmp = None
    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="flexunet-memory-")
        work = Path(tmp.name)

    from flexunet.config import load_config
    from flexunet.models import create_model
    from flexunet.models.checkpoint import save_weights

    cfg_path = work / "memory.config"
    cfg_path.write_text(CONFIG.format(size=args.size))
    cfg = load_config(cfg_path)
    save_weights(work / "models" / "best.pt", create_model(cfg.model), cfg.model)

    _common.print_header("flexunet memory bench", argv=None if argv is None else [sys.argv[0], *argv])
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}; work folder {work}")
    t0 = time.perf_counter()
    write_slices(work / "slices", args.n, args.size)
    small = work / "slices_small"
    small.mkdir(exist_ok=True)
    for p in sorted((work / "slices").glob("*.png"))[: args.n_small]:
        if not (small / p.name).exists():
            os.link(p, small / p.name)
    vols = write_volumes(work / "volumes", args.volumes, shape)
    print(f"# generated {args.n} slices of {args.size}x{args.size} and {args.volumes} volumes of "
          f"{'x'.join(map(str, shape))} in {time.perf_counter() - t0:.1f} s")

    py = [sys.executable, "-m", "flexunet", "--quiet"]
    runs = []
    for label, n, folder in (("infer", args.n_small, small), ("infer", args.n, work / "slices")):
        out = work / f"out_2d_{n}"
        cmd = py + ["infer", str(cfg_path), "--set", f"infer.images_dir='{folder}'",
                    "--set", f"infer.output_dir='{out}'"]
        runs.append((label, n, "slices", cmd))
    for n in (args.volumes_small, args.volumes):
        cmd = py + ["infer-volume", str(cfg_path), *map(str, vols[:n]), "--output", str(work / f"out_3d_{n}")]
        runs.append(("infer-volume", n, "volumes", cmd))

    rows = []
    for label, n, unit, cmd in runs:
        res = run_measured(cmd, work)
        if res["rc"] != 0:
            print(f"FAILED ({res['rc']}): {' '.join(cmd)}\n  " + "\n  ".join(res["log_tail"]), file=sys.stderr)
        rows.append({"command": label, "n": n, "unit": unit, **res,
                     "cmdline": " ".join(_shell_word(c) for c in ["flexunet", *cmd[4:]]).replace(str(work), "$WORK")})

    print()
    print("| command | batch | peak RSS (MB) | wall (s) | ms per item |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `flexunet {r['command']}` | {r['n']} {r['unit']} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} | "
              f"{1000 * r['seconds'] / max(r['n'], 1):.1f} |")
    print()
    ok = True
    for label in ("infer", "infer-volume"):
        a, b = [r for r in rows if r["command"] == label]
        ratio = b["peak_rss_mb"] / a["peak_rss_mb"]
        grows = ratio > 1.15
        ok &= not grows and a["rc"] == 0 and b["rc"] == 0
        print(f"{label}: peak RSS {a['peak_rss_mb']:.0f} MB for {a['n']} {a['unit']} vs {b['peak_rss_mb']:.0f} MB for "
              f"{b['n']} {b['unit']} ({b['n'] / a['n']:.0f}x the input): ratio {ratio:.2f} -> "
              f"{'GROWS with the batch' if grows else 'bounded (streaming)'}")
    print()
    print("commands (flexunet = python -m flexunet --quiet; $WORK = the work folder):")
    for r in rows:
        print(f"  {r['cmdline']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
