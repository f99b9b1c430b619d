#!/usr/bin/env python
"""The original's inference on a stack of slices, in TensorFlow: run under the TF anchor's interpreter.

    /tmp/tf-venv/bin/python bench/tf_seed_predict.py SLICES.npy THREADS

``SLICES.npy``: uint8 (N, 512, 512, 3), the slices of one CT as the model sees them.  The model is the
original TensorFlowFlexUNet of the seed config (config A), built by ``../shared/tools/tf_anchor.py``'s own
``build`` (read from that file, not copied); weights are its random initialisation, which costs what
loading a trained ``.h5`` would not, so the build time is reported apart.  Each slice is predicted one at a
time with ``model.predict_on_batch`` and argmaxed, as the original's inference loop does per image file
(file reading and PNG writing are left out: they would only add to the original's time).  Prints one JSON
line starting with ``RESULT``: ``import_s``, ``build_s``, ``predict_s``, ``slices``, ``total_s``.
"""
import json
import os
import sys
import time
from pathlib import Path

t_start = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
slices_path, threads = sys.argv[1], int(sys.argv[2])
ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "tools" / "tf_anchor.py"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
import_s = time.perf_counter() - t_start

# the anchor's definitions (CONFIGS, build), without its timing script: everything before its first run line
source = ANCHOR.read_text()
defs = source[: source.index("cfg = CONFIGS[cfg_name]")]
sys.argv = [str(ANCHOR), "A", str(threads), "1"]
namespace: dict = {"__name__": "tf_anchor"}
exec(compile(defs, str(ANCHOR), "exec"), namespace)

t0 = time.perf_counter()
model, _, _ = namespace["build"](**namespace["CONFIGS"]["A"])
build_s = time.perf_counter() - t0
stack = np.load(slices_path, mmap_mode="r")
t0 = time.perf_counter()
labels = np.empty(stack.shape[:3], np.uint8)
for i in range(stack.shape[0]):
    x = np.asarray(stack[i], dtype=np.float32)[None] / 255.0
    labels[i] = np.argmax(model.predict_on_batch(x)[0], axis=-1)
predict_s = time.perf_counter() - t0
print("RESULT " + json.dumps({"import_s": round(import_s, 2), "build_s": round(build_s, 2),
                              "predict_s": round(predict_s, 2), "slices": int(stack.shape[0]),
                              "slices_s": round(stack.shape[0] / predict_s, 3), "tf": tf.__version__,
                              "total_s": round(time.perf_counter() - t_start, 2)}), flush=True)
