"""Draw docs/img/overlay.png: an axial slice of a generated phantom CT beside the same slice with its labels.

    python tools/make_overlay.py [--out docs/img/overlay.png] [--cases 3] [--seed 0]

Runs ``flexunet phantom`` into a temporary folder, picks the axial slice with the most tumour among
the cases, and writes two panels: the slice in the HU window [-100, 250], and the slice with liver
(blue) and tumour (red) blended over it and outlined. Shown radiologically (anterior at the top, the
patient's right on the image's left), as ``flexunet slice`` writes slices.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
HU_WINDOW = (-100.0, 250.0)
COLOURS = {1: (0, 0, 255), 2: (255, 0, 0)}  # the configs' rgb_map: liver blue, tumour red


def radiological(volume: nib.Nifti1Image) -> np.ndarray:
    """(X, Y, Z) array of ``volume`` in RAS+ turned into (Z, rows, columns): rows from anterior to
    posterior, columns from the patient's right to left."""
    canonical = nib.as_closest_canonical(volume)
    arr = np.asarray(canonical.dataobj)
    return np.transpose(arr[::-1, ::-1, :], (2, 1, 0))


def best_slice(cases_dir: Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    """(HU slice, label slice, case, z) of the axial slice with the most tumour voxels."""
    best = None
    for case in sorted(p for p in cases_dir.iterdir() if (p / "label.nii.gz").exists()):
        label = radiological(nib.load(case / "label.nii.gz"))
        per_slice = (label == 2).sum(axis=(1, 2))
        z = int(per_slice.argmax())
        if best is None or per_slice[z] > best[0]:
            best = (per_slice[z], case, z, label[z])
    _, case, z, label = best
    image = radiological(nib.load(case / "image.nii.gz"))[z].astype(np.float32)
    return image, label, case.name, z


def panels(image: np.ndarray, label: np.ndarray, scale: int = 2) -> Image.Image:
    """The windowed slice and the overlay side by side, each ``scale`` times the slice's size."""
    lo, hi = HU_WINDOW
    grey = (np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    over = rgb.copy()
    for value, colour in COLOURS.items():
        m = label == value
        over[m] = 0.55 * over[m] + 0.45 * np.asarray(colour, np.float32)
        # a one-pixel outline of the class: pixels of it with a neighbour outside it
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        over[edge] = colour
    h, w = grey.shape
    left = Image.fromarray(rgb.astype(np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
    right = Image.fromarray(over.astype(np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
    bar = 22
    out = Image.new("RGB", (2 * w * scale + 6, h * scale + bar), (255, 255, 255))
    out.paste(left, (0, bar))
    out.paste(right, (w * scale + 6, bar))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    draw.text((4, 5), f"phantom CT, HU window [{lo:.0f}, {hi:.0f}]", fill=(0, 0, 0), font=font)
    draw.text((w * scale + 10, 5), "labels: liver (blue), tumour (red)", fill=(0, 0, 0), font=font)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "overlay.png")
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "flexunet", "--quiet", "phantom", tmp,
                        "--cases", str(args.cases), "--seed", str(args.seed)], check=True)
        image, label, case, z = best_slice(Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    panels(image, label).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB): {case}, axial slice {z}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
