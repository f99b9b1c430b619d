"""FlexUNet's Python API: the functions behind every ``flexunet`` command.

``from flexunet import segment, load_config, ...`` reaches them without importing
torch until a function that needs it is called.  Every function that takes a
``config`` accepts a loaded :class:`~flexunet.config.Config` or the path of a
``train_eval_infer.config`` (with ``overrides``, the CLI's ``--set`` values).

Example::

    import flexunet
    seg = flexunet.segment("ct.nii.gz", config="projects/liver-tumor-ct/train_eval_infer.config")
    print(seg.volumetry.liver_ml, seg.volumetry.lesion_count)
    seg.save("ct_labels.nii.gz")
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

import numpy as np

from .config import Config
from .config import load_config as _load_config_file
from .infer.segmentation import Segmentation
from .infer.volume import CTInput, VolumePredictor

if TYPE_CHECKING:  # pragma: no cover
    from .io.volumes import Volume

ConfigLike = Union[Config, str, os.PathLike]
Overrides = Union[Iterable[str], Mapping[str, Any]]
Weights = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], None]


def _override_strings(overrides: Overrides) -> list[str]:
    if isinstance(overrides, Mapping):
        return [f"{key}={value!r}" for key, value in overrides.items()]
    return [str(o) for o in overrides]


def load_config(path: str | os.PathLike, overrides: Overrides = ()) -> Config:
    """Read a ``train_eval_infer.config`` (the original's INI format) into a typed, validated Config.

    Args:
        path: the config file; its relative paths are resolved against its folder.
        overrides: ``"section.key=value"`` strings (as ``--set``) or a mapping
            ``{"section.key": value}``, applied before validation.

    Returns:
        :class:`~flexunet.config.Config` (frozen dataclasses, one per section).

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or contradicting values.
    """
    return _load_config_file(path, _override_strings(overrides))


def as_config(config: ConfigLike, overrides: Overrides = ()) -> Config:
    """``config`` as a Config: loaded from a path (with ``overrides``), or returned as given.

    Raises:
        ConfigError: see :func:`load_config`; also when overrides are given with a loaded Config.
    """
    if isinstance(config, Config):
        if _override_strings(overrides):
            from .errors import ConfigError

            raise ConfigError(f"{config.source}: overrides apply when a config is loaded; pass the config's path "
                              "or call load_config(path, overrides)")
        return config
    return load_config(config, overrides)


def read_volume(path: str | os.PathLike) -> "Volume":
    """Read a CT volume: NIfTI file, DICOM folder / .zip / file, or MRC file.

    Returns:
        :class:`~flexunet.io.volumes.Volume`: ``array`` (X, Y, Z) in HU as stored, ``affine`` 4x4
        voxel-to-world (RAS+ mm), ``header``, ``spacing`` (mm).

    Raises:
        DataError: missing, unreadable or inconsistent input (the message names the file).
    """
    from .io.volumes import read_volume as read

    return read(path)


def segment(ct: CTInput, config: ConfigLike, weights: Weights = None, *, affine: np.ndarray | None = None,
            overrides: Overrides = (), postprocess: bool = True, device: str | None = None,
            keep_image: bool = True, series_uid: str | None = None) -> Segmentation:
    """Segment the liver and liver tumours of one CT, in memory.

    The same computation as ``flexunet infer-volume`` (labels equal voxel for voxel), without
    writing a file unless asked (``.save(path)``).  To segment many CTs with one model loaded
    once, use :class:`VolumePredictor`.

    Args:
        ct: a path (NIfTI ``.nii``/``.nii.gz``, DICOM folder / ``.zip`` / file, MRC), a nibabel
            image, a :class:`~flexunet.io.volumes.Volume`, or a NumPy array (X, Y, Z) in HU
            together with ``affine``.
        config: a loaded Config or the path of a ``train_eval_infer.config``.
        weights: checkpoint path(s), several for an ensemble (default: ``[infer] weights``, else
            ``[train] model_dir/best.pt``).
        affine: 4x4 voxel-to-world (RAS+ mm) matrix, for an array ``ct`` only.
        overrides: ``section.key=value`` values applied when ``config`` is a path.
        postprocess: apply the ``[infer]`` postprocessing (largest liver component, tumour filters).
        device: "auto", "cpu", "cuda" or "cuda:N" (default: ``[infer] device``).
        keep_image: keep the CT in HU in the result (``.image``) for the HU statistics, the
            lesions' mean HU and the report's images.
        series_uid: the SeriesInstanceUID to read from a DICOM folder or zip holding several series.

    Returns:
        :class:`Segmentation`: ``labels`` uint8 (X, Y, Z) on the input's grid (0 background,
        1 liver, 2 tumour), ``affine``, ``spacing`` (mm), ``volumetry`` (liver and tumour mL,
        burden %, lesion count), ``timings``; ``.save(path)``, ``.to_nifti()``,
        ``.statistics()``, ``.lesions()``, ``.save_statistics(path)``, ``.save_report(path)`` and,
        for DICOM input, ``.save_dicom_seg(path)``.

    Raises:
        ConfigError: bad config.  CheckpointError: missing or mismatched weights.
        DataError: unreadable CT, bad array or affine.
    """
    predictor = VolumePredictor(as_config(config, overrides), weights, device=device)
    return predictor.segment(ct, affine=affine, postprocess=postprocess, keep_image=keep_image,
                             series_uid=series_uid)


def infer_volumes(config: ConfigLike, inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
                  weights: Weights = None, *, overrides: Overrides = (), postprocess: bool = True,
                  keep_going: bool = False, quiet: bool = False, num_parts: int = 1, part_id: int = 0,
                  statistics: bool = False, report: bool = False,
                  output_format: str | Sequence[str] = "nifti", series_uid: str | None = None) -> dict:
    """Segment volume files into ``output_dir/<case>.nii.gz`` (``flexunet infer-volume``).

    Args:
        config: a loaded Config or a config path.
        inputs: NIfTI files, DICOM folders / .zip / files, MRC files.
        output_dir: folder for the label files (created if missing).
        weights: checkpoint path(s) (see :func:`segment`).
        overrides: applied when ``config`` is a path.
        postprocess: apply the ``[infer]`` postprocessing.
        keep_going: report failing inputs and go on.
        quiet: no progress bars and no per-volume lines.
        num_parts, part_id: segment only every ``num_parts``-th input from ``part_id`` on, so a
            batch splits over machines (e.g. a job array) with no coordination.
        statistics: also write ``<case>.json`` (volumes, burden, HU, lesion table, model),
            ``<case>_lesions.csv`` and ``statistics.csv`` (one row per case); see docs/outputs.md.
        report: also write the self-contained HTML report ``<case>.html``.
        output_format: "nifti", "dicom-seg" (``<case>.seg.dcm``, DICOM input only) or both
            ("nifti,dicom-seg" or a list).
        series_uid: the SeriesInstanceUID to read from DICOM inputs holding several series.

    Returns:
        ``{"written": [label files], "failures": [(input, message)], "timings": [per-case dicts],
        "statistics": [JSON paths], "reports": [HTML paths], "statistics_csv": path or None}``.

    Raises:
        DataError: missing or unreadable input (unless ``keep_going``), two inputs with one output name,
            an unknown output format, DICOM-SEG for a non-DICOM input.
    """
    from .infer.volume import infer_volumes as run

    return run(as_config(config, overrides), inputs, output_dir, weights=weights, postprocess=postprocess,
               keep_going=keep_going, quiet=quiet, num_parts=num_parts, part_id=part_id, statistics=statistics,
               report=report, output_format=output_format, series_uid=series_uid)


def write_phantoms(dst: str | os.PathLike, cases: int = 8, seed: int = 0) -> Path:
    """Generate synthetic abdominal CT cases (``dst/phantom_NNN/image.nii.gz`` + ``label.nii.gz``).

    Returns:
        The path of the manifest written beside the cases.
    """
    from .data.phantom import write_phantoms as run

    return Path(run(dst, cases=cases, seed=seed))


def slice_cases(config: ConfigLike, *, overrides: Overrides = (), quiet: bool = False) -> dict:
    """Cut the ``[slice]`` cases into the 2-D train/valid/test layout, split by patient (``flexunet slice``).

    Returns:
        ``{"split": {case: split}, "counts": {...}, "output_dir": str}``.
    """
    from .data.slicer import slice_cases as run

    return run(as_config(config, overrides), quiet=quiet)


def train(config: ConfigLike, *, overrides: Overrides = (), resume: bool = False, quiet: bool = False) -> dict:
    """Train the ``[model]`` on ``[train]``/``[valid]`` (``flexunet train``).

    Args:
        config: a loaded Config or a config path.
        overrides: applied when ``config`` is a path.
        resume: continue from ``model_dir/last.ckpt``.
        quiet: no progress bars.

    Returns:
        ``{"epochs", "seconds", "best_val_loss", "best" (best.pt path), "last" (last.ckpt path),
        "precision", ...}``.

    Raises:
        ConfigError, DataError: bad config or data.  TrainingAborted: non-finite loss, break file or signal.
    """
    from .train.runner import train as run

    return run(as_config(config, overrides), resume=resume, quiet=quiet)


def train_summary(result: dict) -> str:
    """The line ``flexunet train`` prints for the result of :func:`train`."""
    return (f"trained {result['epochs']} epochs in {result['seconds']:.1f} s ({result['precision']}); "
            f"best val_loss {result['best_val_loss']:.4f}; best weights {result['best']}; resumable {result['last']}")


def evaluate(config: ConfigLike, weights: Weights = None, *, overrides: Overrides = (),
             output_dir: str | os.PathLike | None = None, quiet: bool = False) -> dict:
    """Evaluate the model on ``[test]`` slices: ``evaluation.csv``/``.json`` (``flexunet evaluate``).

    Returns:
        The metrics: the loss, the original's ``dice_coef_multiclass``, per-class Dice/IoU, ``images``.
    """
    from .infer.evaluate2d import evaluate as run

    return run(as_config(config, overrides), weights=weights, out_dir=output_dir, quiet=quiet)


def infer(config: ConfigLike, weights: Weights = None, *, overrides: Overrides = (), tiled: bool | None = None,
          keep_going: bool = False, quiet: bool = False) -> dict:
    """Segment ``[infer] images_dir`` into palette PNG masks and overlays (``flexunet infer``).

    Returns:
        ``{"written": [paths], "failures": [(file, message)], "output_dir", "overlay_dir"}``.
    """
    from .infer.infer2d import infer as run

    return run(as_config(config, overrides), weights=weights, tiled=tiled, keep_going=keep_going, quiet=quiet)


def evaluate_volumes(pred: str | os.PathLike | np.ndarray | Segmentation,
                     truth: str | os.PathLike | np.ndarray, *, spacing: Sequence[float] | None = None,
                     output_dir: str | os.PathLike | None = None) -> dict:
    """LiTS metrics of predicted label volumes against ground truth (``flexunet evaluate-volume``).

    Args:
        pred: a folder of ``<case>.nii.gz`` predictions, or one prediction: a label array
            (X, Y, Z) or a :class:`Segmentation`.
        truth: a folder of ground truth (``<case>.nii.gz`` or ``<case>/label.nii.gz``), or one
            label array of the same shape.
        spacing: voxel size (mm) for arrays (default: the Segmentation's).
        output_dir: for folders, where ``volume_metrics.csv``/``.json`` go (default: ``pred``).

    Returns:
        For folders: ``{"cases": [...], "aggregate": {...}, ...}`` as written to volume_metrics.json.
        For arrays: one case's metrics (per class Dice, IoU, VOE, RVD, ASSD, HD95, volumetry).

    Raises:
        DataError: unpaired cases, mismatched shapes or geometry, labels outside 0..2.
    """
    from .metrics.volume import LITS_CLASSES, case_metrics

    if isinstance(pred, Segmentation):
        spacing = spacing or pred.spacing
        pred = pred.labels
    if isinstance(pred, np.ndarray) or isinstance(truth, np.ndarray):
        from .errors import DataError

        p, g = np.asarray(pred), np.asarray(truth)
        if p.shape != g.shape:
            raise DataError(f"prediction of shape {p.shape} and truth of shape {g.shape}; expected the same shape")
        if spacing is None:
            raise DataError("evaluate_volumes on arrays: spacing= is required; expected the voxel size in mm")
        return case_metrics(p, g, tuple(float(s) for s in spacing), LITS_CLASSES)
    from .metrics.volume_eval import evaluate_volume_dirs

    return evaluate_volume_dirs(pred, truth, output_dir or pred)


def export_onnx(config: ConfigLike, output: str | os.PathLike, weights: str | os.PathLike | None = None, *,
                overrides: Overrides = (), int8: bool = False) -> Path:
    """Write the model as ONNX (``flexunet export``), its preprocessing contract in the metadata.

    The file runs in onnxruntime (``[infer] runtime = "onnxruntime"`` with it as weights, or any
    ONNX tool): input ``image`` (N, C, H, W) float32, output ``logits`` (N, K, H, W).

    Args:
        config: the config the model was trained with, loaded or a path.
        output: the ``.onnx`` path (written atomically).
        weights: one checkpoint (default: ``[infer] weights`` / ``model_dir/best.pt``).
        overrides: applied when ``config`` is a path.
        int8: quantize to int8, calibrated on up to 64 of the config's ``[valid]`` (else ``[train]``)
            images; faster where the CPU has int8 dot products (VNNI, AMX), with a small label drift
            (docs/results.md).

    Returns:
        The path written.

    Raises:
        ConfigError: onnx not installed, several checkpoints, a name not ending in .onnx, no
            calibration images for int8.
        CheckpointError: missing or mismatched weights.
    """
    from .infer.onnx import export_onnx as run

    return run(as_config(config, overrides), weights, output, int8=int8)


def run_demo(out_dir: str | os.PathLike = "demo_run", *, overrides: Overrides = (), minutes: float | None = None,
             cases: int = 10, quiet: bool = False) -> dict:
    """The whole volume pipeline on generated phantoms (``flexunet demo``): phantom -> slice -> train ->
    evaluate -> infer -> infer-volume -> evaluate-volume, then a per-class table.

    Args:
        out_dir: working folder (the demo config is copied into it).
        overrides: ``section.key=value`` values applied to every step.
        minutes: training time cap (default: the demo config's).
        cases: phantom cases to generate.
        quiet: no progress bars.

    Returns:
        ``{"aggregate": volume metrics, "verdict": {class: target met}, "seconds": float, "config": path}``.
    """
    from .demo import run_demo as run

    return run(str(out_dir), minutes=minutes, cases=cases, quiet=quiet, overrides=_override_strings(overrides))
