"""Exact resume: a training process killed with SIGKILL at a random point after its first checkpoint,
then ``--resume``-d, ends with the same per-epoch losses, learning rates and weights as a run that was
never interrupted (num_workers = 0, precision 32; dropout, augmentation and ReduceLROnPlateau are on so
every random stream and scheduler state matters)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CONFIG_TEMPLATE, write_split
from flexunet.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"
EPOCHS = 6


def make(root: Path) -> str:
    ds = root / "dataset"
    write_split(ds, "train", 8, seed=1, size=32)
    write_split(ds, "valid", 2, seed=2, size=32)
    text = CONFIG_TEMPLATE.format(size=32, loss="dice_ce", epochs=EPOCHS)
    for a, b in {"epoch_change_infer     = True": "epoch_change_infer     = False",
                 "base_filters   = 8": "base_filters   = 4",
                 "dropout_rate   = 0.0": "dropout_rate   = 0.2",
                 "generator     = False": "generator     = True",
                 "reducer_patience   = 2": "reducer_patience   = 0",
                 "patience      = 10": "patience      = 3"}.items():
        assert a in text, a
        text = text.replace(a, b)
    text += "\n[augmentor]\nrotation = True\nhflip = True\ngaussian_noise = True\nprobability = 0.7\n"
    cfg = root / "train_eval_infer.config"
    cfg.write_text(text)
    return str(cfg)


def _state(path: Path) -> dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["state_dict"]


@pytest.mark.timeout(240)
def test_sigkill_at_random_point_then_resume_matches_uninterrupted(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cfg_a, cfg_b = make(a), make(b)

    # run B in a subprocess, killed with SIGKILL at a random moment after its first last.ckpt
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "flexunet", "--quiet", "train", cfg_b], cwd=b, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = b / "models" / "last.ckpt"
    delay = random.Random().uniform(0.0, 1.5)
    try:
        t0 = time.time()
        while not last.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() - t0 < 150, "no last.ckpt after 150 s"
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    print(f"SIGKILL {delay:.2f} s after the first last.ckpt; return code {proc.returncode}")
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert proc.returncode == -signal.SIGKILL or killed_at == EPOCHS - 1

    # resume B in-process; run A uninterrupted in-process
    assert main(["--quiet", "train", cfg_b, "--resume"]) == 0
    assert main(["--quiet", "train", cfg_a]) == 0

    ha = json.loads((a / "history.json").read_text())
    hb = json.loads((b / "history.json").read_text())
    assert ha["epoch"] == hb["epoch"] and len(ha["epoch"]) >= 2
    for key in ("loss", "val_loss", "dice_coef_multiclass", "val_dice_coef_multiclass", "lr"):
        np.testing.assert_allclose(hb[key], ha[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert min(ha["lr"]) < max(ha["lr"])  # the plateau scheduler did act, so its state was restored
    for name in ("best.pt", "last.ckpt"):
        sa, sb = _state(a / "models" / name), _state(b / "models" / name)
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sb[k].float(), sa[k].float(), rtol=1e-4, atol=1e-5, msg=f"{name} {k}")
    ca, cb = (torch.load(p / "models" / "last.ckpt", weights_only=True) for p in (a, b))
    assert ca["epoch"] == cb["epoch"] and ca["global_step"] == cb["global_step"]
    es = [k for k in ca["callbacks"] if k.startswith("EarlyStopping")][0]
    assert ca["callbacks"][es]["wait_count"] == cb["callbacks"][es]["wait_count"]
