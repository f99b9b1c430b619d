import pytest
import torch

from flexunet.config import config_from_dict, load_config
from flexunet.errors import ConfigError
from flexunet.models import create_model, resolve_name
from flexunet.models.flexunet import FlexUNet, level_dilations, level_kernels

from conftest import SEED_DIR


def seed_model_cfg():
    path = SEED_DIR / "train_eval_infer.config"
    if path.exists():
        return load_config(path).model
    return config_from_dict({"model": {"image_width": 512, "image_height": 512, "image_channels": 3,
                                       "num_classes": 3, "base_filters": 16, "base_kernels": (9, 9),
                                       "num_layers": 8, "dropout_rate": 0.04, "dilation": (1, 1)}}).model


def test_seed_parameter_count_equals_original():
    model = create_model(seed_model_cfg())
    assert sum(p.numel() for p in model.parameters()) == 124_996_883


def test_level_schedules():
    assert level_kernels((9, 9), 5) == [(9, 9), (7, 7), (5, 5), (3, 3), (3, 3)]
    assert level_dilations((3, 2), 4) == [(3, 2), (2, 1), (1, 1), (1, 1)]


@pytest.mark.parametrize("bn,act,dil", [(False, "relu", (1, 1)), (True, "elu", (2, 2))])
def test_forward_shape_and_logits(bn, act, dil):
    m = FlexUNet(in_channels=1, num_classes=3, base_filters=4, base_kernels=(5, 5), num_layers=3,
                 dropout_rate=0.1, dilation=dil, batchnorm=bn, activation=act).eval()
    x = torch.randn(2, 1, 32, 48)
    y = m(x)
    assert y.shape == (2, 3, 32, 48)
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules()) == bn
    # dropout grows with the level: 0 at level 0, 0.1 at level 1, 0.2 at level 2
    drops = sorted({mod.p for mod in m.modules() if isinstance(mod, torch.nn.Dropout)})
    assert drops == pytest.approx([0.1, 0.2])


def test_registry_names():
    assert resolve_name("TensorFlowFlexUNet") == "TensorFlowFlexUNet"
    assert resolve_name("flexunet") == "TensorFlowFlexUNet"
    with pytest.raises(ConfigError, match="expected one of"):
        resolve_name("NoSuchNet")
