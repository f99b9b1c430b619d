"""FlexUNet: liver and liver-tumour CT segmentation, successor of TensorFlowFlexUNet.

The Python API (see :mod:`flexunet.api`)::

    import flexunet
    seg = flexunet.segment("ct.nii.gz", config="train_eval_infer.config")
    seg.labels, seg.affine, seg.spacing, seg.volumetry
    seg.save("ct_labels.nii.gz")

Names are imported on first use, so ``import flexunet`` stays cheap: torch and the
model code load only when a function that needs them runs.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "segment": "flexunet.api",
    "load_config": "flexunet.api",
    "read_volume": "flexunet.api",
    "write_phantoms": "flexunet.api",
    "slice_cases": "flexunet.api",
    "train": "flexunet.api",
    "evaluate": "flexunet.api",
    "infer": "flexunet.api",
    "infer_volumes": "flexunet.api",
    "evaluate_volumes": "flexunet.api",
    "run_demo": "flexunet.api",
    "export_onnx": "flexunet.api",
    "Segmentation": "flexunet.infer.segmentation",
    "VolumePredictor": "flexunet.infer.volume",
    "Volumetry": "flexunet.metrics.volumetry",
    "Volume": "flexunet.io.volumes",
    "Config": "flexunet.config",
    "FlexUNetError": "flexunet.errors",
    "ConfigError": "flexunet.errors",
    "DataError": "flexunet.errors",
    "CheckpointError": "flexunet.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from .api import (evaluate, evaluate_volumes, export_onnx, infer, infer_volumes, load_config, read_volume,
                      run_demo, segment, slice_cases, train, write_phantoms)
    from .config import Config
    from .errors import CheckpointError, ConfigError, DataError, FlexUNetError
    from .infer.segmentation import Segmentation
    from .infer.volume import VolumePredictor
    from .io.volumes import Volume
    from .metrics.volumetry import Volumetry




class _Package(types.ModuleType):
    """``flexunet.train`` and ``flexunet.infer`` are API functions and also subpackages.

    Importing a subpackage sets it as an attribute of its parent; this keeps the API function
    there instead.  The subpackages stay importable by name (``from flexunet.train import runner``,
    ``import flexunet.infer.volume``): the import system finds them in ``sys.modules``.
    """

    def __setattr__(self, name: str, value) -> None:
        if name in ("train", "infer") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flexunet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
