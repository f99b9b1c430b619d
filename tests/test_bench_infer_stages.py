"""bench/infer_stages.py: a short run writes the process table and the stage table, and the stage loop
equals the library's predict_volume."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_infer_stages_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "infer_stages.py"), "--slices", "8", "--repeats", "1",
                           "--variants", "eager-32,onnxruntime", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "infer_stages.json").read_text())
    assert all(r["returncode"] == 0 for v in res["e2e"].values() for r in v["runs"])
    stages = res["stages"]["eager-32"]
    assert stages["loop_equals_predict_volume"] is True
    assert {"imports", "model_load", "read_decompress", "model", "postprocess", "undo_write"} <= set(stages["stages_s"])
    assert "| stage | seconds |" in (tmp_path / "infer_stages.md").read_text()
