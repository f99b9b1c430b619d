"""Overlay images of a segmented CT for the HTML report (PIL only).

Views follow the radiological convention: an axial slice is seen from the feet (the patient's
right on the image's left, anterior at the top), a coronal slice from the front (right on the
left, head at the top).  Whatever the input's orientation, the arrays are first put in RAS+
order (nibabel's orientation tools), then resampled to square pixels so that millimetres have
one length in both directions.  The CT is shown in an abdominal window (:data:`DISPLAY_WINDOW`),
the liver in blue and the tumours in red (the configs' ``rgb_map`` colours), filled at
:data:`ALPHA` and outlined.  Lesion measurements are drawn as lines: long axis yellow, short axis
cyan, with the lesion's id.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: HU mapped to black .. white in the report's images (window 400, level 40)
DISPLAY_WINDOW = (-160.0, 240.0)
#: opacity of the label fill
ALPHA = 0.35
LIVER_RGB = (40, 110, 255)
TUMOUR_RGB = (255, 40, 40)
LONG_RGB = (255, 221, 0)
SHORT_RGB = (0, 230, 230)
#: longest side of an image in the report, in pixels
MAX_SIDE = 440


@dataclass
class CanonicalView:
    """A label volume and its CT in RAS+ array order, with the map from input voxels.

    Attributes:
        labels: uint8 (X, Y, Z) in RAS+ order.
        image: the CT (X, Y, Z) in RAS+ order, or None.
        spacing: mm along the RAS+ axes.
        ornt: nibabel orientation (3, 2) of the input's axes.
        input_shape: the input's shape.
    """

    labels: np.ndarray
    image: np.ndarray | None
    spacing: tuple[float, float, float]
    ornt: np.ndarray
    input_shape: tuple[int, int, int]

    @classmethod
    def build(cls, labels: np.ndarray, image: np.ndarray | None, affine: np.ndarray) -> "CanonicalView":
        """Reorient a label volume and its CT to RAS+ array order (views, no copies).

        Args:
            labels: uint8 (X, Y, Z) on the input's grid.
            image: the CT (X, Y, Z) in HU, or None.
            affine: the grid's 4x4 voxel-to-world (RAS+ mm) matrix.

        Returns:
            :class:`CanonicalView`.
        """
        from nibabel.orientations import apply_orientation, io_orientation

        ornt = io_orientation(np.asarray(affine, dtype=np.float64))
        spacing_in = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))
        spacing = [0.0, 0.0, 0.0]
        for a in range(3):
            spacing[int(ornt[a, 0])] = float(spacing_in[a])
        return cls(labels=apply_orientation(labels, ornt),
                   image=None if image is None else apply_orientation(image, ornt),
                   spacing=tuple(spacing), ornt=ornt, input_shape=tuple(int(n) for n in labels.shape))

    def to_canonical(self, voxel: Sequence[float]) -> np.ndarray:
        """An input voxel coordinate (i, j, k), fractional or not, as a coordinate (3,) of the RAS+ arrays."""
        out = np.zeros(3)
        for a in range(3):
            axis, flip = int(self.ornt[a, 0]), self.ornt[a, 1]
            out[axis] = voxel[a] if flip > 0 else self.input_shape[a] - 1 - voxel[a]
        return out

    def canonical_axis(self, input_axis: int) -> int:
        """The RAS+ axis an input axis became."""
        return int(self.ornt[input_axis, 0])


def _window(values: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if values is None:
        return np.full(shape, 40, np.uint8)
    lo, hi = DISPLAY_WINDOW
    return (np.clip((np.asarray(values, dtype=np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


@dataclass
class Panel:
    """One 2-D view ready to draw: grey CT, labels, and how screen pixels map to the RAS+ arrays.

    ``grey`` and ``labels`` are (rows, cols) at the array's own resolution; ``scale`` is the
    display size of one array pixel along (cols, rows); ``crop`` is (row0, row1, col0, col1) of the
    uncropped slice; ``px_mm`` the millimetres of one display pixel.
    """

    grey: np.ndarray
    labels: np.ndarray
    scale: tuple[float, float]
    crop: tuple[int, int, int, int]
    kind: str  # "axial" or "coronal"
    px_mm: float  # mm per display pixel (square)


def axial_panel(view: CanonicalView, z: int, crop_mask: np.ndarray | None = None, margin_mm: float = 25.0) -> Panel:
    """An axial slice seen from the feet (anterior up, the patient's right on the left).

    Args:
        view: the RAS+ arrays.
        z: the slice's index along RAS+ z.
        crop_mask: boolean (X, Y): the image is cropped to its bounding box plus ``margin_mm``.
        margin_mm: margin around the crop mask.

    Returns:
        :class:`Panel` whose longest side draws :data:`MAX_SIDE` pixels.
    """
    lab = view.labels[::-1, ::-1, z].T
    grey = _window(None if view.image is None else view.image[::-1, ::-1, z].T, lab.shape)
    return _panel(grey, lab, (view.spacing[0], view.spacing[1]),
                  None if crop_mask is None else crop_mask[::-1, ::-1].T, margin_mm, "axial")


def coronal_panel(view: CanonicalView, y: int, crop_mask: np.ndarray | None = None, margin_mm: float = 40.0) -> Panel:
    """A coronal slice seen from the front (head up, the patient's right on the left).

    Args:
        view: the RAS+ arrays.
        y: the slice's index along RAS+ y.
        crop_mask: boolean (X, Z): the image is cropped to its bounding box plus ``margin_mm``.
        margin_mm: margin around the crop mask.

    Returns:
        :class:`Panel`.
    """
    lab = view.labels[::-1, y, ::-1].T
    grey = _window(None if view.image is None else view.image[::-1, y, ::-1].T, lab.shape)
    return _panel(grey, lab, (view.spacing[0], view.spacing[2]),
                  None if crop_mask is None else crop_mask[::-1, ::-1].T, margin_mm, "coronal")


def _panel(grey, lab, spacing_cols_rows, crop_mask, margin_mm, kind) -> Panel:
    rows, cols = lab.shape
    r0, r1, c0, c1 = 0, rows, 0, cols
    if crop_mask is not None and crop_mask.any():
        rr, cc = np.nonzero(crop_mask)
        mr, mc = int(margin_mm / spacing_cols_rows[1]), int(margin_mm / spacing_cols_rows[0])
        r0, r1 = max(int(rr.min()) - mr, 0), min(int(rr.max()) + 1 + mr, rows)
        c0, c1 = max(int(cc.min()) - mc, 0), min(int(cc.max()) + 1 + mc, cols)
    h_mm, w_mm = (r1 - r0) * spacing_cols_rows[1], (c1 - c0) * spacing_cols_rows[0]
    px_mm = max(h_mm, w_mm) / MAX_SIDE
    return Panel(grey=grey[r0:r1, c0:c1], labels=lab[r0:r1, c0:c1],
                 scale=(spacing_cols_rows[0] / px_mm, spacing_cols_rows[1] / px_mm), crop=(r0, r1, c0, c1), kind=kind,
                 px_mm=px_mm)


def screen_point(view: CanonicalView, panel: Panel, canonical: Sequence[float]) -> tuple[float, float]:
    """Where a point of the RAS+ arrays appears in a panel's image.

    Args:
        view: the RAS+ arrays.
        panel: the panel drawn.
        canonical: (x, y, z) coordinate of the RAS+ arrays (voxel centres at whole numbers).

    Returns:
        (x, y) in display pixels from the image's top left corner.
    """
    nx, ny, nz = view.labels.shape
    if panel.kind == "axial":
        col, row = nx - 1 - canonical[0], ny - 1 - canonical[1]
    else:
        col, row = nx - 1 - canonical[0], nz - 1 - canonical[2]
    r0, _, c0, _ = panel.crop
    return ((col - c0 + 0.5) * panel.scale[0], (row - r0 + 0.5) * panel.scale[1])


def render(panel: Panel, lines: Sequence[tuple[tuple[float, float], tuple[float, float], tuple, str]] = ()):
    """Draw a panel: the windowed CT, the labels filled and outlined, measurement lines, orientation
    letters and a scale bar.

    Args:
        panel: the view (:func:`axial_panel`, :func:`coronal_panel`).
        lines: ``((x0, y0), (x1, y1), rgb, text)`` in display pixels; ``text`` is drawn by the first end.

    Returns:
        a ``PIL.Image`` (RGB).
    """
    from PIL import Image, ImageDraw, ImageFont
    from scipy import ndimage as ndi

    h, w = panel.labels.shape
    size = (max(1, int(round(w * panel.scale[0]))), max(1, int(round(h * panel.scale[1]))))
    grey = np.asarray(Image.fromarray(panel.grey).resize(size, Image.BILINEAR), dtype=np.float32)
    lab = np.asarray(Image.fromarray(panel.labels).resize(size, Image.NEAREST))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for value, colour in ((1, LIVER_RGB), (2, TUMOUR_RGB)):
        mask = lab == value if value == 2 else lab >= 1
        if not mask.any():
            continue
        col = np.array(colour, np.float32)
        rgb[mask] = (1 - ALPHA) * rgb[mask] + ALPHA * col
        edge = mask & ~ndi.binary_erosion(mask)
        rgb[edge] = col
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    for (x0, y0), (x1, y1), colour, text in lines:
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=2)
        for x, y in ((x0, y0), (x1, y1)):
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        if text:
            draw.text((x0 + 5, y0 - 16), text, fill=colour, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    top, bottom = ("A", "P") if panel.kind == "axial" else ("S", "I")
    for text, xy in (("R", (4, size[1] / 2 - 7)), ("L", (size[0] - 12, size[1] / 2 - 7)),
                     (top, (size[0] / 2 - 4, 3)), (bottom, (size[0] / 2 - 4, size[1] - 17))):
        draw.text(xy, text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    bar_mm = 50.0 if size[0] * panel.px_mm > 120 else 10.0
    bar = bar_mm / panel.px_mm
    y = size[1] - 10
    draw.line([(10, y), (10 + bar, y)], fill=(255, 255, 255), width=3)
    draw.text((12, y - 18), f"{bar_mm:.0f} mm", fill=(255, 255, 255), font=font, stroke_width=2,
              stroke_fill=(0, 0, 0))
    return img


def png_base64(img) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URI (PNG, optimised).

    Args:
        img: a ``PIL.Image``.

    Returns:
        The URI text.
    """
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
