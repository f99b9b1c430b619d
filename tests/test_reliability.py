"""Reliability and safety: bad input, faults during training, atomic writes, security, fuzzing, --keep-going.

Every bad-input case goes through the CLI (``flexunet.cli.main``) and checks: a non-zero exit, exactly one
``flexunet: error:``/``flexunet: stopped:`` line on stderr naming the file or key, and no traceback.

Set ``FLEXUNET_RECORD_MESSAGES=/path/file.jsonl`` to record every message seen (used to write
docs/failure-modes.md from real output).
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import CONFIG_TEMPLATE, write_split
from flexunet.cli import main
from flexunet.errors import CheckpointError, ConfigError, DataError
from volume_helpers import synthetic_case, write_case, write_dicom_series

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


# --------------------------------------------------------------------------- helpers


def _record(argv, rc, err):
    path = os.environ.get("FLEXUNET_RECORD_MESSAGES")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", ""), "argv": argv, "rc": rc,
                                 "stderr": err}) + "\n")


def cli(capsys, *argv, expect_rc=2, kind="error"):
    """Run ``flexunet --quiet ARGV`` in-process; check rc, one message line, no traceback; return that line."""
    argv = ["--quiet", *map(str, argv)]
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    _record(argv, rc, err)
    assert rc == expect_rc, err
    assert "Traceback" not in err and "Caught " not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    msgs = [line for line in lines if line.startswith(f"flexunet: {kind}:")]
    others = [line for line in lines if not line.startswith("flexunet: warning:") and line not in msgs]
    assert len(msgs) == 1 and not others, err
    return msgs[0]


SMALL = {"epoch_change_infer     = True": "epoch_change_infer     = False",
         "base_filters   = 8": "base_filters   = 4"}


def make_project(root: Path, n_train: int = 8, epochs: int = 1, extra: str = "") -> Path:
    ds = root / "dataset"
    write_split(ds, "train", n_train, seed=1, size=32)
    write_split(ds, "valid", 2, seed=2, size=32)
    write_split(ds, "test", 2, seed=3, size=32)
    text = CONFIG_TEMPLATE.format(size=32, loss="dice_ce", epochs=epochs)
    for a, b in SMALL.items():
        text = text.replace(a, b)
    cfg = root / "train_eval_infer.config"
    cfg.write_text(text + extra)
    return cfg


@pytest.fixture
def proj(tmp_path):
    """A 32x32 project (8 train, 2 valid, 2 test slices) with untrained weights in models/best.pt."""
    from flexunet.config import load_config
    from flexunet.models import create_model
    from flexunet.models.checkpoint import save_weights

    root = tmp_path / "p"
    cfg_path = make_project(root)
    cfg = load_config(cfg_path)
    torch.manual_seed(0)
    save_weights(root / "models" / "best.pt", create_model(cfg.model), cfg.model)
    return root


def config_of(root: Path) -> str:
    return str(root / "train_eval_infer.config")


def first_train(root: Path, what: str = "images") -> Path:
    return sorted((root / "dataset" / "train" / what).glob("*.png"))[0]


def a_file(tmp_path) -> Path:
    f = tmp_path / "afile"
    f.write_text("a regular file, not a folder")
    return f


# --------------------------------------------------------------------------- 1. bad input: image files


def test_truncated_png_from_worker_is_one_line(proj, capsys):
    """Raised inside a DataLoader worker process: still the one original line, no worker traceback."""
    img = first_train(proj)
    img.write_bytes(img.read_bytes()[:200])
    msg = cli(capsys, "train", config_of(proj), "--set", "train.num_workers=2")
    assert str(img) in msg and "cannot decode image" in msg and "truncated" in msg


def test_corrupt_png_not_an_image(proj, capsys):
    img = first_train(proj)
    img.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    msg = cli(capsys, "train", config_of(proj))
    assert str(img) in msg and "cannot decode image" in msg


def test_mask_far_colour_reports_colour_and_count(proj, capsys):
    mask = first_train(proj, "masks")
    arr = np.asarray(Image.open(mask).convert("RGB")).copy()
    arr[:10, :10] = (0, 255, 0)  # green: 255 away from black, 360 from blue/red
    Image.fromarray(arr).save(mask)
    msg = cli(capsys, "train", config_of(proj), "--set", "train.num_workers=1")
    assert str(mask) in msg and "100 pixels of colour (0,255,0)" in msg and "color_tolerance" in msg


def test_mask_colour_tolerance_is_configurable(proj):
    from flexunet.config import load_config
    from flexunet.data.images import decode_mask

    mask = first_train(proj, "masks")
    arr = np.asarray(Image.open(mask).convert("RGB")).copy()
    arr[:10, :10] = (0, 255, 0)
    Image.fromarray(arr).save(mask)
    with pytest.raises(DataError, match=r"farther than 60 "):
        decode_mask(mask, load_config(config_of(proj)))
    loose = load_config(config_of(proj), overrides=["mask.color_tolerance=300"])
    ids = decode_mask(mask, loose)
    assert (ids[:10, :10] == 0).all()  # nearest colour is black


def test_image_and_mask_sizes_differ(proj, capsys):
    mask = first_train(proj, "masks")
    Image.open(mask).convert("RGB").resize((40, 36)).save(mask)
    msg = cli(capsys, "train", config_of(proj), "--set", "train.num_workers=1")
    assert str(mask) in msg and "is 32x32 but its mask" in msg and "40x36" in msg


# --------------------------------------------------------------------------- 1. bad input: folders


def test_missing_and_empty_folders(proj, capsys):
    missing = proj / "nope"
    msg = cli(capsys, "train", config_of(proj), "--set", f"train.images_dir='{missing}'")
    assert str(missing) in msg and "not found" in msg
    empty = proj / "empty"
    empty.mkdir()
    msg = cli(capsys, "train", config_of(proj), "--set", f"train.masks_dir='{empty}'")
    assert str(empty) in msg and "holds no masks" in msg
    msg = cli(capsys, "infer", config_of(proj), "--set", f"infer.images_dir='{empty}'")
    assert str(empty) in msg and "holds no images" in msg


def test_unwritable_output_folders(proj, tmp_path, capsys):
    """A folder below a regular file cannot be created, even as root (where chmod does not block writes)."""
    bad = a_file(tmp_path) / "sub"
    msg = cli(capsys, "train", config_of(proj), "--set", f"train.model_dir='{bad}'")
    assert str(bad) in msg and "cannot be written" in msg
    msg = cli(capsys, "infer", config_of(proj), "--set", f"infer.output_dir='{bad}'")
    assert str(bad) in msg and "cannot be created" in msg
    msg = cli(capsys, "evaluate", config_of(proj), "--output", bad)
    assert str(bad) in msg and "Not a directory" in msg
    vol = write_case(tmp_path / "cases", "c0", seed=0) / "image.nii.gz"
    msg = cli(capsys, "infer-volume", config_of(proj), vol, "--output", bad)
    assert str(bad) in msg and "cannot be created" in msg


# --------------------------------------------------------------------------- 1. bad input: volumes

VOL_CONFIG = """[model]
image_width = 32
image_height = 32
num_classes = 3
base_filters = 4
base_kernels = (3,3)
num_layers = 3
[train]
model_dir = "./models/"
precision = "32"
[slice]
cases_dir = "./cases"
output_dir = "./sliced"
hu_window = (-100, 250)
"""


@pytest.fixture
def vproj(tmp_path):
    from flexunet.config import load_config
    from flexunet.models import create_model
    from flexunet.models.checkpoint import save_weights

    (tmp_path / "v.config").write_text(VOL_CONFIG)
    cfg = load_config(tmp_path / "v.config")
    torch.manual_seed(0)
    save_weights(tmp_path / "models" / "best.pt", create_model(cfg.model), cfg.model)
    return tmp_path


def test_slice_label_shape_and_affine_mismatch(vproj, capsys):
    cases = vproj / "cases"
    for i in range(3):
        write_case(cases, f"c{i}", seed=i, shape=(24, 20, 6))
    d = cases / "c1"
    img, lab, aff = synthetic_case(1, shape=(24, 20, 6))
    nib.save(nib.Nifti1Image(lab[:, :, :5], aff), d / "label.nii.gz")
    msg = cli(capsys, "slice", vproj / "v.config")
    assert "c1" in msg and "(24, 20, 6)" in msg and "(24, 20, 5)" in msg and "expected equal shapes" in msg
    shifted = aff.copy()
    shifted[0, 3] += 5.0
    nib.save(nib.Nifti1Image(lab, shifted), d / "label.nii.gz")
    msg = cli(capsys, "slice", vproj / "v.config")
    assert "c1" in msg and "affines differ" in msg


def test_evaluate_volume_shape_mismatch(vproj, capsys):
    _, lab, aff = synthetic_case(0, shape=(24, 20, 6))
    (vproj / "gt").mkdir()
    (vproj / "pred").mkdir()
    nib.save(nib.Nifti1Image(lab, aff), vproj / "gt" / "c0.nii.gz")
    nib.save(nib.Nifti1Image(lab[:, :, :4], aff), vproj / "pred" / "c0.nii.gz")
    msg = cli(capsys, "evaluate-volume", vproj / "pred", vproj / "gt")
    assert "c0.nii.gz" in msg and "shape" in msg


def _dicom(folder: Path, n: int = 8, **kw) -> Path:
    hu, _, _ = synthetic_case(0, shape=(24, 20, n))
    return write_dicom_series(folder, hu, **kw)


def _file_at_position(folder: Path, k: int) -> Path:
    import pydicom

    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if abs(float(ds.ImagePositionPatient[2]) - (50.0 + k * 2.5)) < 1e-3:
            return f
    raise AssertionError(k)


@pytest.mark.parametrize("fault", ["missing", "duplicate", "mixed"])
def test_infer_volume_broken_dicom(vproj, capsys, fault):
    dcm = _dicom(vproj / "dicom")
    if fault == "missing":
        _file_at_position(dcm, 4).unlink()
        expect = "a slice is missing"
    elif fault == "duplicate":
        shutil.copy(_file_at_position(dcm, 3), dcm / "copy_of_3")
        expect = "expected one slice per position"
    else:
        hu, _, _ = synthetic_case(5, shape=(24, 20, 3))
        write_dicom_series(dcm, hu, series_uid="1.2.3.4.5", names=[f"other_{i}" for i in range(3)])
        expect = "holds 2 DICOM series"
    msg = cli(capsys, "infer-volume", vproj / "v.config", dcm, "--output", vproj / "out")
    assert str(dcm) in msg and expect in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_infer_volume_nan_inf_voxels(vproj, capsys, bad):
    img, _, aff = synthetic_case(0, shape=(24, 20, 6))
    img[3, 4, 2] = bad
    img[5, 5, 5] = bad
    path = vproj / "bad.nii.gz"
    nib.save(nib.Nifti1Image(img, aff), path)
    msg = cli(capsys, "infer-volume", vproj / "v.config", path, "--output", vproj / "out")
    assert str(path) in msg and "holds 2 NaN/Inf voxels" in msg


def test_float_tiff_with_nan_is_data_error(tmp_path):
    from flexunet.config import default_config
    from flexunet.data.images import load_image

    arr = np.ones((8, 8), np.float32)
    arr[2, 2] = np.nan
    Image.fromarray(arr, mode="F").save(tmp_path / "x.tif")
    with pytest.raises(DataError, match=r"x\.tif holds 1 NaN/Inf pixels"):
        load_image(tmp_path / "x.tif", default_config())


# --------------------------------------------------------------------------- 1. bad input: config


def test_unreadable_config(tmp_path, capsys):
    msg = cli(capsys, "train", tmp_path / "missing.config")
    assert "missing.config: config file not found" in msg
    msg = cli(capsys, "train", tmp_path)
    assert f"{tmp_path}: is a folder; expected a config file" in msg
    binary = tmp_path / "binary.config"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage\x00")
    msg = cli(capsys, "train", binary)
    assert str(binary) in msg and "cannot read config" in msg
    noini = tmp_path / "noini.config"
    noini.write_text("epochs = 3\n")
    msg = cli(capsys, "train", noini)
    assert str(noini) in msg and "not a valid INI config" in msg


def test_unknown_section_and_key_warn_and_continue(proj, capsys):
    cfg = Path(config_of(proj))
    cfg.write_text(cfg.read_text() + "\n[trian]\nepochs = 3\n[augmentor]\nrotaton = True\n")
    capsys.readouterr()
    rc = main(["--quiet", "augment-preview", str(cfg), "--n", "1", "--output", str(proj / "prev.png")])
    err = capsys.readouterr().err
    _record(["augment-preview", "..."], rc, err)
    assert rc == 0 and (proj / "prev.png").exists()
    assert "flexunet: warning:" in err and "unknown section [trian] (ignored); closest known section: [train]" in err
    assert "unknown key [augmentor] rotaton (ignored); closest known key: rotation" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("setting,expect", [
    ("train.epochs='ten'", "[train] epochs = 'ten': expected an integer"),
    ("train.batch_size=[1, 2]", "[train] batch_size = [1, 2]: expected an integer"),
    ("model.learning_rate=True", "[model] learning_rate = True: expected a number"),
    ("model.num_classes=4", "[model] num_classes = 4 but [mask] rgb_map has 3 classes"),
])
def test_wrong_types_and_num_classes_mismatch(proj, capsys, setting, expect):
    msg = cli(capsys, "train", config_of(proj), "--set", setting)
    assert expect in msg


def test_num_classes_mismatch_in_file(proj, capsys):
    cfg = Path(config_of(proj))
    cfg.write_text(cfg.read_text().replace("num_classes    = 3", "num_classes    = 2"))
    msg = cli(capsys, "infer", cfg)
    assert str(cfg) in msg and "num_classes = 2 but [mask] rgb_map has 3 classes" in msg


@pytest.mark.parametrize("payload", [
    "__import__('os').system('touch {marker}')",
    "open('{marker}','w')",
    "[c for c in ().__class__.__base__.__subclasses__()]",
])
def test_injection_through_cli_runs_nothing(proj, tmp_path, capsys, payload):
    marker = tmp_path / "pwned"
    value = payload.format(marker=marker)
    msg = cli(capsys, "infer", config_of(proj), "--set", f"model.loss={value}")
    assert "[model] loss" in msg and "not a Python literal" in msg
    cfg = Path(config_of(proj))
    cfg.write_text(cfg.read_text().replace('loss           = "dice_ce"', f"loss = {value}"))
    msg = cli(capsys, "infer", cfg)
    assert "[model] loss" in msg and "not a Python literal" in msg
    assert not marker.exists()


# --------------------------------------------------------------------------- 1. bad input: checkpoints


def test_checkpoint_of_another_architecture(proj, capsys):
    best = proj / "models" / "best.pt"
    obj = torch.load(best, weights_only=True)
    obj["meta"]["model"] = "TensorFlowFlexAttentionUNet"
    other = proj / "other.pt"
    torch.save(obj, other)
    msg = cli(capsys, "infer", config_of(proj), "--weights", other)
    assert str(other) in msg and "'TensorFlowFlexAttentionUNet' but the config asks for 'TensorFlowFlexUNet'" in msg
    # same architecture name, other depth: tensors do not fit
    msg = cli(capsys, "infer", config_of(proj), "--set", "model.num_layers=2")
    assert str(best) in msg and "does not fit this [model] config" in msg


def test_corrupted_checkpoint(proj, capsys):
    best = proj / "models" / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    msg = cli(capsys, "infer", config_of(proj))
    assert str(best) in msg and "cannot load checkpoint: corrupt or truncated file" in msg
    (proj / "models" / "last.ckpt").write_bytes(b"garbage")
    msg = cli(capsys, "train", config_of(proj), "--resume")
    assert "last.ckpt" in msg and "cannot load checkpoint: not a PyTorch checkpoint" in msg


def test_resume_without_checkpoint(proj, capsys):
    msg = cli(capsys, "train", config_of(proj), "--resume")
    assert "last.ckpt: no checkpoint to resume from" in msg


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused(proj, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Evil(marker)}, evil)
    from flexunet.models.checkpoint import load_state_dict

    with pytest.raises(CheckpointError, match=r"refused to load: the file would import and call posix\.system"):
        load_state_dict(evil)
    msg = cli(capsys, "infer", config_of(proj), "--weights", evil)
    assert str(evil) in msg and "posix.system" in msg and "nothing was run" in msg
    shutil.copy(evil, proj / "models" / "last.ckpt")  # --resume loads safely too
    msg = cli(capsys, "train", config_of(proj), "--resume")
    assert "last.ckpt" in msg and "refused to load" in msg
    assert not marker.exists()
    # the same file with plain pickle would have run the command: the test payload is real
    with open(evil, "rb") as fh:
        assert b"system" in fh.read()


# --------------------------------------------------------------------------- 2. faults during training


def _loadable(root: Path):
    from flexunet.config import load_config
    from flexunet.models import create_model
    from flexunet.models.checkpoint import load_weights_into

    cfg = load_config(config_of(root))
    for name in ("best.pt", "last.ckpt"):
        load_weights_into(create_model(cfg.model), root / "models" / name, cfg.model.model)
    return torch.load(root / "models" / "last.ckpt", weights_only=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(proj, capsys, monkeypatch, bad):
    """8 images, batch 4: 2 steps per epoch; the 4th training step (epoch 1, step 1) returns a non-finite loss."""
    from flexunet.train import module as module_mod

    real = module_mod.build_loss
    seen = {"n": 0, "last_ckpt": None}

    def build_loss(name):
        fn = real(name)

        def loss(logits, target):
            out = fn(logits, target)
            if torch.is_grad_enabled():
                seen["n"] += 1
                if seen["n"] == 4:
                    ckpt = proj / "models" / "last.ckpt"
                    seen["last_ckpt"] = ckpt.read_bytes()
                    return out * bad
            return out
        return loss

    monkeypatch.setattr(module_mod, "build_loss", build_loss)
    msg = cli(capsys, "train", config_of(proj), "--set", "train.epochs=3", expect_rc=3, kind="stopped")
    assert f"non-finite training loss ({bad}) at epoch 1, step 1; nothing saved" in msg
    assert (proj / "models" / "last.ckpt").read_bytes() == seen["last_ckpt"]  # untouched
    ckpt = _loadable(proj)
    assert ckpt["epoch"] == 0
    assert not [p for p in (proj / "models").iterdir() if p.name.startswith(".")]  # no temp files


def test_sigint_saves_resumable_checkpoint_and_resume_works(proj, capsys):
    """In-process: SIGINT to ourselves once epoch 0's last.ckpt exists; then --resume finishes the run."""
    last = proj / "models" / "last.ckpt"

    def fire():
        t0 = time.time()
        while not last.exists() and time.time() - t0 < 120:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    th = threading.Thread(target=fire, daemon=True)
    th.start()
    msg = cli(capsys, "train", config_of(proj), "--set", "train.epochs=200", "--set", "train.patience=0",
              expect_rc=3, kind="stopped")
    th.join()
    assert "received SIGINT" in msg and str(last) in msg and "--resume" in msg
    ckpt = _loadable(proj)
    stopped_epoch = ckpt["epoch"]
    assert stopped_epoch < 199
    assert signal.getsignal(signal.SIGINT) == before  # handlers restored
    rc = main(["--quiet", "train", config_of(proj), "--resume", "--set", f"train.epochs={stopped_epoch + 2}"])
    assert rc == 0
    hist = json.loads((proj / "history.json").read_text())
    assert hist["epoch"] == list(range(stopped_epoch + 2))


def _env():
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def test_sigterm_subprocess_saves_checkpoint_exits_nonzero_and_resumes(proj, capsys):
    last = proj / "models" / "last.ckpt"
    cmd = [sys.executable, "-m", "flexunet", "--quiet", "train", config_of(proj), "--set", "train.epochs=500",
           "--set", "train.patience=0"]
    proc = subprocess.Popen(cmd, cwd=proj, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not last.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() - t0 < 150, "no last.ckpt after 150 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _record(cmd, proc.returncode, err)
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("flexunet: stopped: received SIGTERM"), err
    assert str(last) in lines[0] and "flexunet train CONFIG --resume" in lines[0]
    stopped_epoch = _loadable(proj)["epoch"]
    rc = main(["--quiet", "train", config_of(proj), "--resume", "--set", f"train.epochs={stopped_epoch + 2}"])
    assert rc == 0
    assert json.loads((proj / "history.json").read_text())["epoch"] == list(range(stopped_epoch + 2))


# --------------------------------------------------------------------------- 2. atomic writes


def _no_temp_files(folder: Path):
    left = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not left, left


def test_crash_while_saving_weights_keeps_old_file(tmp_path, monkeypatch):
    from flexunet.config import default_config
    from flexunet.models import checkpoint

    cfg = default_config()
    model = torch.nn.Conv2d(1, 1, 1)
    path = tmp_path / "best.pt"
    checkpoint.save_weights(path, model, cfg.model)
    before = path.read_bytes()

    def crash(obj, fh, *a, **k):
        fh.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save_weights(path, torch.nn.Conv2d(1, 1, 1), cfg.model)
    assert path.read_bytes() == before
    _no_temp_files(tmp_path)


def test_crash_in_os_replace_keeps_old_png_and_text(tmp_path, monkeypatch):
    from flexunet.io.atomic import atomic_save_text, save_output_text
    from flexunet.io.png import save_png_atomic

    png, txt, csv = tmp_path / "m.png", tmp_path / "a.json", tmp_path / "h.csv"
    save_png_atomic(Image.new("L", (4, 4), 1), png)
    atomic_save_text(txt, "old")
    save_output_text(csv, "old")
    before = png.read_bytes()

    def crash(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    for write in (lambda: save_png_atomic(Image.new("L", (4, 4), 2), png), lambda: atomic_save_text(txt, "new"),
                  lambda: save_output_text(csv, "new")):
        with pytest.raises(OSError):
            write()
    assert png.read_bytes() == before and txt.read_text() == "old" and csv.read_text() == "old"
    _no_temp_files(tmp_path)


def test_crash_in_pil_save_keeps_old_png(tmp_path, monkeypatch):
    from flexunet.io.png import save_png_atomic

    png = tmp_path / "m.png"
    save_png_atomic(Image.new("L", (4, 4), 1), png)
    before = png.read_bytes()

    def crash(self, fp, *a, **k):
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt  # Ctrl-C mid-write

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_png_atomic(Image.new("L", (4, 4), 2), png)
    assert png.read_bytes() == before
    _no_temp_files(tmp_path)


def test_crash_while_saving_last_ckpt_keeps_old_file(tmp_path):
    from flexunet.train.callbacks import LastCheckpoint

    class Cfg:
        class train:
            model_dir = str(tmp_path)

    class FakeTrainer:
        is_global_zero = True

        def __init__(self, fail):
            self.fail = fail

        def save_checkpoint(self, path):
            Path(path).write_bytes(b"partial" if self.fail else b"complete checkpoint")
            if self.fail:
                raise RuntimeError("killed mid-write")

    last = LastCheckpoint(Cfg)
    last.save(FakeTrainer(False))
    with pytest.raises(RuntimeError):
        last.save(FakeTrainer(True))
    assert (tmp_path / "last.ckpt").read_bytes() == b"complete checkpoint"
    _no_temp_files(tmp_path)


# --------------------------------------------------------------------------- 3. security: output names


@pytest.mark.parametrize("name", ["../evil.png", "..", "a/../../evil", "/etc/passwd", "sub/x.png", "x\x00.png"])
def test_output_names_cannot_escape(tmp_path, name):
    from flexunet.io.atomic import safe_child

    with pytest.raises(DataError, match="expected a single plain file name"):
        safe_child(tmp_path / "out", name)


def test_volume_output_name_from_dotdot_input_stays_inside(vproj, capsys):
    """A DICOM folder given as 'x/..' has the base name '..': the output is refused or stays inside."""
    from flexunet.infer.batch import output_name
    from flexunet.io.atomic import safe_child

    out = vproj / "out"
    out.mkdir()
    for given_path in ("cases/..", "../../etc/passwd.nii.gz", "/"):
        try:
            child = safe_child(out, output_name(given_path) + ".nii.gz")
        except DataError:
            continue
        assert child.resolve().parent == out.resolve()


# --------------------------------------------------------------------------- 4. fuzzing (short)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(st.tuples(st.sampled_from(["model", "train", "mask", "infer", "bogus"]),
                               st.sampled_from(["epochs", "num_classes", "rgb_map", "learning_rate", "loss",
                                                "batch_size", "images_dir", "x"]),
                               st.one_of(st.integers(-3, 300).map(str), st.text(max_size=12),
                                         st.sampled_from(["(1,2)", "{(0,0,0):0}", "None", "1e400", "'a'",
                                                          "[", "__import__('os')", "0x10"]))),
                     max_size=6))
def test_fuzz_config_file_gives_config_or_config_error(tmp_path_factory, body):
    """Whole config files: a Config or a one-line ConfigError; never another exception."""
    import warnings

    from flexunet.config import load_config

    lines = []
    for section, key, value in body:
        value = value.replace("\n", " ").replace("\r", " ").replace("[", "(")
        lines.append(f"[{section}]\n{key} = {value}\n")
    path = tmp_path_factory.mktemp("cfg") / "c.config"
    path.write_text("".join(lines))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            assert "\n" not in str(exc)
            return
    assert cfg.model.num_classes == len(cfg.mask.rgb_map)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), png_header=st.booleans())
def test_fuzz_mask_decoder_on_garbage_bytes(tmp_path_factory, data, png_header):
    """Random bytes as a mask file: DataError or valid class ids, never another exception."""
    from flexunet.config import default_config
    from flexunet.data.images import decode_mask

    path = tmp_path_factory.mktemp("m") / "m.png"
    path.write_bytes((b"\x89PNG\r\n\x1a\n" if png_header else b"") + data)
    try:
        ids = decode_mask(path, default_config())
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert ids.min() >= 0 and ids.max() < 3


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(6, 9), drop=st.integers(1, 7), seed=st.integers(0, 1000))
def test_fuzz_dicom_gap_anywhere_is_reported(tmp_path_factory, n, drop, seed):
    """Remove any inner slice of a shuffled series: always 'a slice is missing', whatever the file order.

    (Gaps are found against the median slice spacing, so a series needs a few slices: with 4 slices
    and one missing, the median is itself stretched and the gap is not seen. End slices cannot be
    missed by definition.)"""
    from flexunet.io.volumes import read_dicom_series

    drop = min(drop, n - 2)
    rng = np.random.default_rng(seed)
    hu = rng.normal(0, 50, (6, 5, n)).astype(np.float32)
    folder = tmp_path_factory.mktemp("d")
    names = [f"f{int(v)}" for v in rng.permutation(1000)[:n]]
    write_dicom_series(folder, hu, names=names)
    full = read_dicom_series(folder)
    np.testing.assert_allclose(full.array, np.rint(hu), atol=0.5)
    _file_at_position_generic(folder, drop).unlink()
    with pytest.raises(DataError, match="a slice is missing"):
        read_dicom_series(folder)


def _file_at_position_generic(folder: Path, k: int, origin_z: float = 50.0, dz: float = 2.5) -> Path:
    import pydicom

    for f in sorted(folder.iterdir()):
        if abs(float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) - (origin_z + k * dz)) < 1e-3:
            return f
    raise AssertionError(k)


# --------------------------------------------------------------------------- 5. --keep-going


def test_infer_keep_going_reports_and_continues(proj, capsys):
    src = proj / "dataset" / "test" / "images"
    bad = src / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = proj / "mini_test_output"
    msg = cli(capsys, "infer", config_of(proj))
    assert str(bad) in msg
    capsys.readouterr()
    rc = main(["--quiet", "infer", config_of(proj), "--keep-going"])
    err = capsys.readouterr().err
    _record(["infer", "CONFIG", "--keep-going"], rc, err)
    assert rc == 2 and "Traceback" not in err
    assert "flexunet: 1 file(s) failed:" in err and f"  cannot decode image: {bad}" in err
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in src.glob("1*.png"))


def test_infer_volume_keep_going_reports_and_continues(vproj, capsys):
    good = write_case(vproj / "cases", "ok", seed=2, shape=(24, 20, 6)) / "image.nii.gz"
    img, _, aff = synthetic_case(0, shape=(24, 20, 6))
    img[0, 0, 0] = np.nan
    nanvol = vproj / "nan.nii.gz"
    nib.save(nib.Nifti1Image(img, aff), nanvol)
    dcm = _dicom(vproj / "dicom")
    _file_at_position(dcm, 4).unlink()
    out = vproj / "out"
    capsys.readouterr()
    rc = main(["--quiet", "infer-volume", str(vproj / "v.config"), str(nanvol), str(dcm), str(good),
               str(vproj / "absent.nii.gz"), "--output", str(out), "--keep-going"])
    err = capsys.readouterr().err
    _record(["infer-volume", "...", "--keep-going"], rc, err)
    assert rc == 2 and "Traceback" not in err
    assert "flexunet: 3 file(s) failed:" in err
    assert "NaN/Inf voxels" in err and "a slice is missing" in err and "absent.nii.gz: input volume not found" in err
    assert sorted(p.name for p in out.iterdir()) == ["ok.nii.gz"]


def test_sigterm_during_validation_finishes_epoch_and_saves_it(proj, capsys, monkeypatch):
    """A signal during validation: the epoch ends normally, its last.ckpt is written (exact resume), then stop."""
    from flexunet.train.module import SegmentationModule

    real = SegmentationModule.validation_step

    def validation_step(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationModule, "validation_step", validation_step)
    msg = cli(capsys, "train", config_of(proj), "--set", "train.epochs=5", expect_rc=3, kind="stopped")
    assert "received SIGTERM during epoch 1; saved" in msg and "at the end of the epoch" in msg
    assert _loadable(proj)["epoch"] == 1
    assert json.loads((proj / "history.json").read_text())["epoch"] == [0, 1]
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
