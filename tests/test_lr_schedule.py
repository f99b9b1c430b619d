"""[train] lr_schedule: the original's plateau reducer, or nnU-Net's poly decay (by epochs or by time)."""
from __future__ import annotations

import json

import pytest

from flexunet.config import load_config
from flexunet.errors import ConfigError


def test_poly_decays_by_epoch_and_is_recorded(tiny_project, monkeypatch):
    from flexunet.cli import main

    monkeypatch.chdir(tiny_project)
    rc = main(["--quiet", "train", "train_eval_infer.config", "--set", "train.epochs=3", "--set", "train.patience=0",
               "--set", "train.lr_schedule=poly", "--set", "train.epoch_change_infer=False"])
    assert rc == 0
    lr0 = load_config(tiny_project / "train_eval_infer.config").model.learning_rate
    hist = json.loads((tiny_project / "history.json").read_text())
    assert hist["lr"] == pytest.approx([lr0 * (1 - e / 3) ** 0.9 for e in range(3)], rel=1e-6)


def test_plateau_default_keeps_the_first_lr_in_the_history(tiny_project, monkeypatch):
    from flexunet.cli import main

    monkeypatch.chdir(tiny_project)
    assert main(["--quiet", "train", "train_eval_infer.config", "--set", "train.epochs=1",
                 "--set", "train.epoch_change_infer=False"]) == 0
    lr0 = load_config(tiny_project / "train_eval_infer.config").model.learning_rate
    assert json.loads((tiny_project / "history.json").read_text())["lr"] == [pytest.approx(lr0)]


def test_poly_follows_the_time_budget_clock_when_it_is_further(tiny_project):
    from types import SimpleNamespace

    from flexunet.train.callbacks import TimeBudget
    from flexunet.train.module import SegmentationModule

    cfg = load_config(tiny_project / "train_eval_infer.config",
                      ["train.epochs=100", "train.max_time_minutes=2", "train.lr_schedule=poly"])
    m = SegmentationModule(cfg)
    lr0 = cfg.model.learning_rate
    budget = TimeBudget(cfg.train.max_time_minutes)
    budget.load_state_dict({"elapsed": 60.0})  # a resumed run that has trained one of its two minutes
    trainer = SimpleNamespace(current_epoch=0, callbacks=[budget])
    assert m.poly_lr(trainer) == pytest.approx(lr0 * 0.5 ** 0.9)   # epoch 0 of 100, but half the time gone
    trainer.current_epoch = 80                                      # epochs further along than the clock
    assert m.poly_lr(trainer) == pytest.approx(lr0 * 0.2 ** 0.9)
    budget.load_state_dict({"elapsed": 500.0})
    assert m.poly_lr(trainer) == 0.0
    assert m.poly_lr(SimpleNamespace(current_epoch=25, callbacks=[])) == pytest.approx(lr0 * 0.75 ** 0.9)


def test_unknown_schedule_is_refused(tiny_project):
    with pytest.raises(ConfigError, match="lr_schedule = 'cosine'"):
        load_config(tiny_project / "train_eval_infer.config", ["train.lr_schedule=cosine"])
