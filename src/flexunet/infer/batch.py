"""A batch of CT inputs and what it writes: output names (and names two inputs would share), the
part of a batch one machine takes (``--num-parts`` / ``--part-id``), and the output formats."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import DataError

# file and folder names that say nothing about the patient: such an input is named after its parent folder
GENERIC_NAMES = frozenset({"image", "patient_dicom", "dicom", "series"})

#: what ``infer-volume --output-format`` accepts (a comma-separated list of them)
OUTPUT_FORMATS = ("nifti", "dicom-seg")


def output_formats(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"nifti"``, ``"dicom-seg"``, ``"nifti,dicom-seg"`` or a list of them, as a tuple of formats.

    Raises:
        DataError: an unknown format, or none.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    formats = tuple(dict.fromkeys(str(f).strip().lower() for f in items if str(f).strip()))
    bad = [f for f in formats if f not in OUTPUT_FORMATS]
    if bad or not formats:
        raise DataError(f"--output-format {value if isinstance(value, str) else ','.join(value)!r}: expected "
                        f"{' or '.join(OUTPUT_FORMATS)}, or both separated by a comma")
    return formats


def case_name(path: str | os.PathLike) -> str:
    """The file or folder name without its volume extension (.nii.gz, .nii, .mrc, .zip)."""
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".mrc", ".zip"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def output_name(path: str | os.PathLike) -> str:
    """Name of the label file written for an input, without ``.nii.gz``.

    A name that says nothing about the patient (``image.nii.gz`` in a case folder, IRCAD's
    ``PATIENT_DICOM.zip``, a DICOM folder called ``DICOM`` or ``series``) is replaced by its
    parent folder's name; any other input keeps its own name.
    """
    p = Path(path)
    stem = case_name(p)
    if stem.lower() in GENERIC_NAMES and p.parent.name not in ("", ".", ".."):
        return p.parent.name
    return stem


def check_output_names(inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse a batch in which two inputs would write the same output file.

    Raises:
        DataError: naming both inputs and the shared output name.
    """
    seen: dict[str, str] = {}
    for p in inputs:
        name = output_name(p)
        key = name.lower()  # case-insensitive file systems would also merge them
        if key in seen and os.path.abspath(seen[key]) != os.path.abspath(p):
            raise DataError(f"{seen[key]} and {p}: both would be written as {name}.nii.gz; expected inputs with "
                            "distinct names (rename or copy one, or run them into separate --output folders)")
        seen.setdefault(key, str(p))


def select_part(inputs: Sequence[str], num_parts: int = 1, part_id: int = 0) -> list[str]:
    """Part ``part_id`` of ``num_parts`` of a batch: every ``num_parts``-th input from ``part_id`` on (as
    nnU-Net's ``-num_parts``/``-part_id``).  The parts of one batch are disjoint and together whole.

    Raises:
        DataError: ``num_parts`` < 1 or ``part_id`` outside 0..num_parts-1.
    """
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise DataError(f"--num-parts {num_parts} --part-id {part_id}: expected num_parts >= 1 and "
                        f"0 <= part_id < num_parts")
    return list(inputs)[part_id::num_parts]


def check_dicom_seg_inputs(inputs: Sequence[str], formats: Sequence[str]) -> None:
    """Refuse DICOM-SEG output for an input that is not a DICOM series, before anything is read.

    Raises:
        DataError: naming the first such input.
    """
    if "dicom-seg" not in formats:
        return
    from ..io.volumes import is_dicom_input

    for p in inputs:
        if Path(p).exists() and not is_dicom_input(p):
            raise DataError(f"{p}: --output-format dicom-seg needs a DICOM series as input (a folder, .zip or .dcm "
                            "file); expected DICOM input, or --output-format nifti for this one")
