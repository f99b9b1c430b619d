"""The result of segmenting one CT (:class:`Segmentation`) and the files it writes: labels (NIfTI),
statistics (JSON, one ``statistics.csv`` row), the lesion table (CSV), the HTML report and DICOM-SEG
(see docs/outputs.md).  The statistics, report and DICOM-SEG code live in :mod:`flexunet.metrics` and
:mod:`flexunet.report`; this module gathers what one case needs for them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import DataError
from ..metrics.volumetry import Volumetry
from .batch import output_name

if TYPE_CHECKING:  # pragma: no cover
    import nibabel as nib

    from ..metrics.lesions import Lesion


@dataclass
class Segmentation:
    """Labels of one CT on the input's own voxel grid, with its geometry and volumetry.

    Attributes:
        labels: uint8 (X, Y, Z), same shape and orientation as the input array: 0 background,
            1 liver, 2 tumour.
        affine: 4x4 voxel-to-world (RAS+ mm) matrix of the input.
        spacing: voxel size (mm) along the input's three array axes.
        volumetry: liver and tumour volume (mL), tumour burden (% of liver), lesion count.
        source: the input's path, or "array".
        timings: seconds per stage (read_s, predict_s, postprocess_s).
        header: the input's header, kept for writing (None for arrays); for DICOM input the first
            slice's pydicom dataset without its pixels.
        image: the CT in HU on the same grid (X, Y, Z), for the HU statistics, the lesions' mean HU
            and the report's images; None when not kept (``segment(..., keep_image=False)``).
        provenance: the model, config, weights and settings that made the labels.

    The lesion table is computed once, on first use: change ``labels`` in place and it is stale.
    """

    labels: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    volumetry: Volumetry
    source: str = "array"
    timings: dict[str, float] = field(default_factory=dict)
    header: Any = None
    image: np.ndarray | None = field(default=None, repr=False)
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)
    _lesions: list | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def case(self) -> str:
        """The case's name: :func:`output_name` of the input's path ("array" for an array)."""
        if self.source in ("array", "nibabel image", "") or not Path(self.source).name:
            return self.source or "array"
        return output_name(self.source)

    @property
    def is_dicom(self) -> bool:
        """True when the input was a DICOM series (``header`` is a pydicom dataset)."""
        return type(self.header).__module__.startswith("pydicom")

    def lesions(self) -> list["Lesion"]:
        """The lesion table: every tumour component measured (:mod:`flexunet.metrics.lesions`).

        Centroids are in DICOM's LPS patient coordinates for DICOM input, else in RAS+.

        Returns:
            :class:`~flexunet.metrics.lesions.Lesion` list, largest first, ids 1, 2, ...
        """
        if self._lesions is None:
            from ..metrics.lesions import lesion_table

            self._lesions = lesion_table(self.labels, self.affine, self.image,
                                         coordinates="LPS" if self.is_dicom else "RAS")
        return self._lesions

    def statistics(self) -> dict[str, Any]:
        """Statistics without ground truth, as ``infer-volume --statistics`` writes them to ``<case>.json``.

        Returns:
            A JSON-ready dict: ``case``, ``source``, ``created`` (UTC, ISO 8601),
            ``flexunet_version``, ``liver_ml``, ``tumour_ml``, ``burden_pct``, ``lesion_count``,
            ``liver_hu`` and ``tumour_hu`` (mean, std, p5, median, p95), ``spacing_mm``, ``shape``,
            ``voxel_ml``, ``lesions`` (the lesion table), ``model`` (provenance) and ``timings``
            (seconds).  See docs/outputs.md.
        """
        import datetime

        from .. import __version__
        from ..metrics.statistics import case_statistics

        stats: dict[str, Any] = {
            "case": self.case, "source": self.source,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "flexunet_version": __version__}
        stats.update(case_statistics(self.labels, self.affine, self.image))
        stats["lesions"] = [les.as_dict() for les in self.lesions()]
        stats["model"] = dict(self.provenance)
        stats["timings"] = {k: round(float(v), 3) for k, v in self.timings.items()}
        return stats

    def save_statistics(self, path: str | os.PathLike, statistics: dict | None = None) -> Path:
        """Write :meth:`statistics` (or the ``statistics`` given) as JSON, atomically.

        Returns:
            The path written.
        """
        import json

        from ..io.atomic import atomic_save_text

        stats = self.statistics() if statistics is None else statistics
        return atomic_save_text(path, json.dumps(stats, indent=2, allow_nan=False) + "\n")

    def save_lesions(self, path: str | os.PathLike) -> Path:
        """Write the lesion table as CSV (one row per lesion, :meth:`Lesion.row` columns), atomically.

        Returns:
            The path written.
        """
        from ..metrics.lesions import lesion_rows

        columns = list(lesion_columns(self.is_dicom))
        return save_csv(path, lesion_rows(self.lesions()), columns)

    def save_report(self, path: str | os.PathLike, statistics: dict | None = None) -> Path:
        """Write the self-contained HTML report (:mod:`flexunet.report.html`), atomically.

        Args:
            path: the ``.html`` file.
            statistics: :meth:`statistics` when already computed.

        Returns:
            The path written.
        """
        from ..report.html import dicom_fields, write_report

        stats = self.statistics() if statistics is None else statistics
        provenance = {"input": self.source, **dict(self.provenance),
                      "timings_s": {k: round(float(v), 2) for k, v in self.timings.items()}}
        return write_report(path, case=self.case, labels=self.labels, affine=self.affine, image=self.image,
                            statistics=stats, lesions=self.lesions(), dicom=dicom_fields(self.header),
                            provenance=provenance)

    def save_dicom_seg(self, path: str | os.PathLike) -> Path:
        """Write the labels as a DICOM-SEG referencing the source series (:mod:`flexunet.report.dicom_seg`).

        Returns:
            The path written.

        Raises:
            DataError: the input was not a DICOM series, or its files are no longer where they were read.
        """
        from .. import __version__
        from ..report.dicom_seg import write_dicom_seg

        if not self.is_dicom:
            raise DataError(f"{self.source}: DICOM-SEG output needs a DICOM series as input; this input was not "
                            "DICOM (write NIfTI instead)")
        return write_dicom_seg(self.labels, self.affine, self.source,
                               str(self.header.get("SeriesInstanceUID", "") or ""), path,
                               model_name=f"FlexUNet {self.provenance.get('architecture', '')}".strip(),
                               software_version=__version__)

    def to_nifti(self) -> "nib.Nifti1Image":
        """The labels as an in-memory ``nibabel.Nifti1Image`` (uint8) with the input's affine."""
        import nibabel as nib

        img = nib.Nifti1Image(self.labels, self.affine)
        img.header.set_data_dtype(np.uint8)
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        return img

    def save(self, path: str | os.PathLike) -> Path:
        """Write the labels as NIfTI (``.nii`` or ``.nii.gz``), atomically, with the input's affine
        (and its NIfTI header when the input was NIfTI).

        Returns:
            The path written.

        Raises:
            DataError: the name does not end in .nii or .nii.gz.
        """
        from ..io.volumes import write_nifti

        header = self.header if hasattr(self.header, "get_zooms") else None
        return write_nifti(self.labels, path, affine=self.affine, header=header, dtype=np.uint8)


def lesion_columns(dicom: bool) -> tuple[str, ...]:
    """The columns of ``<case>_lesions.csv``: centroids in LPS for DICOM input, else in RAS."""
    c = "lps" if dicom else "ras"
    return ("id", "volume_ml", "voxels", "long_axis_mm", "short_axis_mm", "slice", f"centroid_{c[0]}_mm",
            f"centroid_{c[1]}_mm", f"centroid_{c[2]}_mm", "mean_hu", "liver_surface_mm")


def save_csv(path: str | os.PathLike, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    """Write ``rows`` as CSV with ``columns`` (None written empty), atomically."""
    import csv
    import io

    from ..io.atomic import atomic_save_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return atomic_save_text(path, buf.getvalue())


def case_row(stats: dict) -> dict:
    """One case's statistics as its row of ``statistics.csv`` (nested fields flattened, the lesion
    table left out: it has its own file).

    Args:
        stats: :meth:`Segmentation.statistics`.

    Returns:
        ``{column: value}``.
    """
    from ..metrics.statistics import flat_row

    return flat_row({k: v for k, v in stats.items() if k != "lesions"})


def csv_columns(rows: Sequence[dict]) -> list[str]:
    """Every key of ``rows`` in first-seen order: the columns of a CSV of rows with differing keys."""
    return list(dict.fromkeys(k for row in rows for k in row))
