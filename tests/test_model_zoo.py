"""Every registered architecture: shapes, a few training steps, state-dict round trip, names, local weights."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from flexunet.config import config_from_dict
from flexunet.errors import CheckpointError, ConfigError
from flexunet.models import create_model, list_models, resolve_name
from flexunet.models.registry import get_entry
from flexunet.models.summary import count_parameters, format_models_table, gflops, models_table

NAMES = [e.name for e in list_models()]
#: the EfficientNet-B7 encoder (64M parameters) takes fewer training steps to stay fast
FEW_STEPS = {"TensorFlowFlexEfficientNetB7UNet"}
K = 3


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one intra-op thread is faster, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_cfg(name: str, **over):
    size = max(64, get_entry(name).min_size)
    raw = {"model": name, "image_width": size, "image_height": size, "image_channels": 3, "num_classes": K,
           "base_filters": 8, "num_layers": 4, "dropout_rate": 0.0, "base_kernels": (3, 3), **over}
    return config_from_dict({"model": raw}).model


def build(cfg, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(cfg)


def batch(cfg, n: int = 2):
    """A fixed, learnable batch: classes from thresholds of the first channel."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, cfg.image_channels, cfg.image_height, cfg.image_width, generator=g)
    y = (x[:, 0] > 0.4).long() + (x[:, 0] > 0.8).long()
    return x, y


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name):
    cfg = small_cfg(name)
    model = build(cfg).eval()
    x, _ = batch(cfg, 1)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, K, cfg.image_height, cfg.image_width)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_training_steps_lower_loss(name):
    cfg = small_cfg(name)
    model = build(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = batch(cfg)
    losses = []
    for _ in range(3 if name in FEW_STEPS else 4):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name, tmp_path):
    cfg = small_cfg(name, normalization=True)
    model = build(cfg, seed=0)
    x, _ = batch(cfg)
    with torch.no_grad():
        model.train()(x)  # moves BatchNorm running statistics away from their initial values
    model.eval()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    fresh = build(cfg, seed=1)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


@pytest.mark.parametrize("name", NAMES)
def test_flexunet_checkpoints_round_trip(name, tmp_path):
    """best.pt (the network's own keys) and a Lightning last.ckpt (keys under the module's ``model.``)
    both load back: a network whose own keys start with ``model.`` (MONAI's AttentionUnet) included."""
    from flexunet.models.checkpoint import load_weights_into, save_weights

    cfg = small_cfg(name, normalization=True)
    model = build(cfg, seed=0).eval()
    x, _ = batch(cfg, 1)
    save_weights(tmp_path / "best.pt", model, cfg)
    lightning = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                 "flexunet_meta": {"model": name}, "epoch": 3}
    torch.save(lightning, tmp_path / "last.ckpt")
    for path in (tmp_path / "best.pt", tmp_path / "last.ckpt"):
        fresh = build(cfg, seed=1).eval()
        load_weights_into(fresh, path, cfg.model)
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), model(x))


@pytest.mark.parametrize("name", NAMES)
def test_one_channel(name):
    cfg = small_cfg(name, image_channels=1, normalization=True)
    model = build(cfg).eval()
    x, _ = batch(cfg, 1)
    assert x.shape[1] == 1
    with torch.no_grad():
        assert model(x).shape == (1, K, cfg.image_height, cfg.image_width)


def test_all_original_models_registered():
    originals = {"TensorFlowFlexUNet", "TensorFlowFlexAttentionUNet", "TensorFlowFlexSwinUNet",
                 "TensorFlowFlexUNet3Plus", "TensorFlowFlexDeepLabV3Plus", "TensorFlowFlexTransUNet",
                 "TensorFlowFlexU2Net", "TensorFlowFlexMultiResUNet", "TensorFlowFlexSharpUNet",
                 "TensorFlowFlexEfficientUNet", "TensorFlowFlexEfficientNetB7UNet"}
    assert originals <= set(NAMES)
    assert "unetplusplus" in NAMES


def test_aliases_resolve():
    short = {"attention_unet": "TensorFlowFlexAttentionUNet", "swin_unet": "TensorFlowFlexSwinUNet",
             "unet3plus": "TensorFlowFlexUNet3Plus", "deeplabv3plus": "TensorFlowFlexDeepLabV3Plus",
             "transunet": "TensorFlowFlexTransUNet", "u2net": "TensorFlowFlexU2Net",
             "multiresunet": "TensorFlowFlexMultiResUNet", "sharpunet": "TensorFlowFlexSharpUNet",
             "efficientunet": "TensorFlowFlexEfficientUNet", "efficientnet_b0_unet": "TensorFlowFlexEfficientUNet",
             "efficientnet_b7_unet": "TensorFlowFlexEfficientNetB7UNet",
             "TensorFlowFlexUNetPlusPlus": "unetplusplus"}
    for alias, name in short.items():
        assert resolve_name(alias) == name
        assert resolve_name(alias.upper()) == name
    for entry in list_models():
        for alias in (entry.name, *entry.aliases):
            assert resolve_name(alias) == entry.name


def test_unknown_name_lists_known_names():
    cfg = dataclasses.replace(small_cfg("unet"), model="NoSuchUNet")
    with pytest.raises(ConfigError) as err:
        create_model(cfg)
    msg = str(err.value)
    assert "NoSuchUNet" in msg
    for name in NAMES:
        assert name in msg


def test_size_not_supported_is_config_error():
    cfg = config_from_dict({"model": {"model": "swin_unet", "image_width": 48, "image_height": 48,
                                      "num_layers": 4}}).model
    with pytest.raises(ConfigError, match="multiple of 32"):
        create_model(cfg)


def test_pretrained_local_state_dict(tmp_path):
    cfg = small_cfg("sharpunet")
    source = build(cfg, seed=0).eval()
    path = tmp_path / "sharp.pt"
    torch.save(source.state_dict(), path)
    model = build(dataclasses.replace(cfg, pretrained=str(path)), seed=1).eval()
    x, _ = batch(cfg, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))
    # another class count: the head is skipped with a warning, the rest loads
    other = dataclasses.replace(cfg, num_classes=2, pretrained=str(path))
    with pytest.warns(UserWarning, match="2 skipped for a shape mismatch"):
        model2 = build(other, seed=1)
    torch.testing.assert_close(model2.encoders[0][0].weight, source.encoders[0][0].weight)
    with pytest.raises(CheckpointError, match="not found"):
        create_model(dataclasses.replace(cfg, pretrained=str(tmp_path / "missing.pt")))


def test_pretrained_encoder_only_state_dict(tmp_path):
    cfg = small_cfg("efficientunet")
    source = build(cfg, seed=0)
    path = tmp_path / "b0_encoder.pt"
    torch.save(source.encoder.state_dict(), path)
    with pytest.warns(UserWarning, match="into .encoder"):
        model = build(dataclasses.replace(cfg, pretrained=str(path)), seed=1)
    for key, value in source.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)


def test_summary_helpers():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_parameters(conv) == 3 * 8 * 9 + 8
    assert gflops(conv, (1, 3, 16, 16)) == pytest.approx(2 * 3 * 8 * 9 * 16 * 16 / 1e9)
    cfg = small_cfg("unet")
    rows = models_table(cfg, size=80, names=["unet", "swin_unet"])
    assert rows[0]["name"] == "TensorFlowFlexUNet" and rows[0]["error"] is None and rows[0]["params"] > 0
    assert rows[1]["params"] is None and "multiple of 32" in rows[1]["error"]
    text = format_models_table(rows)
    assert "TensorFlowFlexUNet" in text and "error:" in text
    # the transformer layers are counted even where PyTorch would take its fused fast path
    shape = (1, 3, cfg.image_height, cfg.image_width)
    assert gflops(build(small_cfg("transunet")), shape) > gflops(build(cfg), shape)


@pytest.mark.parametrize("name", ["TensorFlowFlexEfficientUNet", "TensorFlowFlexEfficientNetB7UNet"])
def test_efficientnet_batchnorm_follows_the_batches(name):
    """EfficientNet's TF-style momentum 0.01 left eval-mode statistics far from the data after a short
    training (liver Dice 0 on the real-CT benchmark); every BatchNorm uses 0.1."""
    model = build(small_cfg(name))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == pytest.approx(0.1) for m in bns)
    x = torch.rand(2, 3, 64, 64) * 4 + 3     # inputs far from the initial running mean 0 / var 1
    stem = next(m for m in bns if m.running_mean.numel())
    seen = []
    hook = stem.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].mean(dim=(0, 2, 3))))
    model.train()
    with torch.no_grad():
        for _ in range(30):
            model(x)
    hook.remove()
    # the same batch 30 times: with momentum 0.1 the running mean has covered 1 - 0.9**30 = 96% of the
    # way from 0 to the batch mean; with TF's 0.01 it would have covered 26%
    target = seen[-1]
    covered = (stem.running_mean @ target) / (target @ target)
    assert covered.item() == pytest.approx(1 - 0.9 ** 30, abs=0.02)
    assert stem.num_batches_tracked.item() == 30
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("name", NAMES)
def test_predictor_batchnorm_folding_keeps_the_output(name):
    """The inference path folds BatchNorm into convolutions: same probabilities as the eval-mode model."""
    from flexunet.infer.predictor import Predictor

    cfg = small_cfg(name, normalization=True)
    model = build(cfg, seed=0)
    x, _ = batch(cfg)
    with torch.no_grad():
        model.train()(x * 3 + 1)  # non-trivial running statistics
    model.eval()
    with torch.no_grad():
        want = torch.softmax(model(x), dim=1)
    got = Predictor(model, precision="32", fold_bn=True).probs(x)
    torch.testing.assert_close(got.contiguous(), want, atol=2e-4, rtol=1e-3)
