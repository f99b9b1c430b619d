"""A config that names each registered model trains for a step through the CLI."""
import pytest

from flexunet.cli import main
from flexunet.models import list_models

from conftest import CONFIG_TEMPLATE, write_split


@pytest.fixture(scope="module")
def zoo_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    write_split(root / "dataset", "train", 4, seed=1)
    write_split(root / "dataset", "valid", 2, seed=2)
    write_split(root / "dataset", "test", 2, seed=3)
    (root / "train_eval_infer.config").write_text(CONFIG_TEMPLATE.format(size=64, loss="dice_ce", epochs=1))
    return root


@pytest.mark.parametrize("name", [m.name for m in list_models()])
def test_config_naming_model_trains_one_step(zoo_project, name):
    model_dir = zoo_project / f"models_{name}"
    rc = main(["--quiet", "train", str(zoo_project / "train_eval_infer.config"),
               "--set", f"model.model='{name}'", "--set", "train.max_steps_per_epoch=1",
               "--set", "train.epoch_change_infer=False", "--set", "model.num_layers=3",
               "--set", "model.base_filters=8", "--set", f"train.model_dir='{model_dir}'",
               "--set", f"train.eval_dir='{zoo_project / ('eval_' + name)}'"])
    assert rc == 0
    assert (model_dir / "best.pt").exists()


@pytest.mark.parametrize("flops", [True, False])
def test_models_command_lists_every_registered_model(tiny_project, capsys, flops):
    from flexunet.cli import main
    from flexunet.models import list_models

    argv = ["models", "--config", str(tiny_project / "train_eval_infer.config"), "--size", "128"]
    rc = main(argv + ([] if flops else ["--no-flops"]))
    out = capsys.readouterr().out
    assert rc == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert set(rows) == {e.name for e in list_models()}
    unet = rows["TensorFlowFlexUNet"].split()
    assert "error" not in rows["TensorFlowFlexUNet"]
    assert (unet[-1] != "-") == flops      # GFLOPs column filled only when counted
