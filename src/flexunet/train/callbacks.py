"""Training callbacks: checkpoints, per-epoch CSVs/plots/history, epoch snapshots, break file, signals.

Only global rank 0 writes files.  Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import math
import signal
from pathlib import Path

import lightning as L

from ..errors import TrainingAborted
from ..io.atomic import atomic_save_bytes, atomic_temp_path, save_output_text
from ..io.trace import note_write
from ..models.checkpoint import save_weights


def _metric(trainer, key):
    v = trainer.callback_metrics.get(key)
    return float(v) if v is not None else math.nan


class BestWeights(L.Callback):
    """Keeps ``model_dir/best.pt`` (weights only) for the lowest ``val_loss``, as the original's ModelCheckpoint."""

    def __init__(self, cfg, monitor: str = "val_loss"):
        self.cfg = cfg
        self.monitor = monitor
        self.best = math.inf
        self.path = Path(cfg.train.model_dir) / "best.pt"

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        cur = _metric(trainer, self.monitor)
        if math.isnan(cur) or cur >= self.best:
            return
        self.best = cur
        if trainer.is_global_zero:
            save_weights(self.path, pl_module.model, self.cfg.model)

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state.get("best", math.inf)


class EMAWeights(L.pytorch.callbacks.EMAWeightAveraging):
    """Lightning's EMA of the weights, with the average swapped in for the whole validation: it goes
    back only in ``on_validation_end``, after :class:`BestWeights` (listed before this callback) has
    saved it, so ``best.pt`` holds the average the validation loss was measured on."""

    def __init__(self, decay: float):
        super().__init__(decay=decay)

    def on_validation_epoch_end(self, trainer, pl_module):
        pass  # the parent swaps back here, before on_validation_end

    def on_validation_end(self, trainer, pl_module):
        if self._average_model is not None:
            self._swap_models(pl_module)


class LastCheckpoint(L.Callback):
    """``model_dir/last.ckpt`` after every epoch: weights, optimiser, scheduler, callbacks, RNG (for --resume)."""

    def __init__(self, cfg):
        self.path = Path(cfg.train.model_dir) / "last.ckpt"

    def save(self, trainer) -> None:
        """Write ``last.ckpt`` atomically: temp file beside it, fsync, rename; the temp file never survives."""
        if not trainer.is_global_zero:
            # the call is collective; the strategies used here (single device, DDP) write on global rank 0
            # only, so the path given on the other ranks is never written
            trainer.save_checkpoint(str(self.path))
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_temp_path(self.path) as tmp:
            trainer.save_checkpoint(str(tmp))
        note_write(self.path)

    def on_train_epoch_end(self, trainer, pl_module):
        # runs after validation in Lightning 2.x, so val metrics and scheduler state are current
        self.save(trainer)


class EpochHistory(L.Callback):
    """``eval/train_losses.csv``, ``eval/train_metrics.csv`` (+ ``.png`` plots) and ``history.json``.

    The two CSVs keep the original's columns first; per-class validation Dice columns follow in
    ``eval/val_class_metrics.csv``.  ``history.json`` is a real JSON object (the original wrote a
    JSON string holding a Python repr).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.eval_dir = Path(cfg.train.eval_dir)
        self.history_path = Path(cfg.base_dir) / "history.json"
        self.history: dict[str, list[float]] = {}
        self.epochs: list[int] = []
        self._lr = math.nan

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # the LR used during this epoch (the plateau scheduler may lower it at validation end); read at
        # the first batch, after the module's own on_train_epoch_start has set a poly schedule's LR
        if batch_idx == 0:
            self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan

    def state_dict(self):
        return {"history": self.history, "epochs": self.epochs}

    def load_state_dict(self, state):
        self.history = state.get("history", {})
        self.epochs = state.get("epochs", [])

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        keys = [k for k in trainer.callback_metrics if not k.endswith("_step")]
        if epoch in self.epochs:
            return
        self.epochs.append(epoch)
        values = {k: _metric(trainer, k) for k in keys}
        values["lr"] = self._lr
        for k in set(values) | set(self.history):
            col = self.history.setdefault(k, [])
            col.extend([math.nan] * (len(self.epochs) - 1 - len(col)))
            col.append(values.get(k, math.nan))
        if trainer.is_global_zero:
            self.write()

    def _col(self, key):
        return self.history.get(key, [math.nan] * len(self.epochs))

    def write(self) -> None:
        def fmt(v):
            return f"{v:.4f}" if not math.isnan(v) else "nan"

        loss, vloss = self._col("loss"), self._col("val_loss")
        rows = ["epoch, loss, val_loss"] + [f"{e}, {fmt(a)}, {fmt(b)}" for e, a, b in zip(self.epochs, loss, vloss)]
        save_output_text(self.eval_dir / "train_losses.csv", "\n".join(rows) + "\n")
        d, vd = self._col("dice_coef_multiclass"), self._col("val_dice_coef_multiclass")
        rows = ["epoch,dice_coef_multiclass,val_dice_coef_multiclass,"] + [
            f"{e}, {fmt(a)}, {fmt(b)}" for e, a, b in zip(self.epochs, d, vd)]
        save_output_text(self.eval_dir / "train_metrics.csv", "\n".join(rows) + "\n")
        cls_keys = sorted(k for k in self.history if k.startswith("val_") and ("_dice_" in k or "_iou_" in k))
        if cls_keys:
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["epoch"] + cls_keys + ["lr"])
            for i, e in enumerate(self.epochs):
                w.writerow([e] + [fmt(self.history[k][i]) for k in cls_keys] + [f"{self._col('lr')[i]:.3g}"])
            save_output_text(self.eval_dir / "val_class_metrics.csv", buf.getvalue())
        clean = {k: [None if (isinstance(v, float) and math.isnan(v)) else v for v in vals]
                 for k, vals in self.history.items()}
        clean["epoch"] = list(self.epochs)
        save_output_text(self.history_path, json.dumps(clean, indent=1))
        self._plot("train_losses.png", [("loss", loss), ("val_loss", vloss)], "loss")
        self._plot("train_metrics.png", [("dice_coef_multiclass", d), ("val_dice_coef_multiclass", vd)]
                   + [(k, self.history[k]) for k in cls_keys if k.endswith("_dice_pooled")], "metric")

    def _plot(self, name, series, ylabel):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
        for label, ys in series:
            ax.plot(self.epochs, ys, marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        path = self.eval_dir / name
        atomic_save_bytes(path, buf.getvalue())
        note_write(path)


class AugmentState(L.Callback):
    """Exact ``--resume`` with ``num_workers = 0``: the training dataset's augmentation counter
    (``SliceDataset._served``, part of each item's augmentation seed) travels with ``last.ckpt``.

    Worker processes keep their own counters, which a resumed run cannot recreate; with
    ``num_workers > 0`` a resumed run is correct but its augmentation draws differ.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def state_dict(self):
        return {"served": int(getattr(self.dataset, "_served", 0))}

    def load_state_dict(self, state):
        if hasattr(self.dataset, "_served"):
            self.dataset._served = int(state.get("served", 0))


class EpochChangeInfer(L.Callback):
    """After every epoch, segments ``num_infer_images`` from ``[infer] images_dir`` into
    ``epoch_change_infer_dir/Epoch_{n}_{stem}.png`` (n counts from 1, as the original)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.out_dir = Path(cfg.train.epoch_change_infer_dir)
        self._images = None

    def _load(self):
        from ..data.images import list_images, load_image, normalize_image

        if self._images is None:
            try:
                paths = list_images(self.cfg.infer.images_dir)[: self.cfg.train.num_infer_images]
            except Exception:
                paths = []
            self._images = [(p.stem, normalize_image(load_image(p, self.cfg), self.cfg.model.input_normalize)) for p in paths]
        return self._images

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        import numpy as np
        import torch

        from ..data.images import colorize
        from ..io.png import save_png_atomic

        images = self._load()
        if not images:
            return
        was_training = pl_module.training
        pl_module.eval()
        with torch.inference_mode():
            x = torch.as_tensor(np.stack([im for _, im in images]), device=pl_module.device)
            labels = pl_module(x).argmax(1).cpu().numpy()
        if was_training:
            pl_module.train()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for (stem, _), lab in zip(images, labels):
            path = self.out_dir / f"Epoch_{trainer.current_epoch + 1}_{stem}.png"
            save_png_atomic(colorize(lab, self.cfg), path)


class TimeBudget(L.Callback):
    """``[train] max_time_minutes`` without wasting the last epoch.

    Lightning's ``max_time`` stops in the middle of an epoch, whose work is then never validated.
    This callback stops at an epoch boundary instead: after each epoch it estimates the next
    epoch's duration (the longest so far, validation included) and stops when that would overrun
    the budget.  A hard stop at 1.25x the budget guards against a runaway epoch.  Like Lightning's
    ``Timer``, the time already trained travels with ``last.ckpt``: the budget is for the whole run,
    across ``--resume``.

    With ``stop = "batch"`` (``[train] max_time_stop``) the run trains until the budget is spent and
    stops after the batch that crosses it; Lightning validates that cut epoch, so its work counts.
    Runs whose epochs are long then train for all their minutes, as runs with short epochs do.
    ``stop = None`` reads ``[train] max_time_stop`` from the module's config at the start of training
    ("epoch" when it has none).
    """

    def __init__(self, minutes: float, stop: str | None = None):
        import time

        if stop not in (None, "epoch", "batch"):
            raise ValueError(f"TimeBudget stop={stop!r}: expected 'epoch' or 'batch'")
        self._clock = time.monotonic
        self.stop = stop
        self.budget = minutes * 60.0
        self.before = 0.0  # seconds trained before a --resume
        self.start: float | None = None
        self.epoch_start: float | None = None
        self.longest = 0.0
        self.stopped_early = False

    def elapsed(self) -> float:
        return self.before + (self._clock() - self.start if self.start is not None else 0.0)

    def state_dict(self):
        return {"elapsed": self.elapsed(), "longest": self.longest}

    def load_state_dict(self, state):
        self.before = float(state.get("elapsed", 0.0))
        self.longest = float(state.get("longest", 0.0))

    def on_train_start(self, trainer, pl_module):
        if self.stop is None:
            train_cfg = getattr(getattr(pl_module, "cfg", None), "train", None)
            self.stop = getattr(train_cfg, "max_time_stop", "epoch")
        self.start = self._clock()

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_start = self._clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is None:
            return
        if self.stop == "batch":
            if self.elapsed() >= self.budget:
                trainer.should_stop = True
        elif self.elapsed() > 1.25 * self.budget:
            self.stopped_early = True
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module):
        now = self._clock()
        if self.epoch_start is not None:
            self.longest = max(self.longest, now - self.epoch_start)
        if self.start is None:
            return
        if self.stop == "batch":
            if self.elapsed() >= self.budget:  # spent during the epoch's validation
                trainer.should_stop = True
        elif self.elapsed() + self.longest > self.budget:
            trainer.should_stop = True


class BreakFile(L.Callback):
    """A file named ``break_training`` in the working folder (or the config's folder) stops training
    cleanly after the current epoch; the file is removed so the next run is not stopped."""

    def __init__(self, cfg):
        self.paths = [Path.cwd() / "break_training", Path(cfg.base_dir) / "break_training"]
        self.triggered = False

    def on_train_epoch_end(self, trainer, pl_module):
        for p in self.paths:
            if p.exists():
                self.triggered = True
                trainer.should_stop = True
                if trainer.is_global_zero:
                    print(f"flexunet: {p} found: stopping after epoch {trainer.current_epoch + 1}")
                    try:
                        p.unlink()
                    except OSError:
                        pass
                break


class SignalStop(L.Callback):
    """SIGINT/SIGTERM: stop with a resumable ``last.ckpt`` and exit non-zero (the runner raises TrainingAborted).

    * during a training batch: the batch finishes and training stops; ``last.ckpt`` of the last
      finished epoch is kept, so ``--resume`` redoes the interrupted epoch exactly (Lightning cannot
      resume the middle of an epoch faithfully: it skips the rest of it).  Only when no epoch has
      finished yet is a mid-epoch ``last.ckpt`` written, so there is something to resume;
    * during validation or at the end of an epoch: the epoch finishes, ``last.ckpt`` of that epoch is
      written as usual and training stops (exact resume).

    A second signal gives up at once.  The handlers are installed at ``on_train_start``, after
    Lightning's own SIGTERM handler, which is chained only in multi-process runs (there it stops the
    other ranks; elsewhere it would abort validation halfway).
    """

    def __init__(self, last: LastCheckpoint):
        self.last = last
        self.received: int | None = None
        self.saved: str | None = None  # "mid-epoch" or "epoch-end" once last.ckpt holds the stop state
        self.where = ""
        self._old = {}
        self._chain = {}

    def _handler(self, signum, frame):
        if self.received is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.received = signum
        chained = self._chain.get(signum)
        if callable(chained):
            chained(signum, frame)

    def on_train_start(self, trainer, pl_module):
        self.received, self.saved = None, None
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                continue
            if sig == signal.SIGTERM and trainer.world_size > 1:
                self._chain[sig] = self._old[sig]

    def on_fit_end(self, trainer, pl_module):
        self.restore()

    def restore(self):
        for sig, old in self._old.items():
            if signal.getsignal(sig) == self._handler:  # Lightning may have restored its own already
                signal.signal(sig, old)
        self._old, self._chain = {}, {}

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.received is None or self.saved:
            return
        self.where = f"at epoch {trainer.current_epoch}, step {batch_idx}"
        if not self.last.path.exists():
            self.last.save(trainer)
            self.saved = "mid-epoch"
        else:
            self.saved = "kept"
        self.restore()
        raise TrainingAborted(self.message())

    def on_train_epoch_end(self, trainer, pl_module):
        # LastCheckpoint (the last callback) writes this epoch's last.ckpt after this hook
        if self.received is not None and not self.saved:
            self.where = f"during epoch {trainer.current_epoch}"
            self.saved = "epoch-end"
            trainer.should_stop = True

    def message(self) -> str:
        if self.saved == "mid-epoch":
            what = f"saved {self.last.path} (mid-epoch)"
        elif self.saved == "epoch-end":
            what = f"saved {self.last.path} at the end of the epoch"
        else:
            what = f"kept {self.last.path} of the last finished epoch"
        return (f"received {self.name} {self.where}; {what}; "
                "continue with `flexunet train CONFIG --resume`").replace("  ", " ")
