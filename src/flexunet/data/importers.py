"""Import public liver-CT data sets into FlexUNet's canonical case layout.

``import_dataset(fmt, src, dst)`` reads one of the layouts below and writes::

    dst/<case_id>/image.nii.gz   CT in HU (int16 when every value is an integer
                                 in int16 range, else float32), the source's
                                 own geometry (affine) kept
    dst/<case_id>/label.nii.gz   uint8, 0 background / 1 liver / 2 tumour,
                                 same shape and affine as the image
    dst/manifest.csv             one row per case (written atomically)

Supported layouts (``fmt``):

* ``lits`` / ``kaggle``: ``volume-N.nii[.gz]`` + ``segmentation-N.nii[.gz]``
  anywhere under ``src`` -> case ``lits_N``.
* ``msd``: Medical Segmentation Decathlon ``Task03_Liver``:
  ``imagesTr/liver_N.nii.gz`` + ``labelsTr/liver_N.nii.gz`` (``src`` is the
  task folder or a folder above it; ``._*`` files skipped) -> ``msd_N``.
* ``ircadb``: 3D-IRCADb patient folder(s) ``3Dircadb1.N`` with
  ``PATIENT_DICOM`` (folder or .zip) and either ``MASKS_DICOM`` (folder or
  .zip; label 2 = union of the liver-tumour masks, label 1 = ``liver``
  mask minus label 2) or ``liver_label.nii.gz`` (label 1 only, placed on the
  CT grid by geometry) -> ``ircadb_N``.  A structure is a liver tumour when
  its name suggests a tumour (``livertumor01``, ``tumour``, ``lesion``,
  ``metastasis`` ...) and at least ``TUMOUR_IN_LIVER_MIN`` (50%) of its voxels
  lie inside the ``liver`` mask: the masks decide, not the name (a tumour of
  another organ beside the liver is left out).  Cysts (``liverkyst``) stay
  liver.  The notes say which structures were taken and which left out, with
  their overlap with the liver.
* ``mrc``: ``img_N.mrc`` + ``lab_N.mrc`` (e.g. LiTS volume 117 from the
  ``liver-ct-segmentation-package`` wheel) -> ``mrc_N``.

The manifest is merged with an existing ``dst/manifest.csv``: rows of the
cases imported now are replaced, other rows are kept, so several sources
can be imported into one folder.  Paths in the manifest are relative to it.
With ``progress`` each case prints one line and its notes (stderr).
"""

from __future__ import annotations

import csv
import io
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from flexunet.errors import DataError
from flexunet.io.atomic import atomic_save_text, safe_child
from flexunet.io.volumes import (
    Volume,
    check_same_geometry,
    dicom_subfolders,
    read_dicom_series,
    read_mrc,
    read_nifti,
    read_volume,
    resample_label_to,
    write_nifti,
)

__all__ = ["import_dataset", "FORMATS", "MANIFEST_COLUMNS", "TUMOUR_IN_LIVER_MIN", "read_manifest"]

MANIFEST_COLUMNS = ["case_id", "image", "label", "shape", "spacing", "n_liver", "n_tumour", "source", "notes"]
FORMATS = ("lits", "kaggle", "msd", "ircadb", "mrc")
LABEL_VALUES = {0: "background", 1: "liver", 2: "tumour"}


@dataclass
class _Case:
    case_id: str
    source: str
    load: Callable[[], tuple[Volume, np.ndarray, list[str]]]


# --------------------------------------------------------------------------- helpers


def _hidden(p: Path) -> bool:
    return p.name.startswith("._") or p.name.startswith(".") or "__MACOSX" in p.parts


def _unexpected_values(arr: np.ndarray, allowed: tuple[int, ...]) -> list:
    """Distinct values of ``arr`` outside ``allowed`` (fast path: min/max only, no sort of the volume)."""
    if arr.size == 0:
        return []
    arr = arr.ravel(order="K")  # a view in memory order: a C-order mask over a Fortran array is ~30x slower
    lo, hi = arr.min(), arr.max()
    if lo in allowed and hi in allowed and all(v in allowed for v in range(int(lo), int(hi) + 1)):
        return []
    ok = np.zeros(arr.shape, dtype=bool)
    for v in allowed:
        ok |= arr == v
    return np.unique(arr[~ok]).tolist()


def _label_uint8(arr: np.ndarray, source: str) -> np.ndarray:
    """Check that a label holds only 0/1/2 and return it as uint8."""
    bad = _unexpected_values(arr, tuple(LABEL_VALUES))
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
        raise DataError(
            f"{source}: holds label values {shown}; expected only 0 (background), 1 (liver), 2 (tumour)"
        )
    return arr.astype(np.uint8, copy=False)


def _image_for_writing(arr: np.ndarray) -> np.ndarray:
    """int16 when the HU values are integers in int16 range (lossless, smaller, faster), else float32."""
    if arr.size and np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(arr.min()), float(arr.max())
        if -32768 <= lo and hi <= 32767:
            as_int = arr.astype(np.int16)  # keeps the memory order
            if np.array_equal(as_int, arr):
                return as_int
    return arr.astype(np.float32, copy=False)


def _pair_image_label(image: Volume, label: Volume, case_id: str) -> tuple[Volume, np.ndarray]:
    check_same_geometry(image, label, f"case {case_id} ({image.source} + {label.source})")
    return image, _label_uint8(label.array, label.source)


def _fmt_triplet(values, fmt: str) -> str:
    return "x".join(fmt.format(v) for v in values)


# --------------------------------------------------------------------------- LiTS


_LITS_VOL = re.compile(r"^volume-(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_LITS_SEG = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$", re.IGNORECASE)


def _index_files(src: Path, pattern: re.Pattern, what: str) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for f in sorted(src.rglob("*")):
        if _hidden(f) or not f.is_file():
            continue
        m = pattern.match(f.name)
        if not m:
            continue
        n = int(m.group(1))
        if n in found:
            raise DataError(f"{src}: {what} {n} appears twice ({found[n]} and {f}); expected one file per case")
        found[n] = f
    return found


def _nifti_pair_loader(img_path: Path, lab_path: Path, case_id: str):
    def load():
        image = read_volume(img_path)
        label = read_nifti(lab_path, label=True)
        image, lab = _pair_image_label(image, label, case_id)
        return image, lab, []

    return load


def _discover_lits(src: Path) -> list[_Case]:
    vols = _index_files(src, _LITS_VOL, "volume")
    segs = _index_files(src, _LITS_SEG, "segmentation")
    if not vols:
        raise DataError(f"{src}: holds no volume-N.nii[.gz] files; expected the LiTS/Kaggle layout")
    return _paired_cases(vols, segs, "lits", lambda n, k: (
        f"{vols[n]}: has no segmentation-{n}.nii[.gz] under {src} ({k} volumes unpaired); "
        "expected one segmentation per volume"))


def _paired_cases(images: dict, labels: dict, prefix: str, unpaired_message) -> list[_Case]:
    """Cases ``<prefix>_<n>`` from image and label files indexed by case number; an image without
    a label is a DataError worded by ``unpaired_message(n, count)``."""
    missing = sorted(set(images) - set(labels))
    if missing:
        raise DataError(unpaired_message(missing[0], len(missing)))
    return [_Case(f"{prefix}_{n}", f"{images[n]} + {labels[n]}",
                  _nifti_pair_loader(images[n], labels[n], f"{prefix}_{n}")) for n in sorted(images)]


# --------------------------------------------------------------------------- MSD


_MSD_FILE = re.compile(r"^liver_(\d+)\.nii(\.gz)?$", re.IGNORECASE)


def _find_msd_task(src: Path) -> Path:
    if (src / "imagesTr").is_dir():
        return src
    candidates = sorted(p.parent for p in src.rglob("imagesTr") if p.is_dir() and (p.parent / "labelsTr").is_dir())
    if not candidates:
        raise DataError(f"{src}: holds no imagesTr/labelsTr folders; expected the MSD Task03_Liver layout")
    if len(candidates) > 1:
        liver = [c for c in candidates if "liver" in c.name.lower()]
        if len(liver) == 1:
            return liver[0]
        raise DataError(
            f"{src}: holds several MSD task folders ({', '.join(str(c) for c in candidates)}); "
            "expected one Task03_Liver (pass it as the source)"
        )
    return candidates[0]


def _discover_msd(src: Path) -> list[_Case]:
    task = _find_msd_task(src)
    if not (task / "labelsTr").is_dir():
        raise DataError(f"{task}: has imagesTr but no labelsTr folder; expected both (MSD layout)")

    def index(folder: Path) -> dict[int, Path]:
        out: dict[int, Path] = {}
        for f in sorted(folder.iterdir()):
            if _hidden(f) or not f.is_file():
                continue
            m = _MSD_FILE.match(f.name)
            if m:
                n = int(m.group(1))
                if n in out:
                    raise DataError(f"{folder}: case {n} appears twice ({out[n].name}, {f.name}); expected one file")
                out[n] = f
        return out

    images, labels = index(task / "imagesTr"), index(task / "labelsTr")
    if not images:
        raise DataError(f"{task / 'imagesTr'}: holds no liver_N.nii.gz files; expected MSD Task03_Liver images")
    return _paired_cases(images, labels, "msd", lambda n, k: (
        f"{images[n]}: has no {task / 'labelsTr'}/liver_{n}.nii.gz ({k} images unpaired); "
        "expected one label per training image"))


# --------------------------------------------------------------------------- IRCADb


_IRCAD_DIR = re.compile(r"^3dircadb(\d*)\.(\d+)$", re.IGNORECASE)

#: A MASKS_DICOM structure whose name suggests a tumour counts as a liver tumour only when at least
#: this fraction of its voxels lies inside the ``liver`` mask.  IRCADb's liver tumours lie wholly
#: inside it (100%); a tumour of a neighbouring organ touches it at most along a border (patient 7's
#: ``tumor``: 230 of 683556 voxels, 0.03%), so the decision does not hinge on the exact value.
TUMOUR_IN_LIVER_MIN = 0.5

_TUMOUR_WORDS = re.compile(r"tumou?r|lesion|metasta|carcinom|hcc|neoplas|nodul|cancer|malignan")
_CYST_WORDS = re.compile(r"cyst|kyst")


def _squash(name: str) -> str:
    """``name`` lower-cased with spaces, '_' and '-' removed."""
    return re.sub(r"[\s_\-]", "", name.lower())


def _tumour_name(name: str) -> bool:
    """Whether a structure's name suggests a tumour (tumor/tumour/lesion/metastasis/carcinoma/HCC/
    nodule/neoplasm/cancer/malignancy; case, spaces, '_' and '-' ignored).  A name is only a
    candidate: :func:`_ircadb_masks_label` takes it as liver tumour only when its mask lies in the
    liver (see :data:`TUMOUR_IN_LIVER_MIN`)."""
    return _TUMOUR_WORDS.search(_squash(name)) is not None


def _cyst_name(name: str) -> bool:
    """``cyst`` / ``kyst`` (IRCADb's ``liverkyst``) without a tumour word: a cyst, not a tumour."""
    return _CYST_WORDS.search(_squash(name)) is not None and not _tumour_name(name)


def _find_part(patient: Path, stem: str) -> Path | None:
    """``stem`` as a folder or ``stem.zip`` inside the patient folder (case-insensitive)."""
    for child in sorted(patient.iterdir()):
        if _hidden(child):
            continue
        low = child.name.lower()
        if low == stem.lower() and child.is_dir():
            return child
        if low == stem.lower() + ".zip" and child.is_file():
            return child
    return None


def _ircadb_case_id(patient: Path) -> str:
    m = _IRCAD_DIR.match(patient.name)
    if m:
        db = m.group(1) or "1"
        return f"ircadb_{int(m.group(2))}" if db == "1" else f"ircadb{db}_{int(m.group(2))}"
    digits = re.findall(r"\d+", patient.name)
    if digits:
        return f"ircadb_{int(digits[-1])}"
    raise DataError(f"{patient}: cannot derive a patient number from the folder name; expected e.g. 3Dircadb1.17")


def _ircadb_loader(patient: Path, case_id: str):
    def load():
        ct_src = _find_part(patient, "PATIENT_DICOM")
        if ct_src is None:
            raise DataError(f"{patient}: has no PATIENT_DICOM folder or PATIENT_DICOM.zip; expected the IRCADb CT")
        image = read_volume(ct_src)
        notes: list[str] = []
        masks_src = _find_part(patient, "MASKS_DICOM")
        if masks_src is not None:
            label = _ircadb_masks_label(masks_src, image, notes)
            unused = [p.name for p in (patient / "liver_label.nii.gz", patient / "liver_label.nii") if p.is_file()]
            if unused:
                notes.append(f"{unused[0]} not used ({masks_src.name} has the liver and tumour masks)")
        else:
            nii = next((p for p in (patient / "liver_label.nii.gz", patient / "liver_label.nii") if p.is_file()), None)
            if nii is None:
                raise DataError(
                    f"{patient}: has neither MASKS_DICOM(.zip) nor liver_label.nii.gz; expected liver labels"
                )
            lab = read_nifti(nii, label=True)
            bad = _unexpected_values(lab.array, (0, 1, 255))
            if bad:
                raise DataError(f"{nii}: holds values {bad[:8]}; expected a binary liver mask (0/1 or 0/255)")
            arr, how = resample_label_to(lab, image)
            label = (arr > 0).astype(np.uint8)
            notes.append(f"{nii.name}: {how}; liver mask includes tumours (no tumour masks)")
            n_before, n_after = int(np.count_nonzero(lab.array)), int(np.count_nonzero(label))
            if "exact" not in how or n_before != n_after:
                notes.append(f"liver voxels {n_before} in the mask file, {n_after} on the CT grid")
        return image, label, notes

    return load


def _percent(part: int, whole: int) -> str:
    """``part / whole`` as a percentage with the fewest decimals that show it as 0%, 100% or the
    liver-tumour threshold only when it is exactly so."""
    if whole == 0:
        return "0%"
    pct = 100.0 * part / whole
    marks = (0.0, 100.0, 100.0 * TUMOUR_IN_LIVER_MIN)
    for digits in range(7):
        text = f"{pct:.{digits}f}"
        if all(float(text) != m or pct == m for m in marks):
            return f"{text}%"
    return f"{pct}%"


def _ircadb_masks_label(masks_src: Path, image: Volume, notes: list[str]) -> np.ndarray:
    """Label (0/1/2) from IRCADb ``MASKS_DICOM``: one binary DICOM series (0/255) per structure.

    Label 2 = union of the structures taken as liver tumour, label 1 = ``liver`` mask minus
    label 2.  A structure is taken as liver tumour when its name suggests a tumour
    (:func:`_tumour_name`) **and** at least :data:`TUMOUR_IN_LIVER_MIN` of its voxels lie inside the
    ``liver`` mask; the name alone decides nothing (3D-IRCADb patient 7's ``tumor`` is a tumour of
    another organ beside the liver).  Cysts (``liverkyst``) stay liver.  What was taken, what was
    left out and why are appended to ``notes``.
    """
    folders = dicom_subfolders(masks_src)
    by_name: dict[str, list[str]] = {}
    for rel in folders:
        if rel == ".":
            continue
        by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
    liver = [rel for name, rels in by_name.items() if name.lower() == "liver" for rel in rels]
    if not liver:
        raise DataError(
            f"{masks_src}: has no 'liver' structure (found {', '.join(sorted(by_name)) or 'nothing'}); "
            "expected a MASKS_DICOM/liver series"
        )
    if len(liver) > 1:
        raise DataError(f"{masks_src}: has {len(liver)} 'liver' structures ({', '.join(liver)}); expected one")
    candidates = sorted(rel for name, rels in by_name.items() if _tumour_name(name) for rel in rels)

    def shown(rel: str) -> str:
        name = rel.rsplit("/", 1)[-1]
        return name if len(by_name[name]) == 1 else rel

    def mask(rel: str) -> np.ndarray:
        vol = read_dicom_series(masks_src, within=rel, label=True)
        check_same_geometry(image, vol, f"{masks_src}::{rel} vs the CT")
        bad = _unexpected_values(vol.array, (0, 1, 255))
        if bad:
            shown_bad = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
            raise DataError(f"{masks_src}::{rel}: holds values {shown_bad}; expected a binary mask (0/255 or 0/1)")
        return vol.array > 0

    liver_mask = mask(liver[0])
    tumour = np.zeros_like(liver_mask)
    taken: list[str] = []
    left_out: list[str] = []
    for rel in candidates:
        m = mask(rel)
        n = int(np.count_nonzero(m))
        inside = int(np.count_nonzero(m & liver_mask))
        if n == 0:
            left_out.append(f"{shown(rel)} [empty mask]")
            continue
        if inside >= TUMOUR_IN_LIVER_MIN * n:
            taken.append(f"{shown(rel)} [{n} voxels, {_percent(inside, n)} inside the liver]")
            tumour |= m
        else:
            left_out.append(f"{shown(rel)} [{n} voxels, {inside} ({_percent(inside, n)}) inside the liver, "
                            f"below the {TUMOUR_IN_LIVER_MIN:.0%} a liver tumour needs]")
    # element-wise ufuncs keep the (Fortran) memory order of the DICOM arrays
    label = liver_mask.astype(np.uint8)
    np.copyto(label, np.uint8(2), where=tumour)
    notes.append(f"liver tumour taken: {', '.join(taken) if taken else 'none'}")
    if left_out:
        notes.append(f"tumour-named structures left out: {', '.join(left_out)}")
    cysts = sorted(shown(rel) for name, rels in by_name.items() if _cyst_name(name) for rel in rels)
    if cysts:
        notes.append(f"cysts, not tumours (stay liver): {', '.join(cysts)}")
    others = sorted(
        shown(rel) for name, rels in by_name.items()
        if name.lower() != "liver" and not _tumour_name(name) and not _cyst_name(name) for rel in rels
    )
    if others:
        notes.append(f"other structures not used: {', '.join(others)}")
    outside = int(np.count_nonzero(tumour > liver_mask))
    if outside:
        notes.append(f"{outside} voxels of the taken tumour masks lie outside the liver mask (labelled tumour)")
    return label


def _discover_ircadb(src: Path) -> list[_Case]:
    def is_patient(p: Path) -> bool:
        return p.is_dir() and _find_part(p, "PATIENT_DICOM") is not None

    if is_patient(src):
        patients = [src]
    else:
        patients = [p for p in sorted(src.iterdir()) if not _hidden(p) and _IRCAD_DIR.match(p.name) and p.is_dir()]
        if not patients:  # e.g. src = the folder above "3Dircadb1/"
            patients = sorted(
                p for p in src.glob("*/*") if not _hidden(p) and _IRCAD_DIR.match(p.name) and p.is_dir()
            )
        if not patients:
            raise DataError(
                f"{src}: is neither an IRCADb patient folder (with PATIENT_DICOM) nor a folder of 3Dircadb1.* "
                "patients; expected the 3D-IRCADb layout"
            )
    cases, seen = [], {}
    for p in patients:
        cid = _ircadb_case_id(p)
        if cid in seen:
            raise DataError(f"{p}: case id {cid} already used by {seen[cid]}; expected distinct patient numbers")
        seen[cid] = p
        cases.append(_Case(cid, str(p), _ircadb_loader(p, cid)))
    return cases


# --------------------------------------------------------------------------- MRC


_MRC_IMG = re.compile(r"^img_(\d+)\.mrc$", re.IGNORECASE)
_MRC_LAB = re.compile(r"^lab_(\d+)\.mrc$", re.IGNORECASE)


def _discover_mrc(src: Path, spacing=None, axcodes=None) -> list[_Case]:
    if src.is_file():
        src = src.parent
    imgs = _index_files(src, _MRC_IMG, "img")
    labs = _index_files(src, _MRC_LAB, "lab")
    if not imgs:
        raise DataError(f"{src}: holds no img_N.mrc files; expected img_N.mrc + lab_N.mrc pairs")
    missing = sorted(set(imgs) - set(labs))
    if missing:
        n = missing[0]
        raise DataError(f"{imgs[n]}: has no lab_{n}.mrc under {src}; expected img_N.mrc + lab_N.mrc pairs")

    def loader(ip: Path, lp: Path, cid: str):
        def load():
            image = read_mrc(ip, spacing=spacing, axcodes=axcodes)
            label = read_mrc(lp, spacing=spacing, label=True, axcodes=axcodes)
            image, lab = _pair_image_label(image, label, cid)
            notes = []
            try:
                h = image.header
                vs = [float(h.cella.x) / int(h.mx), float(h.cella.y) / int(h.my), float(h.cella.z) / int(h.mz)]
            except Exception:
                vs = [0.0, 0.0, 0.0]
            if not all(v > 0 for v in vs):
                notes.append(
                    "MRC header has no voxel size; "
                    + (f"spacing {spacing} mm given" if spacing is not None else "1 mm assumed")
                )
            notes.append(f"axes {axcodes.upper()} as given" if axcodes else
                         "MRC has no orientation: array axes taken as RAS (use --axcodes if they are not)")
            return image, lab, notes

        return load

    return [_Case(f"mrc_{n}", f"{imgs[n]} + {labs[n]}", loader(imgs[n], labs[n], f"mrc_{n}")) for n in sorted(imgs)]


# --------------------------------------------------------------------------- manifest


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a manifest.csv written by :func:`import_dataset`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{p}: not found; expected a manifest.csv written by `flexunet import`") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames != MANIFEST_COLUMNS:
        raise DataError(f"{p}: columns {reader.fieldnames}; expected {MANIFEST_COLUMNS}")
    return list(reader)


def _write_manifest(dst: Path, rows: list[dict[str, str]]) -> Path:
    manifest = dst / "manifest.csv"
    merged: dict[str, dict[str, str]] = {}
    if manifest.exists():
        for row in read_manifest(manifest):
            merged[row["case_id"]] = row
    for row in rows:
        merged[row["case_id"]] = row

    def sort_key(cid: str):
        m = re.match(r"^(.*?)(\d+)$", cid)
        return (m.group(1), int(m.group(2))) if m else (cid, -1)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for cid in sorted(merged, key=sort_key):
        writer.writerow({k: merged[cid].get(k, "") for k in MANIFEST_COLUMNS})
    atomic_save_text(manifest, buf.getvalue())
    return manifest


# --------------------------------------------------------------------------- entry point


def _discover(fmt: str, src: Path, mrc_spacing, mrc_axcodes=None) -> list[_Case]:
    if fmt in ("lits", "kaggle"):
        return _discover_lits(src)
    if fmt == "msd":
        return _discover_msd(src)
    if fmt == "ircadb":
        return _discover_ircadb(src)
    if fmt == "mrc":
        return _discover_mrc(src, mrc_spacing, mrc_axcodes)
    raise DataError(f"import format {fmt!r}: unknown; expected one of {', '.join(FORMATS)}")


def import_dataset(fmt: str, src, dst, progress: bool = True, *, mrc_spacing=None, mrc_axcodes=None) -> Path:
    """Import the data set at ``src`` (layout ``fmt``) into ``dst``; return the manifest path.

    See the module docstring for layouts and output.  ``mrc_spacing`` (mm, a
    number or 3 numbers) is used for MRC files whose header has no voxel
    size (default 1 mm); ``mrc_axcodes`` (e.g. ``"SLP"``) says where the MRC
    array axes point (default RAS).  ``progress`` prints one line per case to stderr,
    then the case's notes (for IRCADb: the structures taken as liver tumour and those left out).
    """
    fmt_key = str(fmt).strip().lower()
    if fmt_key not in FORMATS:
        raise DataError(f"import format {fmt!r}: unknown; expected one of {', '.join(FORMATS)}")
    src_p, dst_p = Path(src), Path(dst)
    if not src_p.exists():
        raise DataError(f"{src_p}: not found; expected the {fmt_key} data set folder")
    if dst_p.exists() and not dst_p.is_dir():
        raise DataError(f"{dst_p}: exists and is not a folder; expected an output directory")
    if dst_p.exists() and src_p.is_dir() and dst_p.resolve() == src_p.resolve():
        raise DataError(f"{dst_p}: output folder is the source folder; expected a separate output directory")
    if fmt_key != "mrc" and (mrc_spacing is not None or mrc_axcodes is not None):
        raise DataError(f"import {fmt_key}: --spacing and --axcodes apply to the mrc format only; expected them "
                        "unset (NIfTI and DICOM carry their own geometry)")
    if mrc_axcodes is not None:
        from ..io.volumes import axcodes_affine

        axcodes_affine(mrc_axcodes, (1, 1, 1), where="--axcodes")  # refuse a bad value before reading
    cases = _discover(fmt_key, src_p, mrc_spacing, mrc_axcodes)
    dst_p.mkdir(parents=True, exist_ok=True)
    manifest = dst_p / "manifest.csv"
    if manifest.exists():
        read_manifest(manifest)  # refuse to merge into a foreign/corrupt manifest before writing anything
    for idx, case in enumerate(cases, 1):
        t0 = time.perf_counter()
        image, label, notes = case.load()
        case_dir = safe_child(dst_p, case.case_id)
        case_dir.mkdir(exist_ok=True)
        img_path = safe_child(case_dir, "image.nii.gz")
        lab_path = safe_child(case_dir, "label.nii.gz")
        write_nifti(Volume(_image_for_writing(image.array), image.affine, image.header, image.source), img_path)
        write_nifti(Volume(label, image.affine, image.header, image.source), lab_path, dtype=np.uint8)
        counts = [0, int(np.count_nonzero(label == 1)), int(np.count_nonzero(label == 2))]
        row = {
            "case_id": case.case_id,
            "image": img_path.relative_to(dst_p).as_posix(),
            "label": lab_path.relative_to(dst_p).as_posix(),
            "shape": _fmt_triplet(image.array.shape, "{}"),
            "spacing": _fmt_triplet(image.spacing, "{:.4g}"),
            "n_liver": str(int(counts[1])),
            "n_tumour": str(int(counts[2])),
            "source": case.source,
            "notes": "; ".join(notes),
        }
        manifest = _write_manifest(dst_p, [row])  # after every case: a later failure keeps what is done
        if progress:
            print(
                f"[{idx}/{len(cases)}] {case.case_id}: shape {row['shape']}, liver {row['n_liver']}, "
                f"tumour {row['n_tumour']} ({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
            for note in notes:
                print(f"    {note}", file=sys.stderr, flush=True)
    return manifest
