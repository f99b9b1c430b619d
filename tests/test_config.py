import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexunet.config import ConfigWarning, config_from_dict, load_config, reference_markdown
from flexunet.config.loader import parse_literal
from flexunet.errors import ConfigError

from conftest import SEED_DIR


def write(tmp_path, text, name="c.config"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_seed_config_parses():
    path = SEED_DIR / "train_eval_infer.config"
    if not path.exists():
        pytest.skip(f"{path} absent (needs ../shared beside the repo)")
    cfg = load_config(path)
    assert cfg.model.model == "TensorFlowFlexUNet"
    assert cfg.model.base_kernels == (9, 9) and cfg.model.num_layers == 8
    assert cfg.model.learning_rate == 0.00005 and cfg.model.clipvalue == 0.4
    assert cfg.train.reducer_patience == 4 and cfg.train.patience == 10
    assert cfg.mask.rgb_map == {(0, 0, 0): 0, (0, 0, 255): 1, (255, 0, 0): 2}
    # relative paths resolve against the config's folder
    assert cfg.train.images_dir == str((path.parent / "../../../dataset/3D-Liver-Tumor/train/images/").resolve())


def test_bare_and_quoted_strings(tmp_path):
    p = write(tmp_path, "[model]\noptimizer = AdamW\nloss = 'dice_ce'\n[train]\nmodel_dir = ./m/\n")
    cfg = load_config(p)
    assert cfg.model.optimizer == "AdamW" and cfg.model.loss == "dice_ce"
    assert cfg.train.model_dir == str((tmp_path / "m").resolve())


@pytest.mark.parametrize("payload", [
    "__import__('os').system('touch /tmp/pwned')",
    "open('/tmp/pwned','w')",
    "(lambda: 1)()",
    "[x for x in ().__class__.__bases__[0].__subclasses__()]",
])
def test_injection_is_an_error_and_runs_nothing(tmp_path, payload):
    marker = Path("/tmp/pwned")
    if marker.exists():
        marker.unlink()
    p = write(tmp_path, f"[model]\nloss = {payload}\n")
    with pytest.raises(ConfigError, match=r"\[model\] loss"):
        load_config(p)
    assert not marker.exists()


def test_unknown_key_warns_with_closest(tmp_path):
    p = write(tmp_path, "[train]\nreduer_patience = 4\n[modle]\nx = 1\n")
    with pytest.warns(ConfigWarning) as rec:
        load_config(p)
    msgs = [str(w.message) for w in rec]
    assert any("reduer_patience" in m and "reducer_patience" in m for m in msgs)
    assert any("[modle]" in m and "[model]" in m for m in msgs)


def test_original_alpah_alias(tmp_path):
    p = write(tmp_path, "[deformation]\nalpah = 900\n")
    assert load_config(p).deformation.alpha == 900.0


@pytest.mark.parametrize("text,match", [
    ("[train]\nepochs = 'ten'\n", r"\[train\] epochs = 'ten': expected an integer"),
    ("[model]\nlearning_rate = [1]\n", r"\[model\] learning_rate"),
    ("[model]\nnum_classes = 4\n", r"num_classes = 4 but \[mask\] rgb_map has 3 classes"),
    ("[model]\nimage_width = 100\nnum_layers = 4\n", r"image_width = 100 is not divisible by 2\^\(num_layers-1\) = 8"),
    ("[model]\noptimizer = 'SGD'\n", r"optimizer = 'SGD': expected one of Adam, AdamW"),
    ("[model]\nloss = 'hinge'\n", r"loss = 'hinge'"),
    ("[model]\nbase_kernels = (4,4)\n", r"base_kernels"),
    ("[mask]\nrgb_map = {(0,0,0):0,(0,0,255):2,(255,0,0):3}\n", r"consecutive ids"),
    ("[slice]\nhu_window = (250, -100)\n", r"hu_window"),
    ("[train]\nnormalization True\n", r"not a valid INI config"),
    # 1E400 reads as inf: int(inf) raised OverflowError (found by the config fuzz test)
    ("[model]\nnum_classes = 1E400\n", r"\[model\] num_classes = inf: expected an integer"),
    ("[model]\nlearning_rate = -1E400\n", r"\[model\] learning_rate = -inf: expected a finite number"),
])
def test_bad_values_name_section_key_value(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_unreadable_config(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.config")
    p = tmp_path / "bin.config"
    p.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(ConfigError, match="bin.config"):
        load_config(p)


def test_frozen_and_typed(tmp_path):
    cfg = load_config(write(tmp_path, "[model]\nbase_kernels = [7, 7]\n"))
    assert cfg.model.base_kernels == (7, 7)
    with pytest.raises(Exception):
        cfg.model.num_layers = 3  # type: ignore[misc]


def test_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "[train]\nepochs = 5\n"), overrides=["train.epochs=2", "model.loss=dice"])
    assert cfg.train.epochs == 2 and cfg.model.loss == "dice"
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(write(tmp_path, ""), overrides=["epochs"])


def test_reference_lists_every_seed_key():
    path = SEED_DIR / "train_eval_infer.config"
    if not path.exists():
        pytest.skip(f"{path} absent")
    from flexunet.config.loader import read_ini

    doc = reference_markdown()
    for section, keys in read_ini(path).items():
        assert f"[{section}]" in doc
        for key in keys:
            assert f"`{key}`" in doc or f"`{key} (" in doc, key


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_parse_literal_never_evaluates(text):
    """Any text either parses as a literal/bare word or raises ConfigError: never anything else."""
    if "\n" in text or "\r" in text:
        return
    try:
        val = parse_literal(text, "[x] y")
    except ConfigError:
        return
    assert isinstance(val, (int, float, complex, str, bytes, bool, tuple, list, dict, set, frozenset, type(None)))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["epochs", "batch_size", "patience", "seed", "reducer_factor"]),
                       st.one_of(st.integers(-5, 50), st.floats(-1, 2, allow_nan=False), st.text(max_size=5),
                                 st.booleans(), st.none())))
def test_train_section_values_validate_or_error(values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = config_from_dict({"train": values})
        except ConfigError:
            return
    assert cfg.train.epochs >= 1 and cfg.train.batch_size >= 1 and 0 < cfg.train.reducer_factor < 1
