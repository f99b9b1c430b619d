"""End to end on tiny synthetic 64x64 slices through the CLI: train, resume, evaluate, infer."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from flexunet.cli import main


def test_train_evaluate_infer_resume(tiny_project):
    cfg = str(tiny_project / "train_eval_infer.config")
    assert main(["--quiet", "train", cfg]) == 0
    models, ev = tiny_project / "models", tiny_project / "eval"
    assert (models / "best.pt").exists() and (models / "last.ckpt").exists()
    for name in ("train_losses.csv", "train_metrics.csv", "train_losses.png", "train_metrics.png"):
        assert (ev / name).exists(), name
    lines = (ev / "train_losses.csv").read_text().splitlines()
    assert lines[0] == "epoch, loss, val_loss" and [l.split(",")[0] for l in lines[1:]] == ["0", "1"]
    assert (ev / "train_metrics.csv").read_text().startswith("epoch,dice_coef_multiclass,val_dice_coef_multiclass,")
    hist = json.loads((tiny_project / "history.json").read_text())
    assert len(hist["loss"]) == 2 and len(hist["val_loss"]) == 2
    snaps = sorted(p.name for p in (tiny_project / "epoch_change_infer").iterdir())
    assert snaps[0].startswith("Epoch_1_") and any(s.startswith("Epoch_2_") for s in snaps)
    # best checkpoint is weights only: not much larger than the weights themselves
    import torch

    state = torch.load(models / "best.pt", weights_only=True)["state_dict"]
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    assert (models / "best.pt").stat().st_size < 2 * nbytes

    # resume continues the epoch numbering
    assert main(["--quiet", "train", cfg, "--resume", "--set", "train.epochs=3"]) == 0
    lines = (ev / "train_losses.csv").read_text().splitlines()
    assert [l.split(",")[0] for l in lines[1:]] == ["0", "1", "2"]
    assert any(p.name.startswith("Epoch_3_") for p in (tiny_project / "epoch_change_infer").iterdir())

    # evaluate: original rows first, then per-class rows
    assert main(["--quiet", "evaluate", cfg]) == 0
    rows = list(csv.reader((tiny_project / "evaluation.csv").open()))
    assert rows[0][0] == "dice_ce" and rows[1][0] == "dice_coef_multiclass"
    keys = [r[0] for r in rows]
    assert "liver_dice_pooled" in keys and "tumour_dice_mean" in keys
    data = json.loads((tiny_project / "evaluation.json").read_text())
    assert 0.0 <= data["metrics"]["liver_dice_pooled"] <= 1.0

    # infer: palette PNGs with exactly the rgb_map colours, plus overlays
    assert main(["--quiet", "infer", cfg]) == 0
    out = tiny_project / "mini_test_output"
    files = sorted(out.glob("*.png"))
    assert len(files) == 4
    allowed = {(0, 0, 0), (0, 0, 255), (255, 0, 0)}
    for f in files:
        im = Image.open(f)
        assert im.mode == "P"
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
        assert {tuple(c) for c in np.unique(rgb, axis=0)} <= allowed
    assert len(list((tiny_project / "mini_test_output_overlay").glob("*.png"))) == 4


def test_tiled_infer_segments_native_resolution_tiles(tiny_project, monkeypatch):
    """--tiled runs the model on model-sized tiles cut from the image at its own size and writes their
    blend; the untiled path (which also keeps the output size) runs it once on the whole image resized."""
    from flexunet.data.images import load_image, normalize_image
    from flexunet.infer import common

    cfg = str(tiny_project / "train_eval_infer.config")
    assert main(["--quiet", "train", cfg, "--set", "train.epochs=1", "--set", "train.epoch_change_infer=False"]) == 0
    big = tiny_project / "big"
    big.mkdir()
    Image.fromarray((np.random.default_rng(0).random((150, 200, 3)) * 255).astype(np.uint8)).save(big / "wide.png")

    seen, predictors = [], []  # the shape of every batch the model gets, and the predictors used
    real = common.load_predictor

    def spy(*args, **kwargs):
        predictor = real(*args, **kwargs)
        for model in predictor.models:
            model.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape)))
        predictors.append(predictor)
        return predictor

    monkeypatch.setattr(common, "load_predictor", spy)
    rc = main(["--quiet", "infer", cfg, "--tiled", "--set", f"infer.images_dir='{big}'",
               "--set", f"infer.output_dir='{tiny_project / 'tiled_out'}'"])
    assert rc == 0
    out = Image.open(tiny_project / "tiled_out" / "wide.png")
    assert out.size == (200, 150)
    assert seen and all(shape[-2:] == (64, 64) for shape in seen)
    tiles = sum(shape[0] for shape in seen)
    assert tiles * 64 * 64 >= 150 * 200  # the tiles cover the whole image at its own resolution
    # the written labels are the sliding-window blend over the native image
    from flexunet.config import load_config

    conf = load_config(cfg)
    x = normalize_image(load_image(big / "wide.png", conf, resize=False), conf.model.input_normalize)
    expected = predictors[0].tiled_probs(x[None], (64, 64), conf.tiledinfer.overlapping)[0].argmax(0).numpy()
    assert np.array_equal(np.asarray(out), expected)

    seen.clear()
    assert main(["--quiet", "infer", cfg, "--set", f"infer.images_dir='{big}'",
                 "--set", f"infer.output_dir='{tiny_project / 'plain_out'}'"]) == 0
    assert Image.open(tiny_project / "plain_out" / "wide.png").size == (200, 150)
    assert seen == [(1, 3, 64, 64)]  # untiled: one resized image, so the tiled checks above tell them apart


def test_evaluate_dice_matches_hand_computation(tiny_project, monkeypatch):
    """Known predictions: a predictor that returns the truth shifted gives hand-computable Dice."""
    import torch

    from flexunet.config import load_config
    from flexunet.data.images import decode_mask, find_pairs
    from flexunet.infer import common as infer_common
    from flexunet.infer import evaluate2d

    cfg = load_config(tiny_project / "train_eval_infer.config")
    pairs = find_pairs(cfg.test.images_dir, cfg.test.masks_dir, ".png")
    truths = [decode_mask(m, cfg) for _, m in pairs]

    class FakePredictor:
        calls = 0

        def probs(self, x):
            n = len(x)
            labs = np.stack(truths[self.calls:self.calls + n])
            self.calls += n
            pred = np.roll(labs, 3, axis=2)  # shift right by 3 pixels
            return torch.nn.functional.one_hot(torch.from_numpy(pred), 3).permute(0, 3, 1, 2).float()

    monkeypatch.setattr(infer_common, "load_predictor", lambda cfg, weights=None: FakePredictor())
    res = evaluate2d.evaluate(cfg, out_dir=str(tiny_project), quiet=True)
    for c, name in ((1, "liver"), (2, "tumour")):
        tp = fp = fn = 0
        per = []
        for lab in truths:
            p, t = np.roll(lab, 3, axis=1) == c, lab == c
            a, b, d = (p & t).sum(), (p & ~t).sum(), (~p & t).sum()
            tp, fp, fn = tp + a, fp + b, fn + d
            if a + b + d:
                per.append(2 * a / (2 * a + b + d))
        assert res[f"{name}_dice_pooled"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-9)
        assert res[f"{name}_dice_mean"] == pytest.approx(np.mean(per), abs=1e-9)


def test_augment_preview_cli(tiny_project):
    cfg = str(tiny_project / "train_eval_infer.config")
    out = tiny_project / "preview.png"
    rc = main(["--quiet", "augment-preview", cfg, "--n", "4", "--output", str(out), "--set", "model.generator=True",
               "--set", "augmentor.rotation=True", "--set", "augmentor.hflip=True"])
    assert rc == 0 and out.exists() and Image.open(out).size[0] > 64


def test_training_with_augmentation_runs(tiny_project):
    cfg = str(tiny_project / "train_eval_infer.config")
    rc = main(["--quiet", "train", cfg, "--set", "train.epochs=1", "--set", "model.generator=True",
               "--set", "augmentor.rotation=True", "--set", "augmentor.gaussian_noise=True",
               "--set", "augmentor.probability=1.0", "--set", "train.epoch_change_infer=False"])
    assert rc == 0 and (tiny_project / "models" / "best.pt").exists()


def test_stats_cli(tiny_project, capsys):
    out = tiny_project / "stats.png"
    assert main(["stats", str(tiny_project / "dataset"), "--output", str(out)]) == 0
    assert out.exists()
    text = capsys.readouterr().out
    assert "train" in text and "test" in text


class _Trainer:
    should_stop = False


def _budget(clock: list, minutes: float = 1.0):
    """A TimeBudget on a hand-driven clock (``clock[0]`` seconds)."""
    from flexunet.train.callbacks import TimeBudget

    cb = TimeBudget(minutes=minutes)
    cb._clock = lambda: clock[0]
    return cb


def test_time_budget_stops_at_epoch_boundary(monkeypatch):
    clock = [0.0]
    cb = _budget(clock)
    t = _Trainer()
    cb.on_train_start(t, None)
    stops = []
    for epoch_len in (20.0, 15.0, 18.0):
        cb.on_train_epoch_start(t, None)
        clock[0] += epoch_len
        cb.on_train_epoch_end(t, None)
        stops.append(t.should_stop)
    # after 20 s: 20 + 20 <= 60 goes on; after 35 s: 35 + 20 <= 60 goes on; after 53 s: 53 + 20 > 60 stops
    assert stops == [False, False, True]
    t.should_stop = False
    clock[0] = 76.0  # a runaway epoch: hard stop past 1.25x the budget
    cb.on_train_batch_end(t, None, None, None, 0)
    assert t.should_stop and cb.stopped_early


def test_time_budget_carries_the_time_trained_across_resume():
    clock = [100.0]
    first = _budget(clock)
    t = _Trainer()
    first.on_train_start(t, None)
    first.on_train_epoch_start(t, None)
    clock[0] += 20.0
    first.on_train_epoch_end(t, None)
    assert not t.should_stop
    state = first.state_dict()
    assert state["elapsed"] == 20.0 and state["longest"] == 20.0
    resumed = _budget(clock)  # a new process: its clock starts elsewhere
    clock[0] = 5000.0
    resumed.load_state_dict(state)
    resumed.on_train_start(t, None)
    resumed.on_train_epoch_start(t, None)
    clock[0] += 25.0
    resumed.on_train_epoch_end(t, None)
    assert resumed.elapsed() == 45.0
    assert t.should_stop  # 45 s trained + a 25 s epoch > 60 s: the budget is the whole run's


def test_ema_weights_are_what_best_pt_and_last_ckpt_hold(tiny_project):
    """With [train] ema_decay, validation sees the average, best.pt is the average (not the raw weights),
    last.ckpt keeps both, and --resume carries the average on."""
    import torch

    cfg = str(tiny_project / "train_eval_infer.config")
    assert main(["--quiet", "train", cfg, "--set", "train.epochs=1", "--set", "train.ema_decay=0.5"]) == 0
    models = tiny_project / "models"
    best = torch.load(models / "best.pt", weights_only=True)["state_dict"]
    last = torch.load(models / "last.ckpt", weights_only=False)
    avg = {k[len("model."):]: v for k, v in last["state_dict"].items()}
    raw = {k[len("model."):]: v for k, v in last["current_model_state"].items()}
    floats = [k for k, v in best.items() if v.is_floating_point()]
    assert floats and set(best) == set(avg) == set(raw)
    # one epoch: the best epoch is the only one, so best.pt is the average at its end
    assert all(torch.equal(best[k], avg[k]) for k in floats)
    assert any(not torch.equal(avg[k], raw[k]) for k in floats)  # the average is not the raw weights
    assert main(["--quiet", "train", cfg, "--resume", "--set", "train.epochs=2", "--set", "train.ema_decay=0.5"]) == 0
    last2 = torch.load(models / "last.ckpt", weights_only=False)
    assert "current_model_state" in last2
    assert main(["--quiet", "train", cfg, "--set", "train.ema_decay=1.0"]) != 0
