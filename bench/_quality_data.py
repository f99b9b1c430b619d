"""Data preparation for ``bench/quality.py`` (real CT, the original's preprocessing, phantoms).

Everything is written under a cache folder (``bench/results/cache/`` by
default, git-ignored) and reused on the next run when its parameters match.

Facts this module relies on (``../shared/data/README.md``; :func:`prepare_real`
checks the voxel counts and notes any difference):

* 3D-IRCADb-01 patients 1, 7 and 17 come from ``../shared/data/3Dircadb1`` and
  are imported with ``flexunet import ircadb`` unchanged.  The importer takes a
  tumour mask only when it lies in the liver mask, so patient 1 gets its seven
  tumours (2,650,863 liver + 214,268 tumour voxels), patient 7 none (its
  ``tumor`` is another organ's: 1,461,944 liver voxels) and patient 17 two
  (1,920,507 + 185,990).  The structures it took and left out are kept in the
  report (``import_notes``).
* LiTS volume 117 comes from the PyPI wheel ``liver-ct-segmentation-package
  ==1.6.0`` (``pip download --no-deps``).  Its ``img_117.mrc`` is a 128^3
  **crop around the liver** (the liver touches all six faces), with no voxel
  size, and its array axes are **not** (R, A, S): after ``flexunet import
  mrc`` (diagonal affine, axes taken as RAS) axis 0 runs inferior->superior,
  axis 1 patient's right->left and axis 2 anterior->posterior.  Sliced along
  axis 2 as imported, the model would see *coronal* sections of this case and
  axial ones of IRCADb.  :func:`fix_lits117` therefore permutes the axes to
  RAS, assumes 1.45 mm isotropic voxels (vertebral pitch of 20-23 voxels
  along the body axis, a liver of 1.9 L) and pads the crop with air
  (-1000 HU, label 0) to a 256x256 axial canvas, so that the liver has about
  the same size in pixels as in the IRCADb slices.  Where the crop goes on the
  canvas is decided by this case alone: its own liver centroid (from its own
  labels) is put at the fixed canvas position :data:`LITS_LIVER_AT`, right of
  the midline and centred front to back.  No other patient is looked at, so
  the placement is the same in every fold and cannot carry anything of a test
  patient.
* The original recipe has no HU window: :func:`make_minmax` maps each volume's
  own HU min..max linearly to 0..255 (rounded, as an 8-bit PNG would hold it)
  and the benchmark slices those volumes with ``hu_window = (0, 255)``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
IRCADB_ROOT = SHARED_DATA / "3Dircadb1"
WHEEL_SPEC = "liver-ct-segmentation-package==1.6.0"
PREP_VERSION = 5

#: the IRCADb patients of the benchmark and their voxel counts under the LiTS labelling rule
#: (label 1 liver, label 2 tumour), as ../shared/data/README.md gives them
IRCADB_PATIENTS = (1, 7, 17)
EXPECTED_VOXELS = {"ircadb_1": (2_650_863, 214_268), "ircadb_7": (1_461_944, 0), "ircadb_17": (1_920_507, 185_990)}

# LiTS 117 fix (see the module docstring)
LITS_SPACING_MM = 1.45
LITS_CANVAS = 256
#: where LiTS 117's own liver centroid goes on the canvas, as fractions of the RAS in-plane axes (i towards
#: the patient's right, j towards anterior): a fixed position, a quarter of the way from the canvas centre to
#: its right edge and centred front to back (the liver lies right of the midline); measured on no patient
LITS_LIVER_AT = (0.625, 0.5)


def log(msg: str) -> None:
    print(f"[quality] {msg}", flush=True)


# --------------------------------------------------------------------------- small I/O helpers


def _write_case(case_dir: Path, image: np.ndarray, label: np.ndarray, affine: np.ndarray, image_dtype=None) -> None:
    from flexunet.io.volumes import write_nifti

    case_dir.mkdir(parents=True, exist_ok=True)
    if image_dtype is None:
        image_dtype = np.int16 if np.array_equal(np.rint(image), image) and image.min() >= -32768 \
            and image.max() <= 32767 else np.float32
    write_nifti(image.astype(image_dtype), case_dir / "image.nii.gz", affine=affine, dtype=image_dtype)
    write_nifti(label.astype(np.uint8), case_dir / "label.nii.gz", affine=affine, dtype=np.uint8)


def link_case(src_dir: Path, dst_dir: Path) -> None:
    """``dst_dir`` -> ``src_dir`` as a symlink (a copy where symlinks are not allowed)."""
    if dst_dir.is_symlink() or dst_dir.exists():
        if dst_dir.is_symlink() or dst_dir.is_file():
            dst_dir.unlink()
        else:
            shutil.rmtree(dst_dir)
    dst_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst_dir.symlink_to(src_dir.resolve(), target_is_directory=True)
    except OSError:
        shutil.copytree(src_dir, dst_dir)


def _stamp_ok(folder: Path, params: dict) -> bool:
    f = folder / "prep.json"
    if not f.exists():
        return False
    try:
        return json.loads(f.read_text()).get("params") == params
    except (OSError, ValueError):
        return False


def _write_stamp(folder: Path, params: dict, facts: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prep.json").write_text(json.dumps({"params": params, "facts": facts or {}}, indent=1) + "\n")


def _read_stamp_facts(folder: Path) -> dict:
    try:
        return json.loads((folder / "prep.json").read_text()).get("facts", {})
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- facts about a case


def view_of(arr_can: np.ndarray, k: int) -> np.ndarray:
    from flexunet.data.slicer import to_view

    return to_view(arr_can[:, :, k])


def case_facts(case_dir: Path) -> dict:
    """Shape, spacing, axis codes, HU range, voxel counts, liver slices and liver centroid in the slicer's display."""
    import nibabel as nib

    from flexunet.io.volumes import read_volume, to_canonical

    img = read_volume(case_dir / "image.nii.gz")
    lab = read_volume(case_dir / "label.nii.gz", label=True)
    can, _ = to_canonical(img)
    lcan = np.asarray(to_canonical(lab)[0].array)
    per = (lcan > 0).reshape(-1, lcan.shape[2]).sum(0)
    k = int(per.argmax())
    m = view_of(lcan, k) > 0
    ys, xs = np.nonzero(m)
    bone = view_of(np.asarray(can.array), k) > 300
    by, bx = np.nonzero(bone)
    li, lj = np.nonzero(lcan[:, :, k] > 0)
    return {
        "shape": [int(s) for s in img.array.shape],
        "spacing_mm": [round(float(s), 4) for s in img.spacing],
        "axcodes": "".join(nib.aff2axcodes(img.affine)),
        "hu_min": float(img.array.min()),
        "hu_max": float(img.array.max()),
        "voxels_liver_label1": int(np.count_nonzero(lab.array == 1)),
        "voxels_tumour_label2": int(np.count_nonzero(lab.array == 2)),
        "liver_slices": int((per > 0).sum()),
        "slices": int(lcan.shape[2]),
        # liver centroid on the largest liver slice as fractions of the canonical RAS axes (i -> patient's right,
        # j -> anterior): i > 0.5 means the liver lies on the patient's right, as it should
        "liver_centroid_ras_ij": [round(float(li.mean() / lcan.shape[0]), 3),
                                  round(float(lj.mean() / lcan.shape[1]), 3)],
        # the same in the slicer's display, as fractions: rows from the top, cols from the left
        "liver_centroid_view": [round(float(ys.mean() / m.shape[0]), 3), round(float(xs.mean() / m.shape[1]), 3)],
        "bone_centroid_view": ([round(float(by.mean() / m.shape[0]), 3), round(float(bx.mean() / m.shape[1]), 3)]
                               if len(by) else None),
    }


def orientation_png(case_dirs: dict[str, Path], out_png: Path, size: int = 256) -> Path:
    """One display-oriented slice (largest liver area) per case with the label blended in: the orientation check."""
    from PIL import Image

    from flexunet.data.slicer import hu_to_uint8
    from flexunet.io.volumes import read_volume, to_canonical

    tiles = []
    for cid, d in case_dirs.items():
        can = to_canonical(read_volume(d / "image.nii.gz"))[0]
        lcan = np.asarray(to_canonical(read_volume(d / "label.nii.gz", label=True))[0].array)
        k = int((lcan > 0).reshape(-1, lcan.shape[2]).sum(0).argmax())
        v = view_of(hu_to_uint8(np.asarray(can.array), (-100, 250)), k).astype(np.float64)
        m = view_of(lcan, k)
        rgb = np.stack([v] * 3, -1)
        for cls, col in ((1, (0, 0, 255)), (2, (255, 0, 0))):
            rgb[m == cls] = 0.65 * rgb[m == cls] + 0.35 * np.array(col)
        tiles.append(np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((size, size), Image.BILINEAR)))
        tiles.append(np.full((size, 4, 3), 255, np.uint8))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles[:-1], 1)).save(out_png)
    return out_png


# --------------------------------------------------------------------------- LiTS 117 from PyPI


def fetch_lits117(cache: Path, python: str = sys.executable) -> tuple[Path | None, str]:
    """``cache/lits117/{img,lab}_117.mrc`` from the PyPI wheel; (folder or None, message)."""
    dst = cache / "lits117"
    if (dst / "img_117.mrc").exists() and (dst / "lab_117.mrc").exists():
        return dst, f"LiTS 117 from {dst} (cached)"
    wheels = sorted(cache.glob("liver_ct_segmentation_package-1.6.0-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [python, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", str(cache)]
        log("downloading " + " ".join(cmd[2:]))
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"LiTS 117 skipped: pip download failed ({exc})"
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
            return None, f"LiTS 117 skipped: pip download failed (exit {r.returncode}: {tail[0]})"
        wheels = sorted(cache.glob("liver_ct_segmentation_package-1.6.0-*.whl"))
        if not wheels:
            return None, "LiTS 117 skipped: pip download wrote no liver_ct_segmentation_package-1.6.0 wheel"
    dst.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as z:
        for name in ("img_117.mrc", "lab_117.mrc"):
            member = f"liver_ct_segmentation_package/data/{name}"
            try:
                data = z.read(member)
            except KeyError:
                return None, f"LiTS 117 skipped: {wheels[0].name} has no {member}"
            (dst / name).write_bytes(data)
    return dst, f"LiTS 117 from {wheels[0].name}"


def lits_to_ras(x: np.ndarray) -> np.ndarray:
    """An array of the imported LiTS-117 crop with its axes as RAS (see :func:`fix_lits117`)."""
    x = np.transpose(x, (1, 2, 0))  # (R->L, A->P, I->S)
    return x[::-1, ::-1, :]         # (L->R, P->A, I->S)


def crop_origin(label_ras: np.ndarray, canvas: int, liver_at: tuple[float, float] = LITS_LIVER_AT) -> tuple[int, int]:
    """Where a crop goes on a ``canvas`` x ``canvas`` grid so that its own liver centroid (label >= 1, in-plane
    RAS ``i, j``) lands at ``liver_at`` (fractions of the canvas), clipped so the crop stays on the canvas.

    Depends only on this crop's labels and the fixed ``liver_at``.
    """
    ni, nj = label_ras.shape[:2]
    big = max(canvas, ni, nj)
    fg = label_ras >= 1
    n = int(fg.sum())
    if n:
        ci = float((fg.sum(axis=(1, 2)) * np.arange(ni)).sum() / n)
        cj = float((fg.sum(axis=(0, 2)) * np.arange(nj)).sum() / n)
    else:  # no liver: centre the crop
        ci, cj = (ni - 1) / 2.0, (nj - 1) / 2.0
    i0 = int(np.clip(round(liver_at[0] * (big - 1) - ci), 0, big - ni))
    j0 = int(np.clip(round(liver_at[1] * (big - 1) - cj), 0, big - nj))
    return i0, j0


def fix_lits117(raw_case: Path, dst_case: Path, spacing: float = LITS_SPACING_MM, canvas: int = LITS_CANVAS,
                liver_at: tuple[float, float] = LITS_LIVER_AT) -> dict:
    """Reorient the imported LiTS-117 crop to RAS (axial slices like IRCADb) and pad it onto an air canvas.

    Imported array axes (measured on the anatomy, see the module docstring):
    0 = inferior->superior, 1 = right->left, 2 = anterior->posterior.  RAS wants
    0 = left->right, 1 = posterior->anterior, 2 = inferior->superior.  The crop is placed so that its own
    liver centroid lands at ``liver_at`` (:func:`crop_origin`).
    """
    from flexunet.io.volumes import read_volume

    img = read_volume(raw_case / "image.nii.gz")
    lab = read_volume(raw_case / "label.nii.gz", label=True)
    a = lits_to_ras(np.asarray(img.array, dtype=np.float32))
    lb = lits_to_ras(np.asarray(lab.array).astype(np.uint8))
    ni, nj, nk = a.shape
    big = max(canvas, ni, nj)
    i0, j0 = crop_origin(lb, canvas, liver_at)
    img_c = np.full((big, big, nk), -1000.0, np.float32)
    lab_c = np.zeros((big, big, nk), np.uint8)
    img_c[i0:i0 + ni, j0:j0 + nj] = a
    lab_c[i0:i0 + ni, j0:j0 + nj] = lb
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [-0.5 * (big - 1) * spacing, -0.5 * (big - 1) * spacing, -0.5 * (nk - 1) * spacing]
    _write_case(dst_case, img_c, lab_c, affine, image_dtype=np.float32)
    return {
        "axes_as_imported": "axis0 inferior->superior, axis1 right->left, axis2 anterior->posterior "
                            "(affine says RAS; the anatomy says SLP)",
        "transform": "array.transpose(1, 2, 0)[::-1, ::-1, :] -> RAS; slices along k are axial",
        "spacing_mm_assumed": spacing,
        "canvas": [big, big, nk],
        "placement": f"own liver centroid at canvas fractions (i, j) = {tuple(liver_at)}",
        "crop_origin_on_canvas": [i0, j0],
        "pad_value_hu": -1000,
    }


# --------------------------------------------------------------------------- real data


def _manifest_rows(raw: Path) -> dict[str, dict]:
    from flexunet.data.importers import read_manifest

    if not (raw / "manifest.csv").exists():
        return {}
    return {row["case_id"]: row for row in read_manifest(raw / "manifest.csv")}


def _counts(row: dict | None) -> tuple[int, int] | None:
    try:
        return int(row["n_liver"]), int(row["n_tumour"])
    except (TypeError, KeyError, ValueError):
        return None


def prepare_real(cache: Path, data_root: Path = SHARED_DATA, python: str = sys.executable) -> dict:
    """Import IRCADb 1, 7 and 17 and LiTS 117 into ``cache/cases_raw``, build ``cache/cases`` (fixed LiTS 117).

    An IRCADb case is (re)imported when it is missing or its manifest counts differ from
    :data:`EXPECTED_VOXELS` (an import made before the importer took tumours by their overlap with the
    liver); counts that still differ after a fresh import are noted.

    Returns ``{"cases_dir", "cases": {case_id: facts}, "notes": [...], "import_notes": {case_id: text},
    "lits117_fix": {...}}``; cases that cannot be had are left out with a note.
    """
    from flexunet.data.importers import import_dataset

    notes: list[str] = []
    raw = cache / "cases_raw"
    cases = cache / "cases"
    ircadb_root = data_root / "3Dircadb1"
    patients = {n: ircadb_root / f"3Dircadb1.{n}" for n in IRCADB_PATIENTS}
    if not ircadb_root.is_dir():
        notes.append(f"3D-IRCADb-01 not found at {ircadb_root}: real-CT folds skipped")
    rows = _manifest_rows(raw)
    for n, p in patients.items():
        cid = f"ircadb_{n}"
        have = (raw / cid / "label.nii.gz").exists()
        if have and _counts(rows.get(cid)) == EXPECTED_VOXELS[cid]:
            continue
        if not p.is_dir():
            if ircadb_root.is_dir():
                notes.append(f"{p} not found: {cid} skipped")
            continue
        if have:
            log(f"{cid}: cached import has (liver, tumour) voxels {_counts(rows.get(cid))}, expected "
                f"{EXPECTED_VOXELS[cid]}: importing again")
            shutil.rmtree(raw / cid)
        log(f"importing {p}")
        import_dataset("ircadb", p, raw, progress=False)
        rows = _manifest_rows(raw)
    import_notes = {}
    for n in patients:
        cid = f"ircadb_{n}"
        if cid in rows:
            import_notes[cid] = rows[cid].get("notes", "")
            got = _counts(rows[cid])
            if got != EXPECTED_VOXELS[cid]:
                notes.append(f"{cid}: imported (liver, tumour) voxels {got} differ from ../shared/data/README.md's "
                             f"{EXPECTED_VOXELS[cid]}")
    lits_dir, msg = fetch_lits117(cache, python)
    notes.append(msg)
    if lits_dir is not None and not (raw / "mrc_117" / "label.nii.gz").exists():
        log(f"importing {lits_dir}")
        import_dataset("mrc", lits_dir, raw, progress=False)

    params = {"version": PREP_VERSION, "lits_spacing": LITS_SPACING_MM, "canvas": LITS_CANVAS,
              "liver_at": list(LITS_LIVER_AT),
              "have": sorted(p.name for p in raw.iterdir() if (p / "label.nii.gz").exists()) if raw.is_dir() else [],
              "counts": {c: list(_counts(r) or ()) for c, r in sorted(rows.items())}}
    facts: dict = {}
    fix: dict = {}
    if not _stamp_ok(cases, params):
        if cases.exists():
            shutil.rmtree(cases)
        cases.mkdir(parents=True)
        for n in patients:
            cid = f"ircadb_{n}"
            if (raw / cid / "label.nii.gz").exists():
                link_case(raw / cid, cases / cid)
        if (raw / "mrc_117" / "label.nii.gz").exists():
            log("re-orienting LiTS 117 to RAS and padding it onto an air canvas")
            fix = fix_lits117(raw / "mrc_117", cases / "lits_117")
            fix["raw_import"] = case_facts(raw / "mrc_117")
        for d in sorted(cases.iterdir()):
            if (d / "label.nii.gz").exists():
                facts[d.name] = case_facts(d)
        if facts:
            orientation_png({c: cases / c for c in facts}, cache / "orientation.png")
        _write_stamp(cases, params, {"cases": facts, "lits117_fix": fix})
    else:
        st = _read_stamp_facts(cases)
        facts, fix = st.get("cases", {}), st.get("lits117_fix", {})
    if (cache / "orientation.png").exists():
        notes.append(f"orientation check (largest liver slice of each case as the slicer shows it): "
                     f"{cache / 'orientation.png'}")
    if "lits_117" in facts:
        right = facts["lits_117"]["liver_centroid_ras_ij"][0] > 0.5
        notes.append("LiTS 117 liver on the patient's right after the fix: " + ("yes" if right else
                                                                                "NO (check orientation.png)"))
    return {"cases_dir": str(cases), "cases": facts, "notes": notes, "import_notes": import_notes,
            "lits117_fix": fix}


# --------------------------------------------------------------------------- the original's preprocessing


def make_minmax(src_cases: Path, dst_cases: Path, case_ids) -> dict:
    """Per-volume min-max of HU -> 0..255 (rounded) for the original recipe; labels linked unchanged.

    Returns ``{case_id: [hu_min, hu_max]}``.  Cached: a case whose ``prep.json`` matches is not redone.
    """
    from flexunet.io.volumes import read_volume, write_nifti

    out = {}
    for cid in case_ids:
        src, dst = Path(src_cases) / cid, Path(dst_cases) / cid
        img_path = (src / "image.nii.gz").resolve()
        params = {"version": PREP_VERSION, "src": str(img_path), "mtime": os.path.getmtime(img_path)}
        if _stamp_ok(dst, params):
            out[cid] = _read_stamp_facts(dst).get("hu_range")
            continue
        img = read_volume(src / "image.nii.gz")
        a = np.asarray(img.array, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        u8 = np.rint((a - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.int16)
        dst.mkdir(parents=True, exist_ok=True)
        write_nifti(u8, dst / "image.nii.gz", affine=img.affine, dtype=np.int16)
        lab_dst = dst / "label.nii.gz"
        if lab_dst.exists() or lab_dst.is_symlink():
            lab_dst.unlink()
        shutil.copyfile((src / "label.nii.gz").resolve(), lab_dst)
        _write_stamp(dst, params, {"hu_range": [lo, hi]})
        out[cid] = [lo, hi]
    return out


# --------------------------------------------------------------------------- phantoms


def make_phantoms(dst: Path, n: int, seed: int = 0, shape=None, spacing=None) -> list[str]:
    """``n`` phantom cases (``flexunet phantom``), cached by parameters; returns their case ids."""
    from flexunet.data.phantom import DEFAULT_SHAPE, DEFAULT_SPACING, write_phantoms

    shape = tuple(shape or DEFAULT_SHAPE)
    spacing = tuple(spacing or DEFAULT_SPACING)
    params = {"version": PREP_VERSION, "n": n, "seed": seed, "shape": list(shape), "spacing": list(spacing)}
    if not _stamp_ok(dst, params):
        if dst.exists():
            shutil.rmtree(dst)
        log(f"writing {n} phantom cases to {dst}")
        write_phantoms(dst, cases=n, seed=seed, shape=shape, spacing=spacing)
        _write_stamp(dst, params)
    return sorted(p.name for p in dst.iterdir() if (p / "label.nii.gz").exists())
