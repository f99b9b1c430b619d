"""Two CPU processes with DDP (gloo) through the CLI: training works and only rank 0 writes files."""
import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(300)
def test_ddp_two_cpu_processes_only_rank0_writes(tiny_project, tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    env = dict(os.environ, FLEXUNET_TRACE_WRITES=str(trace), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "flexunet", "--quiet", "train", str(tiny_project / "train_eval_infer.config"),
           "--set", "train.accelerator='cpu'", "--set", "train.devices=2", "--set", "train.strategy='ddp'",
           "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2"]
    proc = subprocess.run(cmd, cwd=tiny_project, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [l.split(" ", 1) for f in trace.iterdir() for l in f.read_text().splitlines()]
    ranks = {r for r, _ in lines}
    assert lines, "no writes traced"
    assert ranks == {"0"}, f"files written by ranks {ranks}"
    pids = {f.name for f in trace.iterdir()}
    assert len(pids) == 1  # one process wrote everything
    assert (tiny_project / "models" / "best.pt").exists()
    assert (tiny_project / "eval" / "train_losses.csv").exists()
