"""[infer] device: auto picks the GPU where torch sees one, else the CPU; a missing GPU is a one-line error."""
import pytest
import torch

from flexunet.config import config_from_dict
from flexunet.errors import ConfigError
from flexunet.infer.common import load_predictor, resolve_device


def test_auto_is_the_gpu_only_where_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu"


def test_a_gpu_torch_does_not_see_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match=r"\[infer\] device = 'cuda:1': torch sees 1 CUDA device"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"torch sees 0 CUDA device"):
        resolve_device("cuda")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CPU", ""])
def test_device_spelling_is_checked_when_the_config_loads(bad):
    with pytest.raises(ConfigError, match=r"\[infer\] device"):
        config_from_dict({"infer": {"device": bad}})


def test_predictor_follows_the_configured_device_unless_told_otherwise(tmp_path, monkeypatch):
    from flexunet.models import create_model
    from flexunet.models.checkpoint import save_weights

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = config_from_dict({"model": {"image_width": 32, "image_height": 32, "base_filters": 4, "num_layers": 3},
                            "infer": {"device": "cuda"}})
    w = tmp_path / "best.pt"
    save_weights(w, create_model(cfg.model), cfg.model)
    with pytest.raises(ConfigError, match=r"\[infer\] device = 'cuda'"):  # the config's device is the one used
        load_predictor(cfg, str(w))
    pred = load_predictor(cfg, str(w), device="cpu")  # an explicit device wins
    assert pred.device == torch.device("cpu")
    assert next(pred.model.parameters()).device.type == "cpu"


def test_cli_asking_for_a_gpu_torch_does_not_see_fails_in_one_line(tiny_project, monkeypatch, capsys):
    from flexunet.cli import main

    cfg = str(tiny_project / "train_eval_infer.config")
    assert main(["--quiet", "train", cfg, "--set", "train.epochs=1"]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capsys.readouterr()
    assert main(["--quiet", "infer", cfg, "--set", "infer.device=cuda"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[infer] device = 'cuda': torch sees 0 CUDA device" in err[0]
    assert "Traceback" not in err[0]
    assert not (tiny_project / "mini_test_output").exists() or not any((tiny_project / "mini_test_output").iterdir())
