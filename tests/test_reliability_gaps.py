"""Reliability gaps: anti-aliased masks, the model_dir lock, config keys without effect, precision "auto",
the break file, reducer_patience, test slices kept by [slice] foreground_only, and element-wise dropout.

Each test uses tiny synthetic data (see conftest.py) and runs in seconds.
"""
from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import flexunet
from conftest import COLORS, CONFIG_TEMPLATE, make_slice
from flexunet.cli import main
from flexunet.config import config_from_dict, load_config
from flexunet.data.images import decode_mask
from flexunet.errors import DataError

#: the folder holding the flexunet package these tests import (subprocesses import the same one)
SRC = Path(flexunet.__file__).resolve().parents[1]
LUT = np.array([COLORS[i] for i in range(3)], dtype=np.uint8)


def small_cfg(tmp_path, size=64, **sections):
    raw = {"model": {"image_width": size, "image_height": size, "num_layers": 3}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw, base_dir=tmp_path)


# --------------------------------------------------------------------------- anti-aliased colour masks


def antialiased_mask(lab_big: np.ndarray, how: str, size: int = 64) -> np.ndarray:
    """A colour mask of ``size`` with a one-pixel anti-aliased edge: drawn at 4x and box-downsampled,
    or drawn at ``size`` and blurred with sigma 0.7."""
    rgb = LUT[lab_big]
    if how == "downsampled":
        return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BOX))
    return np.clip(np.rint(ndimage.gaussian_filter(rgb.astype(np.float64), sigma=(0.7, 0.7, 0))),
                   0, 255).astype(np.uint8)


def far_fraction(rgb: np.ndarray, tol: float = 60.0) -> float:
    d = np.sqrt(((rgb[:, :, None, :].astype(float) - LUT[None, None].astype(float)) ** 2).sum(-1)).min(-1)
    return float((d > tol).mean())


@pytest.mark.parametrize("how", ["downsampled", "blurred"])
def test_antialiased_64px_mask_decodes_to_the_nearer_class(tmp_path, how):
    rng = np.random.default_rng(5)
    big = 256 if how == "downsampled" else 64
    _, _, lab = make_slice(rng, big)
    rgb = antialiased_mask(lab, how)
    assert far_fraction(rgb) > 0.01  # more than color_outlier_fraction lies farther than 60 from every colour
    Image.fromarray(rgb).save(tmp_path / "m.png")
    ids = decode_mask(tmp_path / "m.png", small_cfg(tmp_path))
    truth = lab if how == "blurred" else np.asarray(Image.fromarray(lab.astype(np.uint8)).resize(
        (64, 64), Image.NEAREST)).astype(np.int64)
    edge = ndimage.binary_dilation(ndimage.morphological_gradient(truth, size=3) > 0)
    assert np.array_equal(ids[~edge], truth[~edge])
    assert (ids == truth).mean() > 0.97


def test_blend_of_two_map_colours_goes_to_the_nearer_end(tmp_path):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:5] = (0, 0, 176)     # 176 from black, 79 from blue: on the black-blue segment, nearer blue
    rgb[5:10] = (0, 0, 80)    # nearer black
    rgb[10:15] = (150, 0, 105)  # on the blue-red segment, nearer red
    rgb[15:] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "m.png")
    ids = decode_mask(tmp_path / "m.png", small_cfg(tmp_path, size=20))
    assert (ids[:5] == 1).all() and (ids[5:10] == 0).all() and (ids[10:15] == 2).all() and (ids[15:] == 1).all()


def test_colour_no_blend_explains_is_refused_and_named(tmp_path):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:4] = (0, 255, 0)      # green: 255 from black and from the black-blue segment
    rgb[4:6] = (200, 200, 0)   # yellow: far from every colour and every segment
    rgb[6:12] = (0, 0, 176)    # a blend: fine
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(DataError) as exc:
        decode_mask(tmp_path / "bad.png", small_cfg(tmp_path, size=20))
    msg = str(exc.value)
    assert "\n" not in msg and str(tmp_path / "bad.png") in msg
    assert "80 pixels of colour (0,255,0), 40 of (200,200,0) are farther than 60 from every rgb_map colour and " \
           "from every blend of two of them (120 such pixels in all, 30.00% > color_outlier_fraction 0.01)" in msg
    assert "(0,0,176)" not in msg and "expected the rgb_map colours (0,0,0), (0,0,255), (255,0,0)" in msg


def test_bgr_mask_is_named_as_such(tmp_path):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:10] = (255, 128, 0)   # (0,128,255) with red and blue swapped
    Image.fromarray(rgb).save(tmp_path / "bgr.png")
    cfg = small_cfg(tmp_path, size=20, mask={"rgb_map": {(0, 0, 0): 0, (0, 128, 255): 1, (255, 0, 0): 2}})
    with pytest.raises(DataError, match=r"200 pixels of colour \(255,128,0\) .* \(with red and blue swapped they "
                                        r"match: is the mask BGR\?\)"):
        decode_mask(tmp_path / "bgr.png", cfg)


def write_antialiased_split(root: Path, split: str, n: int, seed: int) -> None:
    """64x64 images and colour masks whose edges are anti-aliased (every other one drawn at 4x)."""
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
    for i in range(n):
        img, _, lab = make_slice(rng, 256)
        if i % 2:
            mask = antialiased_mask(lab, "downsampled")
        else:
            mask = antialiased_mask(np.asarray(Image.fromarray(lab.astype(np.uint8)).resize((64, 64), Image.NEAREST)),
                                    "blurred")
        img.resize((64, 64), Image.BILINEAR).save(root / split / "images" / f"{split}_{i:03d}.png")
        Image.fromarray(mask).save(root / split / "masks" / f"{split}_{i:03d}.png")


@pytest.mark.timeout(180)
def test_antialiased_64px_project_trains_evaluates_and_infers_through_the_cli(tmp_path):
    root = tmp_path / "project"
    for split, n, seed in (("train", 8, 1), ("valid", 2, 2), ("test", 2, 3)):
        write_antialiased_split(root / "dataset", split, n, seed)
    masks = sorted((root / "dataset").glob("*/masks/*.png"))
    assert min(far_fraction(np.asarray(Image.open(m).convert("RGB"))) for m in masks) > 0.01
    cfg = root / "train_eval_infer.config"
    cfg.write_text(CONFIG_TEMPLATE.format(size=64, loss="categorical_crossentropy", epochs=1))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="2")
    for command in ("train", "evaluate", "infer"):
        proc = subprocess.run([sys.executable, "-m", "flexunet", "--quiet", command, str(cfg)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=150)
        assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"
    assert (root / "models" / "best.pt").exists()
    assert json.loads((root / "evaluation.json").read_text())["metrics"]
    assert len(list((root / "mini_test_output").glob("*.png"))) == 2


# --------------------------------------------------------------------------- one training per model_dir

LOCK_HOLDER = """
import sys, time
from flexunet.io.lock import folder_lock
with folder_lock(sys.argv[1], "flexunet-train.lock", "[train] model_dir", command="holder"):
    print("held", flush=True)
    time.sleep(120)
"""

QUICK = ["--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=1", "--set", "train.epoch_change_infer=False",
         "--set", "train.num_workers=0"]


def run_cli(capsys, *argv):
    capsys.readouterr()
    rc = main(["--quiet", *map(str, argv)])
    return rc, capsys.readouterr().err


def test_second_training_into_a_locked_model_dir_is_refused(tiny_project, capsys):
    models = tiny_project / "models"
    models.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(models)], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, err = run_cli(capsys, "train", tiny_project / "train_eval_infer.config", *QUICK)
    finally:
        holder.kill()
        holder.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"flexunet: error: {models / 'flexunet-train.lock'}: [train] model_dir {models} is in "
                               f"use by another training (PID {holder.pid} on ")
    assert ": holder); expected one training per [train] model_dir" in lines[0]
    assert not (models / "best.pt").exists() and not (models / "last.ckpt").exists()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("holder", ["exited", "pid reused"])
def test_stale_lock_is_removed_with_a_warning_and_training_runs(tiny_project, capsys, holder):
    import socket

    models = tiny_project / "models"
    models.mkdir()
    # a PID that no longer runs, or a running PID (this process's parent) whose start time differs
    pid, start = (dead_pid(), 1.0e9) if holder == "exited" else (os.getppid(), 1.0e9)
    lock = models / "flexunet-train.lock"
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "process_start": start,
                                "started": "2001-09-09 01:46:40", "command": "flexunet train old"}))
    rc, err = run_cli(capsys, "train", tiny_project / "train_eval_infer.config", *QUICK)
    assert rc == 0, err
    assert (f"flexunet: warning: {lock}: removed a stale lock of a training that no longer runs (PID {pid} on "
            f"{socket.gethostname()}, started 2001-09-09 01:46:40: flexunet train old)") in err
    assert (models / "best.pt").exists() and not lock.exists()  # released at the end


def test_lock_is_released_when_training_fails(tiny_project, capsys):
    shutil.rmtree(tiny_project / "dataset" / "valid" / "masks")
    cfg = tiny_project / "train_eval_infer.config"
    rc, err = run_cli(capsys, "train", cfg, *QUICK)
    assert rc == 2 and "valid" in err
    assert not (tiny_project / "models" / "flexunet-train.lock").exists()
    assert list((tiny_project / "models").iterdir()) == []


def test_lock_from_another_host_is_not_judged_stale(tmp_path):
    from flexunet.io.lock import LockHeld, folder_lock

    lock = tmp_path / "x.lock"
    lock.write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere.example", "process_start": 1.0,
                                "started": "2001-09-09 01:46:40", "command": ""}))
    with pytest.raises(LockHeld, match=r"in use by another training \(PID \d+ on elsewhere.example, started "
                                       r"2001-09-09 01:46:40\)"):
        with folder_lock(tmp_path, "x.lock", "[train] model_dir"):
            pass
    lock.write_text("garbage")
    with pytest.raises(DataError, match=r"x.lock: lock file holds 'garbage'; expected a lock written by FlexUNet"):
        with folder_lock(tmp_path, "x.lock", "[train] model_dir"):
            pass


# --------------------------------------------------------------------------- dropout like Keras Dropout


def test_flexunet_dropout_drops_single_activations_not_whole_channels():
    import torch

    from flexunet.models.flexunet import FlexUNet

    torch.manual_seed(0)
    model = FlexUNet(in_channels=1, num_classes=3, base_filters=4, base_kernels=(3, 3), num_layers=3,
                     dropout_rate=0.2).train()
    rates = []
    for block in list(model.encoders) + list(model.decoders):
        for layer in block:
            if "Dropout" not in type(layer).__name__:
                continue
            rates.append(layer.p)
            y = layer(torch.ones(4, 16, 32, 32))
            zero = (y == 0).float().mean(dim=(2, 3))  # share of dropped activations per feature map
            assert ((zero > 0) & (zero < 1)).all(), "whole feature maps were dropped"
            assert float((y == 0).float().mean()) == pytest.approx(layer.p, abs=0.02)
    assert sorted(set(rates)) == pytest.approx([0.2, 0.4])


# --------------------------------------------------------------------------- [slice] foreground_only and the test split


def test_foreground_only_keeps_every_slice_of_test_patients(tmp_path):
    from flexunet.data.slicer import slice_cases
    from volume_helpers import write_case

    for i in range(3):
        write_case(tmp_path / "cases", f"p{i}", seed=i)  # 12 slices, the first and last ones empty
    cfg = config_from_dict({"model": {"image_width": 32, "image_height": 32, "num_layers": 3},
                            "slice": {"cases_dir": str(tmp_path / "cases"), "output_dir": str(tmp_path / "ds"),
                                      "train_cases": ["p0"], "valid_cases": ["p1"], "test_cases": ["p2"],
                                      "foreground_only": True, "background_fraction": 0.0}}, base_dir=tmp_path)
    res = slice_cases(cfg, quiet=True)
    ds = tmp_path / "ds"

    def empty(split):
        return [np.asarray(Image.open(p).convert("RGB")).max() == 0 for p in sorted((ds / split / "masks").iterdir())]

    assert len(empty("test")) == 12 and any(empty("test"))  # all slices, the empty ones included
    assert 0 < len(empty("train")) < 12 and not any(empty("train"))  # training keeps foreground only
    assert not any(empty("valid"))
    assert res["counts"]["test"] == 12


# --------------------------------------------------------------------------- original keys FlexUNet does not act on


def unused_warnings(record) -> list[str]:
    from flexunet.config.loader import UnusedKeyWarning

    return [str(w.message) for w in record if issubclass(w.category, UnusedKeyWarning)]


def test_keys_accepted_but_not_used_are_named_once(tmp_path):
    cfg = tmp_path / "train_eval_infer.config"
    text = CONFIG_TEMPLATE.format(size=64, loss="dice_ce", epochs=1).replace(
        'metrics        = ["dice_coef_multiclass"]', 'metrics        = ["dice_coef_multiclass", "accuracy"]')
    cfg.write_text(text + "\n[tiledinfer]\nbitwise_blending = True\n")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_config(cfg, ["infer.sharpening=True"])
        load_config(cfg, ["infer.sharpening=True"])  # the same again: no second warning
    assert unused_warnings(record) == [
        f"{cfg}: accepted, not used: [infer] sharpening = True (masks are written unsharpened); "
        "[tiledinfer] bitwise_blending = True (tiles are blended with a Gaussian window; the whole-image mask is "
        "not AND-ed in); [model] metrics accuracy (training reports loss and dice_coef_multiclass)"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_config(cfg, ["train.metrics=['dice_coef_multiclass', 'val_dice_coef_multiclass', 'val_accuracy']",
                          "model.metrics=['dice_coef_multiclass']"])
    assert unused_warnings(record) == [
        f"{cfg}: accepted, not used: [tiledinfer] bitwise_blending = True (tiles are blended with a Gaussian window; "
        "the whole-image mask is not AND-ed in); [train] metrics val_accuracy (train_metrics.png plots "
        "dice_coef_multiclass and val_dice_coef_multiclass)"]


def test_seed_config_keys_are_all_honoured(tmp_path):
    seed = Path(__file__).resolve().parents[2] / "shared" / "seed" / "train_eval_infer.config"
    text = seed.read_text() if seed.exists() else CONFIG_TEMPLATE.format(size=64, loss="dice_ce", epochs=1)
    (tmp_path / "seed.config").write_text(text)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_config(tmp_path / "seed.config")
    assert unused_warnings(record) == []


# --------------------------------------------------------------------------- precision = "auto"


class FakeCpu:
    """The CPU probes precision.py reads: oneDNN's bf16 check, AVX512-BF16, AMX, the machine and /proc/cpuinfo."""

    def __init__(self, monkeypatch, onednn=True, avx512_bf16=False, amx=False, machine="x86_64", probes=True,
                 cpuinfo_flags=None):
        import builtins
        import platform

        import torch

        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn, raising=False)
        monkeypatch.setattr(platform, "machine", lambda: machine)
        for name, value in (("_is_avx512_bf16_supported", avx512_bf16), ("_is_amx_tile_supported", amx)):
            if probes:
                monkeypatch.setattr(torch.cpu, name, lambda value=value: value, raising=False)
            else:
                monkeypatch.delattr(torch.cpu, name, raising=False)
        if cpuinfo_flags is not None:
            real_open = builtins.open

            def fake_open(path, *args, **kwargs):
                if str(path) == "/proc/cpuinfo":
                    import io

                    return io.StringIO(f"processor\t: 0\nflags\t\t: {' '.join(cpuinfo_flags)}\n")
                return real_open(path, *args, **kwargs)

            monkeypatch.setattr(builtins, "open", fake_open)


@pytest.mark.parametrize("cpu,native", [
    (dict(avx512_bf16=True), True),                      # Cooper Lake, Zen 4: AVX512-BF16
    (dict(amx=True), True),                              # Sapphire Rapids: AMX-BF16
    (dict(avx512_bf16=True, amx=True), True),
    (dict(), False),                                     # Skylake-SP / Ice Lake: oneDNN says yes, but emulated
    (dict(onednn=False, avx512_bf16=True, amx=True), False),  # a build without bf16 kernels
    (dict(machine="aarch64"), True),                     # Arm: oneDNN's check is the BF16 extension itself
    (dict(machine="aarch64", onednn=False), False),
    (dict(probes=False, cpuinfo_flags=["sse4_2", "avx512f", "avx512_bf16"]), True),  # older torch: /proc/cpuinfo
    (dict(probes=False, cpuinfo_flags=["avx2", "amx_bf16", "amx_tile"]), True),
    (dict(probes=False, cpuinfo_flags=["avx2", "avx512f", "avx512bw"]), False),
])
def test_cpu_has_native_bf16(monkeypatch, cpu, native):
    from flexunet.infer.precision import cpu_has_native_bf16

    FakeCpu(monkeypatch, **cpu)
    assert cpu_has_native_bf16() is native


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_hardware(monkeypatch, native):
    import torch

    from flexunet.infer import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.resolve_precision("auto", "cpu") == ("bf16" if native else "32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.trainer_precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    assert precision.trainer_precision("auto", "auto") == ("bf16-mixed" if native else "32-true")
    # a GPU: bf16 where CUDA has it, else fp16 for training and fp32 for inference
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: native)
    assert precision.resolve_precision("auto", "cuda") == ("bf16" if native else "32")
    assert precision.trainer_precision("auto", "gpu") == ("bf16-mixed" if native else "16-mixed")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert precision.trainer_precision("auto", "auto") == ("bf16-mixed" if native else "16-mixed")


def test_explicit_precision_is_kept(monkeypatch):
    from flexunet.infer import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: pytest.fail("auto only"))
    for value, infer_cpu, infer_cuda, train in (("32", "32", "32", "32-true"), ("32-true", "32", "32", "32-true"),
                                                ("bf16", "bf16", "bf16", "bf16-mixed"),
                                                ("bf16-mixed", "bf16", "bf16", "bf16-mixed"),
                                                ("16-mixed", "32", "16", "16-mixed"), ("64", "32", "32", "64")):
        assert precision.resolve_precision(value, "cpu") == infer_cpu, value
        assert precision.resolve_precision(value, "cuda") == infer_cuda, value
        assert precision.trainer_precision(value, "cpu") == train, value


# --------------------------------------------------------------------------- the break file and reducer_patience


def test_break_file_stops_after_the_epoch_and_the_run_resumes(tiny_project, capsys):
    cfg = tiny_project / "train_eval_infer.config"
    fast = ["--set", "train.max_steps_per_epoch=1", "--set", "train.epoch_change_infer=False"]
    stop = tiny_project / "break_training"
    stop.write_text("")
    capsys.readouterr()
    assert main(["train", str(cfg), "--set", "train.epochs=3", *fast]) == 0
    out = capsys.readouterr().out
    assert f"flexunet: {stop} found: stopping after epoch 1" in out
    assert not stop.exists()  # removed, so the next run is not stopped
    assert json.loads((tiny_project / "history.json").read_text())["epoch"] == [0]
    assert main(["--quiet", "train", str(cfg), "--resume", "--set", "train.epochs=3", *fast]) == 0
    assert json.loads((tiny_project / "history.json").read_text())["epoch"] == [0, 1, 2]


@pytest.mark.parametrize("reducer_patience,factors", [(0, [1, 1, 0.5, 0.25, 0.125]), (2, [1, 1, 1, 1, 0.5])])
def test_reducer_patience_sets_when_the_learning_rate_drops(tiny_project, reducer_patience, factors):
    # a learning rate too small to move val_loss: every epoch after the first is a plateau epoch, so
    # ReduceLROnPlateau lowers the rate after reducer_patience + 1 of them (at the end of that epoch)
    lr = 1e-7  # ReduceLROnPlateau ignores drops smaller than its eps, 1e-8
    rc = main(["--quiet", "train", str(tiny_project / "train_eval_infer.config"), "--set", "train.epochs=5",
               "--set", "train.patience=0", "--set", f"model.learning_rate={lr}", "--set", "train.reducer_factor=0.5",
               "--set", f"train.reducer_patience={reducer_patience}", "--set", "train.max_steps_per_epoch=1",
               "--set", "train.epoch_change_infer=False"])
    assert rc == 0
    hist = json.loads((tiny_project / "history.json").read_text())
    assert hist["lr"] == pytest.approx([lr * f for f in factors], rel=1e-6)
