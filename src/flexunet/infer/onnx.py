"""ONNX export of a trained model, and running it in onnxruntime behind the :class:`Predictor` interface.

An exported file carries its preprocessing contract in the ONNX metadata
(``metadata_props``), so a tool outside FlexUNet can feed it correctly:

* input ``image``: float32 (N, C, H, W), H x W the model's size, values the HU window
  mapped to 0..1 (then standardised per image when ``standardize`` is true);
* output ``logits``: float32 (N, K, H, W), softmax over K gives class probabilities;
* ``flexunet.contract``: JSON with ``hu_window``, ``image_size`` [H, W], ``channels``,
  ``context`` (channels are slices k-1, k, k+1), ``standardize``, ``class_names``,
  ``model``, ``flexunet_version``, ``slice_orientation``.

onnxruntime and onnx are optional: installed with the ``onnx`` extra (and the test extra).
"""
from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError

CONTRACT_KEY = "flexunet.contract"
OPSET = 17


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"runtime onnxruntime / flexunet export: the package {module!r} is not installed; "
                          "expected `pip install onnx onnxruntime` (or `pip install -e '.[onnx]'`)") from None


def contract_of(cfg) -> dict[str, Any]:
    """The preprocessing contract of a config's model (what an exported file promises its users)."""
    from .. import __version__
    from ..config.rules import context_enabled

    m = cfg.model
    return {"hu_window": list(cfg.slice.hu_window), "image_size": [m.image_height, m.image_width],
            "channels": m.image_channels, "context": context_enabled(m.image_channels, cfg.slice.context_slices),
            "standardize": bool(m.input_normalize), "class_names": list(cfg.class_names), "model": m.model,
            "num_classes": m.num_classes, "flexunet_version": __version__,
            "slice_orientation": "axial slices of the canonical RAS volume shown radiologically (rows A->P, "
                                 "columns R->L)"}


def onnx_bytes(model: torch.nn.Module, image_size: tuple[int, int], channels: int) -> bytes:
    """Export ``model`` (eval mode, BatchNorm folded into a copy) to ONNX bytes with a dynamic batch axis.

    Args:
        model: maps (N, C, H, W) to logits (N, K, H, W).
        image_size: (H, W) of the example input.
        channels: C.
    """
    from .predictor import fold_batchnorm

    _require("onnx")
    folded = fold_batchnorm(copy.deepcopy(model).float().eval())
    example = torch.zeros(1, channels, *image_size)
    buf = io.BytesIO()
    import warnings

    # the TorchScript exporter: no onnxscript dependency, and it handles every zoo model; torch
    # marks it deprecated, which says nothing about this file
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(folded, (example,), buf, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    return buf.getvalue()


def calibration_images(cfg, limit: int = 64) -> tuple[np.ndarray, str]:
    """Images for int8 calibration: up to ``limit`` of ``[valid]`` images_dir (else ``[train]``), spread
    evenly over the sorted file names and prepared as the model sees them.

    Returns:
        float32 (N, C, H, W) and the folder they came from.

    Raises:
        ConfigError: neither folder holds images.
    """
    from ..data.images import list_images, load_image, normalize_image
    from ..errors import DataError

    for folder in (cfg.valid.images_dir, cfg.train.images_dir):
        if not folder:
            continue
        try:
            paths = list_images(folder)
        except DataError:
            continue
        step = max(1, len(paths) // limit)
        images = [normalize_image(load_image(p, cfg), cfg.model.input_normalize) for p in paths[::step][:limit]]
        return np.stack(images).astype(np.float32), str(folder)
    raise ConfigError(f"{cfg.source}: int8 export needs calibration images in [valid] or [train] images_dir; "
                      "expected a sliced dataset (`flexunet slice`) beside the config")


def quantize_int8(model_bytes: bytes, images: np.ndarray) -> bytes:
    """Static int8 quantization (QDQ; per-channel int8 weights, uint8 activations) calibrated on ``images``
    (float32 (N, C, H, W)); onnxruntime runs it with VNNI/AMX int8 kernels where the CPU has them."""
    import tempfile

    _require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": images[i:i + 1]} for i in range(len(images))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="flexunet-int8-") as tmp:
        src, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model_bytes)
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return out.read_bytes()


def export_onnx(cfg, weights, output: str | os.PathLike, int8: bool = False) -> Path:
    """``flexunet export``: the model of ``cfg`` with ``weights`` as an ONNX file with its contract.

    Args:
        cfg: the config the model was trained with.
        weights: one checkpoint path (None: ``[infer] weights`` / ``model_dir/best.pt``; exactly one).
        output: the ``.onnx`` path, written atomically.
        int8: quantize to int8 (:func:`quantize_int8`), calibrated on :func:`calibration_images`.

    Returns:
        The path written.

    Raises:
        ConfigError: onnx not installed, several checkpoints.  CheckpointError: bad checkpoint.
    """
    from ..io.atomic import atomic_save_bytes
    from ..models import create_model
    from ..models.checkpoint import load_weights_into
    from .common import weight_paths

    paths = weight_paths(cfg, weights)
    if len(paths) != 1:
        raise ConfigError(f"export: {len(paths)} checkpoints ({', '.join(map(str, paths))}); expected one "
                          "(--weights W): an ensemble is exported one model at a time")
    out = Path(output)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"{out}: expected an output name ending in .onnx")
    model = create_model(cfg.model)
    load_weights_into(model, paths[0], cfg.model.model)
    onnx = _require("onnx")
    blob = onnx_bytes(model, (cfg.model.image_height, cfg.model.image_width), cfg.model.image_channels)
    contract = contract_of(cfg)
    contract["weights"] = Path(paths[0]).name
    if int8:
        images, folder = calibration_images(cfg)
        blob = quantize_int8(blob, images)
        contract["quantized"] = (f"int8 (QDQ, per-channel weights), calibrated on {len(images)} images of "
                                 f"{Path(folder).name}")
    proto = onnx.load_from_string(blob)
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONTRACT_KEY, json.dumps(contract)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save_bytes(out, proto.SerializeToString())


def read_contract(path: str | os.PathLike) -> dict[str, Any]:
    """The contract stored in an exported ``.onnx`` file.

    Raises:
        CheckpointError: not an ONNX file, or one without a FlexUNet contract.
    """
    onnx = _require("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read as ONNX ({type(exc).__name__}); expected a file written by "
                              "`flexunet export`") from None
    for entry in proto.metadata_props:
        if entry.key == CONTRACT_KEY:
            return json.loads(entry.value)
    raise CheckpointError(f"{path}: has no {CONTRACT_KEY} metadata; expected a file written by `flexunet export`")


def check_contract(path: str | os.PathLike, cfg) -> None:
    """Refuse an exported model whose contract differs from the config that will feed it.

    Raises:
        CheckpointError: naming the first differing field, with both values.
    """
    have, want = read_contract(path), contract_of(cfg)
    for key in ("hu_window", "image_size", "channels", "context", "standardize", "num_classes"):
        if key in have and have[key] != want[key]:
            raise CheckpointError(f"{path}: exported with {key} = {have[key]!r} but the config gives {want[key]!r}; "
                                  "expected the config the model was trained and exported with")


class OnnxModule(torch.nn.Module):
    """A model run by onnxruntime behind the module interface: (N, C, H, W) images to logits (N, K, H, W).

    Args:
        model: ONNX bytes or the path of an ``.onnx`` file.
        num_threads: intra-op threads (default: the cores this process may use).
    """

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int | None = None):
        super().__init__()
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = model if isinstance(model, bytes) else str(model)
        self.runner = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.runner.run(["logits"], {"image": arr})[0])

    @classmethod
    def from_torch(cls, model: torch.nn.Module, image_size: tuple[int, int], channels: int) -> "OnnxModule":
        """Export ``model`` in memory and open it in onnxruntime."""
        return cls(onnx_bytes(model, image_size, channels))
