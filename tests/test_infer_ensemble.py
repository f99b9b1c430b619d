"""[infer] weights / --weights: several checkpoints make an ensemble whose softmax is averaged."""
from pathlib import Path

import numpy as np
import pytest
import torch

from flexunet.config import config_from_dict
from flexunet.errors import CheckpointError, ConfigError
from flexunet.infer.common import load_predictor, weight_paths
from flexunet.infer.predictor import Predictor

SMALL = {"image_width": 32, "image_height": 32, "base_filters": 4, "num_layers": 3}


def _two_checkpoints(tmp_path):
    from flexunet.models import create_model
    from flexunet.models.checkpoint import save_weights

    cfg = config_from_dict({"model": SMALL, "train": {"model_dir": str(tmp_path / "models")},
                            "infer": {"device": "cpu", "weights": ["best.pt", "other.pt"]}})
    (tmp_path / "models").mkdir()
    models = []
    for i, name in enumerate(("best.pt", "other.pt")):
        torch.manual_seed(i)
        m = create_model(cfg.model)
        save_weights(tmp_path / "models" / name, m, cfg.model)
        models.append(m)
    return cfg, models


def test_weight_paths_cli_then_config_then_best(tmp_path):
    cfg = config_from_dict({"train": {"model_dir": str(tmp_path)},
                            "infer": {"weights": ["best.pt", str(tmp_path / "abs" / "x.pt")]}})
    assert weight_paths(cfg) == [tmp_path / "best.pt", tmp_path / "abs" / "x.pt"]
    assert weight_paths(cfg, "cli.pt") == [Path("cli.pt")]
    assert [str(p) for p in weight_paths(cfg, ["a.pt", "b.pt"])] == ["a.pt", "b.pt"]
    plain = config_from_dict({"train": {"model_dir": str(tmp_path)}})
    assert weight_paths(plain) == [tmp_path / "best.pt"]


def test_ensemble_probs_are_the_mean_of_its_members(tmp_path):
    cfg, models = _two_checkpoints(tmp_path)
    ens = load_predictor(cfg, precision="32")
    assert len(ens.models) == 2
    x = torch.rand(2, cfg.model.image_channels, 32, 32)
    singles = [Predictor(m, precision="32").probs(x) for m in models]
    assert not torch.allclose(singles[0], singles[1], atol=1e-4), "the two members must differ for the test to bite"
    torch.testing.assert_close(ens.probs(x), (singles[0] + singles[1]) / 2, atol=1e-5, rtol=1e-4)
    one = load_predictor(cfg, str(tmp_path / "models" / "best.pt"), precision="32")  # --weights wins
    assert len(one.models) == 1
    torch.testing.assert_close(one.probs(x), singles[0], atol=1e-5, rtol=1e-4)


def test_tiled_ensemble_of_one_model_twice_agrees_with_that_model(tmp_path):
    cfg, models = _two_checkpoints(tmp_path)
    x = torch.rand(1, cfg.model.image_channels, 48, 40)
    single = Predictor(models[0], precision="32").tiled_probs(x, (32, 32), 8)
    twice = Predictor([models[0], models[0]], precision="32").tiled_probs(x, (32, 32), 8)
    assert single.shape == (1, cfg.model.num_classes, 48, 40)
    torch.testing.assert_close(single.sum(1), torch.ones(1, 48, 40), atol=1e-4, rtol=0)
    assert (single.argmax(1) == twice.argmax(1)).float().mean() > 0.99
    mixed = Predictor(models, precision="32").tiled_probs(x, (32, 32), 8)
    assert not torch.allclose(mixed, single, atol=1e-4)


def test_bad_weights_fail_naming_the_key_or_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"\[infer\] weights"):
        config_from_dict({"infer": {"weights": [""]}})
    cfg, _ = _two_checkpoints(tmp_path)
    (tmp_path / "models" / "other.pt").unlink()
    with pytest.raises(CheckpointError, match=r"other\.pt: checkpoint not found"):
        load_predictor(cfg)


def test_cli_repeated_weights_make_an_ensemble(tiny_project, capsys):
    from flexunet.cli import main

    cfg = str(tiny_project / "train_eval_infer.config")
    assert main(["--quiet", "train", cfg, "--set", "train.epochs=1"]) == 0
    models = tiny_project / "models"
    assert main(["--quiet", "evaluate", cfg, "--weights", str(models / "best.pt"),
                 "--weights", str(models / "last.ckpt")]) == 0
    import json

    res = json.loads(next(tiny_project.rglob("evaluation.json")).read_text())
    assert res["weights"] == f"{models / 'best.pt'}, {models / 'last.ckpt'}"
    assert np.isfinite(res["metrics"]["dice_coef_multiclass"])
