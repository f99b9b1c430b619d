"""The self-contained HTML report of one segmented CT (``flexunet infer-volume --report``).

One ``<case>.html`` file that opens anywhere, offline: the images are PNGs embedded as
``data:`` URIs, the style sheet is inline, and the page has no script, no external link, font or
image, so opening it makes no network request.  It holds, in order:

1. the patient, study and series fields of the DICOM input (when the input was DICOM);
2. the statistics (volumes, burden, lesion count, HU in liver and tumour, voxel size);
3. the lesion table (:mod:`flexunet.metrics.lesions`);
4. axial overlays of the slice with the largest liver area and of the measurement slice of each
   of the five largest lesions (long and short axis drawn), and a coronal overlay through the
   largest liver area (:mod:`flexunet.report.figures`);
5. the provenance: FlexUNet's version, the config, the architecture, the weights and their
   SHA-256, the settings that shaped the labels, the input and the timings.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

#: lesions drawn in their own image
LESION_IMAGES = 5

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1080px;
color:#1d1d1f;background:#fff;padding:0 16px;font-size:14px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ccc;padding-bottom:4px}
.note{color:#555;font-size:12px}.warn{background:#f4f4f4;border-left:4px solid #888;padding:6px 10px;margin:10px 0}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #d0d0d0;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:14px}figure{margin:0;max-width:460px}
figure img{display:block;background:#000;max-width:100%}figcaption{font-size:12px;color:#333;margin-top:4px}
code{font-size:12px;word-break:break-all}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    if not np.isfinite(v):
        return "–"
    return f"{v:,.{digits}f}"


def _table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _hu(summary: Mapping[str, Any] | None) -> str:
    if not summary or summary.get("mean") is None:
        return "–"
    return (f"{_num(summary['mean'])} ± {_num(summary['std'])} HU (median {_num(summary['median'])}, "
            f"5–95%: {_num(summary['p5'])} to {_num(summary['p95'])})")


def _statistics_rows(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    spacing = " × ".join(_num(s, 3) for s in stats.get("spacing_mm", []))
    shape = " × ".join(str(n) for n in stats.get("shape", []))
    burden = stats.get("burden_pct")
    return [
        ("Liver volume (tumours included)", f"{_num(stats.get('liver_ml'))} mL"),
        ("Tumour volume", f"{_num(stats.get('tumour_ml'))} mL"),
        ("Tumour burden", "–" if burden is None else f"{_num(burden, 2)} % of the liver"),
        ("Lesions", _esc(stats.get("lesion_count"))),
        ("Liver tissue outside tumours", _hu(stats.get("liver_hu"))),
        ("Tumour", _hu(stats.get("tumour_hu"))),
        ("Voxel size", f"{spacing} mm"),
        ("Grid", f"{shape} voxels"),
    ]


def _lesion_table(lesions: Sequence[Any]) -> str:
    if not lesions:
        return "<p>No tumour was segmented.</p>"
    system = lesions[0].coordinates
    head = ("<tr><th>id</th><th>volume mL</th><th>long axis mm</th><th>short axis mm</th><th>slice</th>"
            f"<th>centroid {system} mm (x, y, z)</th><th>mean HU</th><th>to liver surface mm</th></tr>")
    rows = []
    for les in lesions:
        c = ", ".join(_num(v) for v in les.centroid_mm)
        rows.append(f"<tr><td class=n>{les.id}</td><td class=n>{_num(les.volume_ml, 2)}</td>"
                    f"<td class=n>{_num(les.long_axis_mm)}</td><td class=n>{_num(les.short_axis_mm)}</td>"
                    f"<td class=n>{les.slice}</td><td class=n>{c}</td><td class=n>{_num(les.mean_hu)}</td>"
                    f"<td class=n>{_num(les.liver_surface_mm)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _figure(uri: str, caption: str, alt: str) -> str:
    return (f'<figure><img src="{uri}" alt="{_esc(alt)}"><figcaption>{caption}</figcaption></figure>')


def _figures(labels: np.ndarray, image: np.ndarray | None, affine: np.ndarray, lesions: Sequence[Any]) -> list[str]:
    from .figures import CanonicalView, axial_panel, coronal_panel, png_base64, render

    view = CanonicalView.build(labels, image, affine)
    liver = view.labels >= 1
    crop_axial = liver.any(axis=2) if liver.any() else None
    out = []
    areas = liver.sum(axis=(0, 1))
    z = int(np.argmax(areas)) if areas.any() else view.labels.shape[2] // 2
    panel = axial_panel(view, z, crop_axial)
    out.append(_figure(png_base64(render(panel, _lesion_lines(view, panel, lesions, z))),
                       f"Axial slice {z + 1} of {view.labels.shape[2]} (RAS+ order, from the feet): the largest "
                       f"liver area, {_num(areas[z] * view.spacing[0] * view.spacing[1] / 100.0)} cm².",
                       "axial overlay, largest liver area"))
    cor = liver.sum(axis=(0, 2))
    y = int(np.argmax(cor)) if cor.any() else view.labels.shape[1] // 2
    panel = coronal_panel(view, y, liver.any(axis=1) if liver.any() else None)
    out.append(_figure(png_base64(render(panel)), f"Coronal slice {y + 1} of {view.labels.shape[1]} (from the "
                       "front): the largest liver area.", "coronal overlay"))
    for les in lesions[:LESION_IMAGES]:
        zc = int(round(view.to_canonical(les.long_axis_voxels[0])[2]))
        panel = axial_panel(view, zc, crop_axial)
        lines = _lesion_lines(view, panel, lesions, zc, focus=les.id)
        out.append(_figure(png_base64(render(panel, lines)),
                           f"Lesion {les.id}: long axis {_num(les.long_axis_mm)} mm (yellow), short axis "
                           f"{_num(les.short_axis_mm)} mm (cyan), {_num(les.volume_ml, 2)} mL; input slice "
                           f"{les.slice} (axis {les.slice_axis}).", f"lesion {les.id}"))
    return out


def _lesion_lines(view, panel, lesions: Sequence[Any], z: int, focus: int | None = None) -> list:
    """Measurement lines of the lesions measured on canonical axial slice ``z``."""
    from .figures import LONG_RGB, SHORT_RGB, screen_point

    lines = []
    for les in lesions:
        ends = [view.to_canonical(p) for p in les.long_axis_voxels]
        if int(round(ends[0][2])) != z or (focus is not None and les.id != focus and len(lesions) > 20):
            continue
        short = [view.to_canonical(p) for p in les.short_axis_voxels]
        a, b = (screen_point(view, panel, p) for p in ends)
        c, d = (screen_point(view, panel, p) for p in short)
        lines.append((a, b, LONG_RGB, f"#{les.id}"))
        lines.append((c, d, SHORT_RGB, ""))
    return lines


def report_html(*, case: str, labels: np.ndarray, affine: np.ndarray, image: np.ndarray | None,
                statistics: Mapping[str, Any], lesions: Sequence[Any], dicom: Mapping[str, str] | None = None,
                provenance: Mapping[str, Any] | None = None) -> str:
    """The report of one case as one self-contained HTML page.

    Args:
        case: the case name (the page's title).
        labels: uint8 (X, Y, Z) labels on the input's grid.
        affine: 4x4 voxel-to-world (RAS+ mm) matrix of that grid.
        image: the CT (X, Y, Z) in HU on the same grid (None draws the labels on grey).
        statistics: the case's statistics (:meth:`flexunet.Segmentation.statistics`).
        lesions: the lesion table (:func:`flexunet.metrics.lesions.lesion_table`).
        dicom: patient, study and series fields of a DICOM input (shown when given).
        provenance: the model, config, weights, settings, input and timings.

    Returns:
        The HTML text.
    """
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'>"
             f"<title>{_esc(case)} – liver and tumour segmentation</title><style>{_CSS}</style></head><body>",
             f"<h1>Liver and liver-tumour segmentation: {_esc(case)}</h1>",
             f"<div class=note>Created {_esc(statistics.get('created', ''))} by FlexUNet "
             f"{_esc(statistics.get('flexunet_version', ''))}.</div>",
             "<div class=warn>Automatic segmentation for research. Every volume and measurement below comes from "
             "the model's labels and needs a reader's review before any clinical use.</div>"]
    if dicom:
        parts.append("<h2>Patient and series</h2>")
        parts.append(_table([(k, _esc(v)) for k, v in dicom.items()]))
    parts.append("<h2>Statistics</h2>")
    parts.append(_table(_statistics_rows(statistics)))
    parts.append("<h2>Lesions</h2>")
    if lesions:
        parts.append(f"<p class=note>Largest first. Long axis: the longest axial diameter; short axis: the longest "
                     f"diameter perpendicular to it in the same slice (RECIST). Slice: index along input axis "
                     f"{lesions[0].slice_axis}, from 0. Centroid in {lesions[0].coordinates} "
                     "patient coordinates.</p>")
    parts.append(_lesion_table(lesions))
    parts.append("<h2>Images</h2><div class=grid>")
    parts.extend(_figures(labels, image, affine, lesions))
    parts.append("</div><p class=note>Liver blue, tumour red; window 400 / level 40 HU; the patient's right on "
                 "the left of each image.</p>")
    if provenance:
        parts.append("<h2>Provenance</h2>")
        parts.append(_table([(k, _provenance_value(v)) for k, v in provenance.items()]))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _provenance_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "<br>".join(f"{_esc(k)}: {_esc(_fmt(v))}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "<br>".join(f"<code>{_esc(v)}</code>" for v in value) or "–"
    return f"<code>{_esc(value)}</code>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


#: (DICOM keyword, label) of the fields a report shows when present
DICOM_FIELDS = (
    ("PatientName", "Patient name"), ("PatientID", "Patient ID"), ("PatientBirthDate", "Birth date"),
    ("PatientSex", "Sex"), ("PatientAge", "Age"), ("InstitutionName", "Institution"), ("StudyDate", "Study date"),
    ("StudyTime", "Study time"), ("StudyDescription", "Study"), ("AccessionNumber", "Accession number"),
    ("SeriesDescription", "Series"), ("SeriesNumber", "Series number"), ("Modality", "Modality"),
    ("Manufacturer", "Manufacturer"), ("ManufacturerModelName", "Scanner"), ("BodyPartExamined", "Body part"),
    ("SliceThickness", "Slice thickness (mm)"), ("KVP", "kVp"), ("ConvolutionKernel", "Kernel"),
    ("ContrastBolusAgent", "Contrast agent"), ("StudyInstanceUID", "Study Instance UID"),
    ("SeriesInstanceUID", "Series Instance UID"),
)


def dicom_fields(header: Any) -> dict[str, str]:
    """Patient, study and series fields of a DICOM header, for a report (only those present).

    Args:
        header: a pydicom dataset, or anything else (then nothing is returned).

    Returns:
        ``{label: text}`` in the order of :data:`DICOM_FIELDS`; dates as YYYY-MM-DD, times as HH:MM:SS.
    """
    if not type(header).__module__.startswith("pydicom"):
        return {}
    out = {}
    for keyword, label in DICOM_FIELDS:
        value = header.get(keyword)
        text = str(value).strip() if value is not None else ""
        if keyword.endswith("Date") and len(text) == 8 and text.isdigit():
            text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
        elif keyword.endswith("Time") and len(text) >= 6 and text[:6].isdigit():
            text = f"{text[:2]}:{text[2:4]}:{text[4:6]}"
        if text:
            out[label] = text
    return out


def write_report(path: str | os.PathLike, **content: Any) -> Path:
    """Write :func:`report_html` to ``path`` atomically.

    Args:
        path: the ``.html`` file.
        **content: the arguments of :func:`report_html`.

    Returns:
        The path written.
    """
    from flexunet.io.atomic import atomic_save_text

    return atomic_save_text(path, report_html(**content))
