"""Exact resume: a training process killed with SIGKILL after a randomly chosen training step (a hook in
the step loop, so the kill always lands inside training, after the first checkpoint and before the last
epoch), then ``--resume``-d, ends with the same per-epoch losses, learning rates and weights as a run that
was never interrupted (num_workers = 0, precision 32; dropout, augmentation and ReduceLROnPlateau are on so
every random stream and scheduler state matters)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
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
                 "patience      = 10": "patience      = 3",
                 # a step size at which the validation loss stalls within the run, so the plateau reducer acts
                 "learning_rate  = 0.005": "learning_rate  = 0.01"}.items():
        assert a in text, a
        text = text.replace(a, b)
    text += "\n[augmentor]\nrotation = True\nhflip = True\ngaussian_noise = True\nprobability = 0.7\n"
    cfg = root / "train_eval_infer.config"
    cfg.write_text(text)
    return str(cfg)


def _state(path: Path) -> dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["state_dict"]


#: runs ``flexunet train CONFIG`` and SIGKILLs itself at the end of training step BATCH of epoch EPOCH
KILLER = """
import os, signal, sys

from flexunet.train.module import SegmentationModule

config, epoch, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def on_train_batch_end(self, outputs, batch_, batch_idx):
    if self.current_epoch == epoch and batch_idx == batch:
        os.kill(os.getpid(), signal.SIGKILL)


SegmentationModule.on_train_batch_end = on_train_batch_end
from flexunet.cli import main

sys.exit(main(["--quiet", "train", config]))
"""


@pytest.mark.timeout(240)
def test_sigkill_inside_training_then_resume_matches_uninterrupted(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cfg_a, cfg_b = make(a), make(b)

    # run B in a subprocess, killed with SIGKILL after a random training step of epochs 1..3: after the
    # first last.ckpt (end of epoch 0) and before EarlyStopping (patience 3) can end the run (after epoch 3)
    rng = random.Random()
    kill_epoch, kill_batch = rng.randint(1, 3), rng.randint(0, 1)  # 8 images, batch_size 4: batches 0 and 1
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", KILLER, cfg_b, str(kill_epoch), str(kill_batch)], cwd=b, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=180)
    print(f"SIGKILL after step {kill_batch} of epoch {kill_epoch}; return code {proc.returncode}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    last = b / "models" / "last.ckpt"
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at == kill_epoch - 1 < EPOCHS - 1  # last.ckpt is the epoch before the kill: a real resume
    assert len(json.loads((b / "history.json").read_text())["epoch"]) == kill_epoch

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
