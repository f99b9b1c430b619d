#!/usr/bin/env python
"""Throughput of the online augmenter (flexunet.data.augment), single process.

Synthetic CxSxS images in [0, 1] with a 3-class mask; every transform enabled.
Prints samples/s for probability 1.0 (every transform on every sample: worst
case) and for the configured/default probability (0.5: the typical case), plus
per-transform cost measured alone at probability 1.

    python bench/augment_speed.py --size 512 --n 200
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import torch  # noqa: E402

from flexunet.config import config_from_dict  # noqa: E402
from flexunet.data.augment import TRANSFORMS, build_augmenter  # noqa: E402

ALL_ON = {
    "rotation": True, "angles": [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 330],
    "hflip": True, "vflip": True, "shrinks": [0.6, 0.8], "shears": [0.1],
    "deformation": True, "distortion": True, "sharpening": True, "brightening": True,
    "barrdistortion": True, "pincdistortion": True,
    "gaussian_noise": True, "gaussian_blur": True, "contrast": True, "gamma": True,
    "low_resolution": True, "scaling": True, "brightness_multiplicative": True,
}
EXTRA = {
    "deformation": {"alpha": 1300, "sigmoids": [8.0]},
    "distortion": {"gaussian_filter_rsigma": 40, "gaussian_filter_sigma": 0.5, "distortions": [0.02, 0.03]},
    "barrdistortion": {"radius": 0.3, "amount": 0.3, "centers": [(0.3, 0.3), (0.5, 0.5), (0.7, 0.7)]},
    "pincdistortion": {"radius": 0.3, "amount": -0.3, "centers": [(0.3, 0.3), (0.5, 0.5), (0.7, 0.7)]},
}


def make_cfg(augmentor: dict, size: int, channels: int):
    raw = {"model": {"generator": True, "image_width": size, "image_height": size, "image_channels": channels,
                     "num_layers": 1},
           "augmentor": augmentor, **EXTRA}
    return config_from_dict(raw, source="<bench>")


def synthetic(n: int, size: int, channels: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
        organ = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
        lesion = (xx - cx - r / 3) ** 2 + (yy - cy) ** 2 < (r / 3) ** 2
        mask = organ.astype(np.int64) + lesion
        img = (0.2 + 0.4 * organ + 0.2 * lesion + 0.05 * rng.standard_normal((size, size))).astype(np.float32)
        out.append((np.repeat(np.clip(img, 0, 1)[None], channels, axis=0), mask))
    return out


def rate(aug, samples, n: int, seed: int = 0) -> tuple[float, float]:
    """(samples per wall-clock second, CPU milliseconds per sample)."""
    rng = np.random.default_rng(seed)
    aug(*samples[0], rng)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        aug(*samples[i % len(samples)], rng)
    return n / (time.perf_counter() - t0), 1000.0 * (time.process_time() - c0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="image height = width (default 512)")
    ap.add_argument("--n", type=int, default=200, help="augmented samples per measurement (default 200)")
    ap.add_argument("--channels", type=int, default=3, choices=(1, 3))
    ap.add_argument("--probability", type=float, default=0.5, help="typical-case probability (default 0.5)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1, as in a DataLoader worker; 0 = torch default)")
    ap.add_argument("--per-transform", action=argparse.BooleanOptionalAction, default=True,
                    help="also time each transform alone (n/8 samples each)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    _common.print_header("Augmentation throughput", threads=torch.get_num_threads(),
                         argv=None if argv is None else [sys.argv[0], *argv])

    samples = synthetic(8, args.size, args.channels)
    rows = []
    for p in (1.0, args.probability):
        aug = build_augmenter(make_cfg({**ALL_ON, "probability": p}, args.size, args.channels))
        rows.append((f"all transforms, p={p:g}", rate(aug, samples, args.n)))
    if args.per_transform:
        per_n = max(10, args.n // 8)
        for name in TRANSFORMS:
            only = {k: v for k, v in ALL_ON.items() if k == name or (k == "angles" and name == "rotation")}
            only.setdefault(name, True)
            aug = build_augmenter(make_cfg({**only, "probability": 1.0}, args.size, args.channels))
            rows.append((f"  {name} only, p=1", rate(aug, samples, per_n)))

    print(f"# {args.channels}x{args.size}x{args.size} float32, n={args.n}, torch threads={torch.get_num_threads()}, "
          f"torch {torch.__version__}, numpy {np.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print("# samples/s and ms/sample are wall-clock; cpu ms/sample is this process's CPU time "
          "(less sensitive to other load)")
    print(f"{'case':<40} {'samples/s':>10} {'ms/sample':>10} {'cpu ms/sample':>14}")
    for name, (r, cpu_ms) in rows:
        print(f"{name:<40} {r:>10.1f} {1000.0 / r:>10.2f} {cpu_ms:>14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
