"""Volume inference: a CT volume (file, NIfTI image or array + affine) -> labels on the input's own grid.

Pipeline per volume: read -> canonical RAS -> HU window to uint8 (as the PNGs)
-> slices in batches with 2.5D context -> model at its input size -> probabilities
resized back to the slice size -> argmax -> optional postprocessing -> back to
the input's own orientation.  :class:`VolumePredictor` holds one loaded model
for many volumes; :meth:`VolumePredictor.segment` returns a
:class:`Segmentation` in memory, :meth:`VolumePredictor.segment_files` writes
``<case>.nii.gz`` files (``flexunet infer-volume``).

Memory stays bounded in :meth:`~VolumePredictor.segment_files`: a loader thread
reads the next volume while the current one is predicted, through a queue of
size 1 (imitating nnU-Net's data iterators), and only uint8 copies of the volume
are kept (512x512x600 is 157 MB per copy).  When the loader fails, an abort
event stops the run with the loader's message.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

import numpy as np

from ..errors import DataError, FlexUNetError
from ..metrics.volumetry import Volumetry, voxel_volume_ml, volumetry

if TYPE_CHECKING:  # pragma: no cover
    import nibabel as nib

    from ..config import Config
    from ..io.volumes import Reorientation, Volume
    from .predictor import Predictor

# tumour_grow leaves lesions alone that are less than this much darker than the liver around them
GROW_MIN_CONTRAST_HU = 10.0

# file and folder names that say nothing about the patient: such an input is named after its parent folder
GENERIC_NAMES = frozenset({"image", "patient_dicom", "dicom", "series"})

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

    @classmethod
    def from_config(cls, cfg: "Config") -> "VolumeSettings":
        """Read the settings from a loaded config."""
        from ..config.rules import context_enabled

        return cls(hu_window=tuple(cfg.slice.hu_window), image_size=(cfg.model.image_height, cfg.model.image_width),
                   channels=cfg.model.image_channels,
                   context=context_enabled(cfg.model.image_channels, cfg.slice.context_slices),
                   standardize=cfg.model.input_normalize, tta_context_flip=cfg.infer.tta_context_flip,
                   num_classes=cfg.model.num_classes, min_tumour_mm3=cfg.infer.min_tumour_mm3,
                   tumour_liver_contact=cfg.infer.tumour_liver_contact, fill_holes=cfg.infer.fill_holes,
                   tumour_grow=cfg.infer.tumour_grow, tumour_grow_beyond=cfg.infer.tumour_grow_beyond)


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
    """

    source: str
    affine: np.ndarray
    header: Any
    shape: tuple[int, ...]
    windowed: np.ndarray
    spacing: tuple[float, float, float]
    undo: "Reorientation"
    read_s: float = 0.0


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
        header: the input's header, kept for writing (None for arrays).
    """

    labels: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    volumetry: Volumetry
    source: str = "array"
    timings: dict[str, float] = field(default_factory=dict)
    header: Any = None

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


# --------------------------------------------------------------------------- reading


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


def as_volume(ct: CTInput, affine: np.ndarray | None = None) -> "Volume":
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
        return read_volume(ct)
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


def prepare_volume(vol: "Volume", hu_window: tuple[float, float]) -> PreparedVolume:
    """Reorient to canonical RAS and window to uint8.

    Args:
        vol: the CT in HU, any orientation.
        hu_window: (low, high) HU mapped to 0..255.

    Returns:
        :class:`PreparedVolume` (``read_s`` left 0).
    """
    from ..data.slicer import hu_to_uint8
    from ..io.volumes import to_canonical

    can, undo = to_canonical(vol)
    return PreparedVolume(source=vol.source, affine=vol.affine, header=vol.header, shape=tuple(vol.array.shape),
                          windowed=hu_to_uint8(can.array, hu_window), spacing=can.spacing, undo=undo)


# --------------------------------------------------------------------------- prediction


def predict_volume(predictor: "Predictor", windowed: np.ndarray, settings: VolumeSettings) -> np.ndarray:
    """Labels for a canonical windowed volume, slice by slice.

    Args:
        predictor: the loaded model(s).
        windowed: uint8 (X, Y, Z) in canonical RAS orientation (:func:`prepare_volume`).
        settings: model input size, channels and 2.5D context, standardisation, flip TTA, batch size.

    Returns:
        uint8 (X, Y, Z) argmax labels in the same (canonical) orientation.
    """
    import torch
    import torch.nn.functional as F

    from ..data.images import normalize_image
    from ..data.slicer import from_view, slice_channels

    nx, ny, nz = windowed.shape
    out = np.zeros((nx, ny, nz), np.uint8)
    size = tuple(settings.image_size)
    for start in range(0, nz, settings.batch_size):
        ks = range(start, min(start + settings.batch_size, nz))
        imgs = [normalize_image(slice_channels(windowed, k, settings.channels, settings.context).astype(np.float32)
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
        labels = probs.argmax(1).to(torch.uint8).cpu().numpy()
        for k, lab in zip(ks, labels):
            out[:, :, k] = from_view(lab)
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


def _loader(paths: Sequence[str], hu_window, q: queue.Queue, abort: threading.Event, keep_going: bool) -> None:
    from ..io.volumes import read_volume

    for path in paths:
        if abort.is_set():
            return
        try:
            t0 = time.perf_counter()
            prepared = prepare_volume(read_volume(path), hu_window)
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

    def _labels(self, prepared: PreparedVolume, postprocess: bool) -> tuple[np.ndarray, dict[str, float]]:
        """Labels on the input's grid (uint8, input shape) and the seconds of each stage."""
        t0 = time.perf_counter()
        labels = predict_volume(self.predictor, prepared.windowed, self.settings)
        t1 = time.perf_counter()
        if postprocess:
            labels = postprocess_volume(labels, prepared.windowed, prepared.spacing,
                                        voxel_volume_ml(prepared.affine) * 1000.0, self.settings)
        labels = np.ascontiguousarray(prepared.undo(labels)).astype(np.uint8, copy=False)
        if labels.shape != tuple(prepared.shape):
            raise FlexUNetError(f"{prepared.source}: internal orientation error: {labels.shape} vs {prepared.shape}")
        return labels, {"read_s": prepared.read_s, "predict_s": t1 - t0, "postprocess_s": time.perf_counter() - t1}

    def segment(self, ct: CTInput, *, affine: np.ndarray | None = None, postprocess: bool = True) -> Segmentation:
        """Segment one CT in memory (nothing is written).

        Args:
            ct: a path (NIfTI, DICOM folder/.zip/file, MRC), a nibabel image, a Volume, or a NumPy
                array (X, Y, Z) in HU with ``affine``.
            affine: 4x4 voxel-to-world (RAS+ mm) matrix, for an array input only.
            postprocess: apply the ``[infer]`` postprocessing (as ``infer-volume`` does by default).

        Returns:
            :class:`Segmentation` on the input's grid.

        Raises:
            DataError: unreadable input, bad array or affine, NaN/Inf voxels.
        """
        t0 = time.perf_counter()
        vol = as_volume(ct, affine)
        prepared = prepare_volume(vol, self.settings.hu_window)
        prepared.read_s = time.perf_counter() - t0
        spacing = vol.spacing
        del vol
        labels, timings = self._labels(prepared, postprocess)
        return Segmentation(labels=labels, affine=prepared.affine.copy(), spacing=spacing,
                            volumetry=volumetry(labels, voxel_volume_ml(prepared.affine)), source=prepared.source,
                            timings=timings, header=prepared.header)

    def segment_files(self, inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike, *,
                      postprocess: bool = True, keep_going: bool = False, quiet: bool = False,
                      num_parts: int = 1, part_id: int = 0) -> dict:
        """Segment volume files into ``output_dir/<case>.nii.gz`` (uint8 labels, the input's affine and header).

        The next volume is read while the current one is predicted.  Output names come from
        :func:`output_name`; two inputs that would share one are refused before anything is read.

        Args:
            inputs: NIfTI files, DICOM folders / .zip / files, MRC files.
            output_dir: created if missing.
            postprocess: apply the ``[infer]`` postprocessing.
            keep_going: report a failing input and go on with the rest instead of stopping.
            quiet: print nothing per volume.
            num_parts, part_id: segment only every ``num_parts``-th input starting at ``part_id``
                (:func:`select_part`), so a batch splits over machines with no coordination.

        Returns:
            ``{"written": [paths], "failures": [(input, message)], "timings": [per-case dicts]}``.

        Raises:
            DataError: an input missing or unreadable (unless ``keep_going``), colliding output
                names, or an output folder that cannot be created.
        """
        from ..io.atomic import safe_child
        from ..io.volumes import write_nifti

        inputs = [str(p) for p in inputs]
        check_output_names(inputs)
        inputs = select_part(inputs, num_parts, part_id)
        out_dir = Path(output_dir)
        missing = [p for p in inputs if not Path(p).exists()]
        if missing and not keep_going:
            raise DataError(f"{missing[0]}: input volume not found; expected a .nii/.nii.gz file, a DICOM folder or "
                            ".zip, or an .mrc file")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{out_dir}: output folder cannot be created ({exc.strerror}); expected a writable folder")
        failures = [(p, f"{p}: input volume not found") for p in missing]
        existing = [p for p in inputs if p not in missing]
        q: queue.Queue = queue.Queue(maxsize=1)
        abort = threading.Event()
        loader = threading.Thread(target=_loader, args=(existing, self.settings.hu_window, q, abort, keep_going),
                                  daemon=True)
        loader.start()
        written, timings, empty = [], [], []
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                if item.error:
                    if not keep_going:
                        raise DataError(item.error)
                    failures.append((item.path, item.error))
                    continue
                prepared = item.volume
                labels, t = self._labels(prepared, postprocess)
                name = output_name(item.path)
                dst = safe_child(out_dir, name + ".nii.gz")
                t1 = time.perf_counter()
                write_nifti(labels, dst, affine=prepared.affine, header=prepared.header, dtype=np.uint8)
                t["write_s"] = time.perf_counter() - t1
                written.append(str(dst))
                if not labels.any():
                    empty.append(name)
                timings.append({"case": name, **t, "slices": int(prepared.shape[2])})
                if not quiet:
                    print(f"{item.path} -> {dst} ({prepared.shape[2]} slices, read {t['read_s']:.1f} s, "
                          f"predict {t['predict_s']:.1f} s)")
                del prepared, item, labels
        finally:
            abort.set()
            loader.join(timeout=5)
        if empty:
            from .common import warn_if_nothing_found

            warn_if_nothing_found(f"{len(empty)} of {len(written)} volume(s) got no liver ({', '.join(empty[:3])}"
                                  f"{', ...' if len(empty) > 3 else ''})", self.config)
        return {"written": written, "failures": failures, "timings": timings}


def infer_volumes(cfg: "Config", inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
                  weights: str | Sequence[str] | None = None, postprocess: bool = True, keep_going: bool = False,
                  quiet: bool = False, predictor: "Predictor | None" = None, num_parts: int = 1,
                  part_id: int = 0) -> dict:
    """``flexunet infer-volume``: :meth:`VolumePredictor.segment_files` with a model loaded for the call.

    Inputs are checked (names, existence) before the model is loaded, so a bad call fails fast.
    See :meth:`VolumePredictor.segment_files` for the arguments and the result.
    """
    check_output_names([str(p) for p in inputs])
    if not keep_going:
        for p in select_part([str(p) for p in inputs], num_parts, part_id):
            if not Path(p).exists():
                raise DataError(f"{p}: input volume not found; expected a .nii/.nii.gz file, a DICOM folder or .zip, "
                                "or an .mrc file")
    vp = VolumePredictor(cfg, weights, predictor=predictor)
    return vp.segment_files(inputs, output, postprocess=postprocess, keep_going=keep_going, quiet=quiet,
                            num_parts=num_parts, part_id=part_id)
