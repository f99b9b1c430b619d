"""Volume inference: a CT volume (file, NIfTI image or array + affine) -> labels on the input's own grid.

Pipeline per volume: read -> canonical RAS -> HU window to uint8 (as the PNGs)
-> slices in batches with 2.5D context -> model at its input size -> probabilities
resized back to the slice size -> argmax -> optional postprocessing -> back to
the input's own orientation.  :class:`VolumePredictor` holds one loaded model
for many volumes; :meth:`VolumePredictor.segment` returns a
:class:`Segmentation` in memory, :meth:`VolumePredictor.segment_files` writes
``<case>.nii.gz`` files (``flexunet infer-volume``), and on request per case
``<case>.json`` statistics with the lesion table, one ``statistics.csv`` row,
``<case>_lesions.csv``, a self-contained ``<case>.html`` report and, for DICOM
input, a ``<case>.seg.dcm`` DICOM-SEG (see docs/outputs.md).

Memory stays bounded in :meth:`~VolumePredictor.segment_files`: a loader thread
reads the next volume while the current one is predicted, through a queue of
size 1 (imitating nnU-Net's data iterators), and only uint8 copies of the volume
are kept (512x512x600 is 157 MB per copy); the CT in HU is kept too (int16 where
its values are whole numbers, 315 MB for that size) only when statistics or a
report are asked for.  When the loader fails, an abort event stops the run with
the loader's message.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

import numpy as np

from ..errors import DataError, FlexUNetError
from ..metrics.volumetry import voxel_volume_ml, volumetry
from .batch import check_dicom_seg_inputs, check_output_names, output_formats, output_name, select_part
from .segmentation import Segmentation, case_row, csv_columns, save_csv

if TYPE_CHECKING:  # pragma: no cover
    import nibabel as nib

    from ..config import Config
    from ..io.volumes import Reorientation, Volume
    from .predictor import Predictor

# tumour_grow leaves lesions alone that are less than this much darker than the liver around them
GROW_MIN_CONTRAST_HU = 10.0

#: a volume with more slices than this gets a progress bar over its slices (unless quiet)
PROGRESS_MIN_SLICES = 64

#: What :func:`segment` and :meth:`VolumePredictor.segment` accept as a CT: a path (NIfTI file,
#: DICOM folder / .zip / file, MRC file), a ``nibabel`` image, a :class:`~flexunet.io.volumes.Volume`,
#: or a NumPy array (X, Y, Z) in HU together with ``affine=``.
CTInput = Union[str, os.PathLike, "nib.spatialimages.SpatialImage", "Volume", np.ndarray]


# --------------------------------------------------------------------------- settings and results


@dataclass(frozen=True)
class VolumeSettings:
    """The values of the config that volume inference uses (read once, at the top).

    Attributes:
        hu_window: (low, high) HU mapped to 0..255.
        image_size: (height, width) the model takes.
        channels: model input channels (1, or 3 for 2.5D or grey replicated).
        context: 3 channels are slices k-1, k, k+1 (2.5D) rather than slice k three times.
        standardize: per-image standardisation before the model (``[model] input_normalize``).
        tta_context_flip: also predict with the neighbours swapped and average.
        num_classes: 2 (background / liver) or 3 (with tumour); postprocessing depends on it.
        min_tumour_mm3, tumour_liver_contact, fill_holes, tumour_grow, tumour_grow_beyond:
            postprocessing (see :mod:`flexunet.infer.postprocess` and docs/config.md, ``[infer]``).
        batch_size: slices per model call.
        planes: the slicing planes the model was trained on (``[slice] planes``); with more than one,
            the volume is segmented in each and the probabilities are averaged in 3-D.
    """

    hu_window: tuple[float, float]
    image_size: tuple[int, int]
    channels: int
    context: bool
    standardize: bool
    tta_context_flip: bool
    num_classes: int
    min_tumour_mm3: float
    tumour_liver_contact: float
    fill_holes: bool
    tumour_grow: int
    tumour_grow_beyond: int
    batch_size: int = 8
    planes: tuple[str, ...] = ("axial",)

    @classmethod
    def from_config(cls, cfg: "Config") -> "VolumeSettings":
        """Read the settings from a loaded config."""
        from ..config.rules import context_enabled
        from ..data.planes import normalize_planes

        return cls(hu_window=tuple(cfg.slice.hu_window), image_size=(cfg.model.image_height, cfg.model.image_width),
                   channels=cfg.model.image_channels,
                   context=context_enabled(cfg.model.image_channels, cfg.slice.context_slices),
                   standardize=cfg.model.input_normalize, tta_context_flip=cfg.infer.tta_context_flip,
                   num_classes=cfg.model.num_classes, min_tumour_mm3=cfg.infer.min_tumour_mm3,
                   tumour_liver_contact=cfg.infer.tumour_liver_contact, fill_holes=cfg.infer.fill_holes,
                   tumour_grow=cfg.infer.tumour_grow, tumour_grow_beyond=cfg.infer.tumour_grow_beyond,
                   planes=normalize_planes(cfg.slice.planes))


@dataclass
class PreparedVolume:
    """A CT read and windowed for the model, with what is needed to put labels back on its grid.

    Attributes:
        source: where it came from (a path, or "array"), for messages and output names.
        affine: the input's 4x4 voxel-to-world (RAS+ mm) matrix.
        header: the input's header (NIfTI header, DICOM dataset without pixels, MRC header) or None.
        shape: the input array's shape (X, Y, Z).
        windowed: uint8 (X', Y', Z') in canonical RAS orientation, the HU window mapped to 0..255.
        spacing: voxel size (mm) along the canonical axes of ``windowed``.
        undo: maps a canonical array back to the input's orientation.
        read_s: seconds spent reading and windowing.
        image: the CT in HU on the input's grid (X, Y, Z) (:func:`compact_hu`), kept only for
            statistics and reports; else None.
    """

    source: str
    affine: np.ndarray
    header: Any
    shape: tuple[int, ...]
    windowed: np.ndarray
    spacing: tuple[float, float, float]
    undo: "Reorientation"
    read_s: float = 0.0
    image: np.ndarray | None = None


def compact_hu(array: np.ndarray) -> np.ndarray:
    """A CT in HU in the smallest exact dtype: int16 when every value is a whole number in its range
    (as DICOM and most NIfTI CTs), else float32.

    Args:
        array: (X, Y, Z) any numeric dtype.

    Returns:
        (X, Y, Z) int16 or float32, same memory order.
    """
    a = np.asarray(array)
    if a.dtype == np.int16:
        return a
    if a.size == 0:
        return a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if lo < -32768 or hi > 32767:
        return a.astype(np.float32, copy=False)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int16)
    flat = a.reshape(-1, order="A")
    step = 1 << 22
    for start in range(0, flat.size, step):  # chunks: no full-size temporary
        chunk = flat[start:start + step]
        if not np.array_equal(np.rint(chunk), chunk):
            return a.astype(np.float32, copy=False)
    return a.astype(np.int16)


# --------------------------------------------------------------------------- reading


def as_volume(ct: CTInput, affine: np.ndarray | None = None, series_uid: str | None = None) -> "Volume":
    """Whatever :data:`CTInput` a caller gives, as a :class:`~flexunet.io.volumes.Volume` in HU.

    Args:
        ct: a path, a nibabel image, a Volume, or a NumPy array (X, Y, Z) in HU.
        affine: 4x4 voxel-to-world (mm) matrix; required for an array, refused otherwise.

    Raises:
        DataError: unreadable file, wrong array shape, missing or invalid affine, NaN/Inf voxels.
    """
    from ..io.volumes import Volume, check_finite, read_volume

    if isinstance(ct, (str, os.PathLike)):
        if affine is not None:
            raise DataError(f"{ct}: affine= is for arrays; a file carries its own geometry")
        return read_volume(ct, series_uid=series_uid)
    if isinstance(ct, Volume):
        vol = ct
    elif hasattr(ct, "affine") and hasattr(ct, "dataobj"):  # a nibabel spatial image
        vol = Volume(np.asanyarray(ct.dataobj), np.asarray(ct.affine, dtype=np.float64), ct.header,
                     getattr(ct, "get_filename", lambda: None)() or "nibabel image")
    elif isinstance(ct, np.ndarray):
        if affine is None:
            raise DataError(f"array of shape {ct.shape}: affine= is required; expected a 4x4 voxel-to-world "
                            "matrix in mm (e.g. nibabel's img.affine)")
        vol = Volume(ct, np.asarray(affine, dtype=np.float64), None, "array")
    else:
        raise DataError(f"ct of type {type(ct).__name__}: expected a path, a nibabel image, a Volume or a NumPy array")
    if vol.array.ndim == 4 and vol.array.shape[3] == 1:
        vol = Volume(vol.array[..., 0], vol.affine, vol.header, vol.source)
    if vol.array.ndim != 3 or not np.issubdtype(vol.array.dtype, np.number):
        raise DataError(f"{vol.source}: array of shape {vol.array.shape} and dtype {vol.array.dtype}; "
                        "expected a 3-D numeric volume (X, Y, Z) in HU")
    aff = vol.affine
    if not np.all(np.isfinite(aff)) or abs(float(np.linalg.det(aff[:3, :3]))) < 1e-12:
        raise DataError(f"{vol.source}: affine {aff[:3].tolist()} is singular or not finite; "
                        "expected a valid voxel-to-world matrix")
    return check_finite(vol, vol.source)


def prepare_volume(vol: "Volume", hu_window: tuple[float, float], keep_image: bool = False) -> PreparedVolume:
    """Reorient to canonical RAS and window to uint8.

    Args:
        vol: the CT in HU, any orientation.
        hu_window: (low, high) HU mapped to 0..255.
        keep_image: also keep the CT in HU on the input's grid (:func:`compact_hu`), for
            statistics and reports.

    Returns:
        :class:`PreparedVolume` (``read_s`` left 0).
    """
    from ..data.slicer import hu_to_uint8
    from ..io.volumes import to_canonical

    can, undo = to_canonical(vol)
    return PreparedVolume(source=vol.source, affine=vol.affine, header=vol.header, shape=tuple(vol.array.shape),
                          windowed=hu_to_uint8(can.array, hu_window), spacing=can.spacing, undo=undo,
                          image=compact_hu(vol.array) if keep_image else None)


# --------------------------------------------------------------------------- prediction


def _slice_probabilities(predictor: "Predictor", view: np.ndarray, settings: VolumeSettings, bar=None):
    """Per batch of slices of ``view`` (uint8 (A, B, N), slices along the last axis): the slice indices and
    their probabilities, float32 tensor (n, K, rows, cols) at the slice's own size, display-oriented."""
    import torch
    import torch.nn.functional as F

    from ..data.images import normalize_image
    from ..data.slicer import slice_channels

    nz = view.shape[2]
    size = tuple(settings.image_size)
    for start in range(0, nz, settings.batch_size):
        ks = range(start, min(start + settings.batch_size, nz))
        imgs = [normalize_image(slice_channels(view, k, settings.channels, settings.context).astype(np.float32)
                                / 255.0, settings.standardize) for k in ks]
        x = torch.from_numpy(np.stack(imgs))
        native = x.shape[2:]
        if tuple(native) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        probs = predictor.probs(x)
        if settings.tta_context_flip:  # the same slices with z-1 and z+1 swapped, averaged
            probs = (probs + predictor.probs(x.flip(1))) / 2
        if tuple(native) != size:
            probs = F.interpolate(probs, size=native, mode="bilinear", align_corners=False)
        yield ks, probs
        if bar is not None:
            bar.update(len(ks))


def predict_volume(predictor: "Predictor", windowed: np.ndarray, settings: VolumeSettings,
                   progress: bool = False) -> np.ndarray:
    """Labels for a canonical windowed volume, slice by slice in each of ``settings.planes``.

    With one plane, each batch's argmax is written straight into the label volume.  With several
    (tri-planar fusion), each plane's probabilities are put back on the canonical grid and summed
    in a float32 (X, Y, Z, K) volume (630 MB for 512x512x200 and 3 classes), whose argmax is the
    result: every voxel is decided by the three slices through it.

    Args:
        predictor: the loaded model(s).
        windowed: uint8 (X, Y, Z) in canonical RAS orientation (:func:`prepare_volume`).
        settings: model input size, channels and 2.5D context, standardisation, flip TTA, batch size,
            planes.
        progress: show a progress bar over the slices (tqdm, on stderr) when the volume has more
            than :data:`PROGRESS_MIN_SLICES` slices.

    Returns:
        uint8 (X, Y, Z) argmax labels in the same (canonical) orientation.
    """
    import torch

    from ..data.planes import to_plane
    from ..data.slicer import from_view

    planes = tuple(settings.planes)
    total = sum(to_plane(windowed, p).shape[2] for p in planes)
    bar = None
    if progress and total > PROGRESS_MIN_SLICES:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="slice", desc="slices", leave=False, dynamic_ncols=True)
    if planes == ("axial",):
        # Fortran order: each axial slice is one contiguous block, as NIfTI stores it, so the slices are
        # written in place and the labels are saved without a transposing copy of the volume
        out = np.zeros(windowed.shape, np.uint8, order="F")
        for ks, probs in _slice_probabilities(predictor, windowed, settings, bar):
            labels = probs.argmax(1).to(torch.uint8).cpu().numpy()
            for k, lab in zip(ks, labels):
                out[:, :, k] = from_view(lab)
    else:
        acc = None
        for plane in planes:
            view = to_plane(windowed, plane)
            for ks, probs in _slice_probabilities(predictor, view, settings, bar):
                probs = probs.float().cpu().numpy()
                if acc is None:
                    acc = np.zeros((*windowed.shape, probs.shape[1]), np.float32)
                acc_view = to_plane(acc, plane)  # a view: writes land in acc
                for k, p in zip(ks, probs):
                    acc_view[:, :, k, :] += np.stack([from_view(pc) for pc in p], axis=-1)
        out = acc.argmax(-1).astype(np.uint8)
        del acc
    if bar is not None:
        bar.close()
    return out


def postprocess_volume(labels: np.ndarray, windowed: np.ndarray, spacing: tuple[float, float, float],
                       voxel_mm3: float, settings: VolumeSettings) -> np.ndarray:
    """Clean a canonical label volume: the liver's largest component, tumour filters and growth.

    Args:
        labels: uint8 (X, Y, Z) canonical labels.
        windowed: uint8 (X, Y, Z) the windowed CT they were predicted from (tumour growth reads it).
        spacing: voxel size in mm along the canonical axes.
        voxel_mm3: volume of one voxel (mm^3), for ``min_tumour_mm3``.
        settings: the ``[infer]`` postprocessing values and the number of classes.

    Returns:
        uint8 (X, Y, Z) labels.
    """
    from .postprocess import grow_tumours, largest_component, postprocess_liver_tumour

    if settings.num_classes == 2:
        return largest_component(labels >= 1).astype(np.uint8)
    if settings.num_classes != 3:
        return labels
    labels = postprocess_liver_tumour(
        labels, min_tumour_voxels=int(np.ceil(settings.min_tumour_mm3 / voxel_mm3)),
        tumour_liver_contact=settings.tumour_liver_contact, fill_holes=settings.fill_holes)
    if settings.tumour_grow > 0:
        lo, hi = settings.hu_window  # windowed is the window mapped to 0..255: contrast in its units
        labels = grow_tumours(labels, windowed, spacing, settings.tumour_grow,
                              min_contrast=GROW_MIN_CONTRAST_HU * 255.0 / (hi - lo), beyond=settings.tumour_grow_beyond)
    return labels


@dataclass
class _Loaded:
    """One item of the loader thread's queue: a prepared volume, or the message of its failure."""

    path: str
    volume: PreparedVolume | None = None
    error: str | None = None


def _loader(paths: Sequence[str], hu_window, q: queue.Queue, abort: threading.Event, keep_going: bool,
            keep_image: bool = False, series_uid: str | None = None) -> None:
    from ..io.volumes import read_volume

    for path in paths:
        if abort.is_set():
            return
        try:
            t0 = time.perf_counter()
            prepared = prepare_volume(read_volume(path, series_uid=series_uid), hu_window, keep_image)
            prepared.read_s = time.perf_counter() - t0
            item = _Loaded(str(path), volume=prepared)
        except FlexUNetError as exc:
            item = _Loaded(str(path), error=str(exc))
        except Exception as exc:  # unexpected reader failure: report, do not hang the consumer
            item = _Loaded(str(path), error=f"{path}: {exc.__class__.__name__}: {exc}")
        if item.error and not keep_going:
            q.put(item)
            return
        while not abort.is_set():
            try:
                q.put(item, timeout=0.5)
                break
            except queue.Full:
                continue
    q.put(None)


class VolumePredictor:
    """One loaded model (or ensemble) for segmenting many CT volumes.

    Args:
        config: a loaded :class:`~flexunet.config.Config`, or the path of a ``train_eval_infer.config``.
        weights: checkpoint path(s); several make an ensemble (softmax averaged). Default:
            ``[infer] weights``, else ``[train] model_dir/best.pt``.
        device: "auto", "cpu", "cuda" or "cuda:N" (default: ``[infer] device``).
        overrides: ``section.key=value`` strings applied when ``config`` is a path.
        predictor: an already built :class:`~flexunet.infer.predictor.Predictor` to use instead of
            loading ``weights``.

    Raises:
        ConfigError: bad config or device.  CheckpointError: a checkpoint missing, corrupt or of
            another architecture.
    """

    def __init__(self, config: "Config | str | os.PathLike", weights: str | os.PathLike | Sequence[str] | None = None,
                 *, device: str | None = None, overrides: Iterable[str] = (), predictor: "Predictor | None" = None):
        from ..config import Config, load_config
        from .common import load_predictor, weight_paths

        cfg = config if isinstance(config, Config) else load_config(config, overrides)
        self.config = cfg
        self.settings = VolumeSettings.from_config(cfg)
        self.weights = [str(p) for p in weight_paths(cfg, weights)]
        self.predictor = predictor or load_predictor(cfg, weights, device=device)
        self._weights_sha256: list[str | None] | None = None

    def provenance(self, postprocess: bool = True) -> dict[str, Any]:
        """What made the labels: FlexUNet's version, the config, the architecture, the weights with
        their SHA-256 (hashed once per predictor), and the settings of prediction and postprocessing.

        Returns:
            A JSON-ready dict (the ``model`` of the statistics, the report's provenance).
        """
        import hashlib

        from .. import __version__

        if self._weights_sha256 is None:
            sums: list[str | None] = []
            for w in self.weights:
                try:
                    h = hashlib.sha256()
                    with open(w, "rb") as fh:
                        for block in iter(lambda: fh.read(1 << 20), b""):
                            h.update(block)
                    sums.append(h.hexdigest())
                except OSError:
                    sums.append(None)
            self._weights_sha256 = sums
        cfg, st = self.config, self.settings
        return {"flexunet_version": __version__, "config": str(cfg.source), "architecture": cfg.model.model,
                "classes": list(cfg.class_names), "input_size": list(st.image_size), "channels": st.channels,
                "context_2_5d": st.context, "hu_window": list(st.hu_window), "tta_context_flip": st.tta_context_flip,
                "weights": list(self.weights), "weights_sha256": list(self._weights_sha256),
                "runtime": cfg.infer.runtime, "device": str(getattr(self.predictor, "device", "") or ""),
                "postprocess": bool(postprocess),
                "postprocessing": {"min_tumour_mm3": st.min_tumour_mm3,
                                   "tumour_liver_contact": st.tumour_liver_contact, "fill_holes": st.fill_holes,
                                   "tumour_grow": st.tumour_grow, "tumour_grow_beyond": st.tumour_grow_beyond}}

    def _labels(self, prepared: PreparedVolume, postprocess: bool,
                progress: bool = False) -> tuple[np.ndarray, dict[str, float]]:
        """Labels on the input's grid (uint8, input shape) and the seconds of each stage."""
        t0 = time.perf_counter()
        labels = predict_volume(self.predictor, prepared.windowed, self.settings, progress=progress)
        t1 = time.perf_counter()
        if postprocess:
            labels = postprocess_volume(labels, prepared.windowed, prepared.spacing,
                                        voxel_volume_ml(prepared.affine) * 1000.0, self.settings)
        labels = np.ascontiguousarray(prepared.undo(labels)).astype(np.uint8, copy=False)
        if labels.shape != tuple(prepared.shape):
            raise FlexUNetError(f"{prepared.source}: internal orientation error: {labels.shape} vs {prepared.shape}")
        return labels, {"read_s": prepared.read_s, "predict_s": t1 - t0, "postprocess_s": time.perf_counter() - t1}

    def segment(self, ct: CTInput, *, affine: np.ndarray | None = None, postprocess: bool = True,
                keep_image: bool = True, progress: bool = False, series_uid: str | None = None) -> Segmentation:
        """Segment one CT in memory (nothing is written).

        Args:
            ct: a path (NIfTI, DICOM folder/.zip/file, MRC), a nibabel image, a Volume, or a NumPy
                array (X, Y, Z) in HU with ``affine``.
            affine: 4x4 voxel-to-world (RAS+ mm) matrix, for an array input only.
            postprocess: apply the ``[infer]`` postprocessing (as ``infer-volume`` does by default).
            keep_image: keep the CT in HU in the result (``Segmentation.image``, int16 where exact),
                for the HU statistics, the lesions' mean HU and the report's images.
            progress: a progress bar over the slices of a long volume.
            series_uid: the SeriesInstanceUID to read from a DICOM folder or zip holding several.

        Returns:
            :class:`Segmentation` on the input's grid.

        Raises:
            DataError: unreadable input, bad array or affine, NaN/Inf voxels.
        """
        t0 = time.perf_counter()
        vol = as_volume(ct, affine, series_uid)
        prepared = prepare_volume(vol, self.settings.hu_window, keep_image)
        prepared.read_s = time.perf_counter() - t0
        del vol
        labels, timings = self._labels(prepared, postprocess, progress)
        return self._result(prepared, labels, timings, postprocess)

    def _result(self, prepared: PreparedVolume, labels: np.ndarray, timings: dict[str, float],
                postprocess: bool) -> Segmentation:
        aff = prepared.affine.copy()
        spacing = tuple(float(v) for v in np.sqrt((aff[:3, :3] ** 2).sum(0)))
        return Segmentation(labels=labels, affine=aff, spacing=spacing,
                            volumetry=volumetry(labels, voxel_volume_ml(aff)), source=prepared.source,
                            timings=timings, header=prepared.header, image=prepared.image,
                            provenance=self.provenance(postprocess))

    def segment_files(self, inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike, *,
                      postprocess: bool = True, keep_going: bool = False, quiet: bool = False,
                      num_parts: int = 1, part_id: int = 0, statistics: bool = False, report: bool = False,
                      output_format: str | Sequence[str] = "nifti", series_uid: str | None = None) -> dict:
        """Segment volume files into ``output_dir/<case>.nii.gz`` (uint8 labels, the input's affine and header).

        The next volume is read while the current one is predicted.  Output names come from
        :func:`output_name`; two inputs that would share one are refused before anything is read.
        Every file is written atomically.

        Args:
            inputs: NIfTI files, DICOM folders / .zip / files, MRC files.
            output_dir: created if missing.
            postprocess: apply the ``[infer]`` postprocessing.
            keep_going: report a failing input and go on with the rest instead of stopping.
            quiet: no progress bars and no line per volume.
            num_parts, part_id: segment only every ``num_parts``-th input starting at ``part_id``
                (:func:`select_part`), so a batch splits over machines with no coordination.
            statistics: also write ``<case>.json`` (:meth:`Segmentation.statistics`, lesion table
                included), ``<case>_lesions.csv`` and one row per case in ``statistics.csv``
                (``statistics_part<K>of<N>.csv`` for a part of a batch), rewritten after each case.
            report: also write the self-contained ``<case>.html`` report.
            output_format: "nifti" (``<case>.nii.gz``), "dicom-seg" (``<case>.seg.dcm``, DICOM input
                only) or both ("nifti,dicom-seg").
            series_uid: the SeriesInstanceUID to read from DICOM inputs holding several series.

        Returns:
            ``{"written": [label files], "failures": [(input, message)], "timings": [per-case dicts],
            "statistics": [JSON paths], "reports": [HTML paths], "statistics_csv": path or None}``.

        Raises:
            DataError: an input missing or unreadable (unless ``keep_going``), colliding output
                names, an unknown output format, DICOM-SEG asked for a non-DICOM input, or an output
                folder that cannot be created.
        """
        from ..io.atomic import safe_child
        from ..io.volumes import write_nifti

        formats = output_formats(output_format)
        inputs = [str(p) for p in inputs]
        check_output_names(inputs)
        inputs = select_part(inputs, num_parts, part_id)
        out_dir = Path(output_dir)
        missing = [p for p in inputs if not Path(p).exists()]
        if missing and not keep_going:
            raise DataError(f"{missing[0]}: input volume not found; expected a .nii/.nii.gz file, a DICOM folder or "
                            ".zip, or an .mrc file")
        check_dicom_seg_inputs([p for p in inputs if p not in missing], formats)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{out_dir}: output folder cannot be created ({exc.strerror}); expected a writable folder")
        failures = [(p, f"{p}: input volume not found") for p in missing]
        existing = [p for p in inputs if p not in missing]
        csv_path = None
        if statistics:
            csv_name = "statistics.csv" if num_parts == 1 else f"statistics_part{part_id}of{num_parts}.csv"
            csv_path = safe_child(out_dir, csv_name)
        q: queue.Queue = queue.Queue(maxsize=1)
        abort = threading.Event()
        loader = threading.Thread(target=_loader, args=(existing, self.settings.hu_window, q, abort, keep_going,
                                                        statistics or report, series_uid), daemon=True)
        loader.start()
        bar = None
        if not quiet and len(existing) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(existing), unit="volume", desc="volumes", dynamic_ncols=True)
        say = print if bar is None else bar.write
        written, timings, empty, stats_files, reports, rows = [], [], [], [], [], []
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                if item.error:
                    if not keep_going:
                        raise DataError(item.error)
                    failures.append((item.path, item.error))
                    if bar is not None:
                        bar.update(1)
                    continue
                prepared = item.volume
                labels, t = self._labels(prepared, postprocess, progress=not quiet)
                seg = self._result(prepared, labels, t, postprocess)
                name = output_name(item.path)
                t1 = time.perf_counter()
                dst = None
                if "nifti" in formats:
                    dst = safe_child(out_dir, name + ".nii.gz")
                    write_nifti(labels, dst, affine=prepared.affine, header=prepared.header, dtype=np.uint8)
                    written.append(str(dst))
                if "dicom-seg" in formats:
                    seg_path = seg.save_dicom_seg(safe_child(out_dir, name + ".seg.dcm"))
                    written.append(str(seg_path))
                    dst = dst or seg_path
                t["write_s"] = time.perf_counter() - t1
                if statistics or report:
                    t2 = time.perf_counter()
                    stats = seg.statistics()
                    if statistics:
                        stats_files.append(str(seg.save_statistics(safe_child(out_dir, name + ".json"), stats)))
                        seg.save_lesions(safe_child(out_dir, name + "_lesions.csv"))
                        rows.append(case_row(stats))
                        save_csv(csv_path, rows, csv_columns(rows))
                    if report:
                        reports.append(str(seg.save_report(safe_child(out_dir, name + ".html"), stats)))
                    t["statistics_report_s"] = time.perf_counter() - t2
                if not labels.any():
                    empty.append(name)
                timings.append({"case": name, **t, "slices": int(prepared.shape[2])})
                if not quiet:
                    say(f"{item.path} -> {dst} ({prepared.shape[2]} slices, read {t['read_s']:.1f} s, "
                        f"predict {t['predict_s']:.1f} s)")
                if bar is not None:
                    bar.update(1)
                del prepared, item, labels, seg
        finally:
            abort.set()
            loader.join(timeout=5)
            if bar is not None:
                bar.close()
        if empty:
            from .common import warn_if_nothing_found

            warn_if_nothing_found(f"{len(empty)} of {len(timings)} volume(s) got no liver ({', '.join(empty[:3])}"
                                  f"{', ...' if len(empty) > 3 else ''})", self.config)
        return {"written": written, "failures": failures, "timings": timings, "statistics": stats_files,
                "reports": reports, "statistics_csv": str(csv_path) if csv_path and rows else None}


def infer_volumes(cfg: "Config", inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
                  weights: str | Sequence[str] | None = None, postprocess: bool = True, keep_going: bool = False,
                  quiet: bool = False, predictor: "Predictor | None" = None, num_parts: int = 1,
                  part_id: int = 0, statistics: bool = False, report: bool = False,
                  output_format: str | Sequence[str] = "nifti", series_uid: str | None = None) -> dict:
    """``flexunet infer-volume``: :meth:`VolumePredictor.segment_files` with a model loaded for the call.

    Inputs are checked (names, existence, DICOM for DICOM-SEG) before the model is loaded, so a bad
    call fails fast.  See :meth:`VolumePredictor.segment_files` for the arguments and the result.
    """
    formats = output_formats(output_format)
    check_output_names([str(p) for p in inputs])
    part = select_part([str(p) for p in inputs], num_parts, part_id)
    if not keep_going:
        for p in part:
            if not Path(p).exists():
                raise DataError(f"{p}: input volume not found; expected a .nii/.nii.gz file, a DICOM folder or .zip, "
                                "or an .mrc file")
    check_dicom_seg_inputs(part, formats)
    vp = VolumePredictor(cfg, weights, predictor=predictor)
    return vp.segment_files(inputs, output, postprocess=postprocess, keep_going=keep_going, quiet=quiet,
                            num_parts=num_parts, part_id=part_id, statistics=statistics, report=report,
                            output_format=formats, series_uid=series_uid)
