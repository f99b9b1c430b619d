"""The LightningModule: the science (model, loss, metrics, optimiser). Engineering lives in callbacks."""
from __future__ import annotations

import math
import random

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TrainingAborted
from ..metrics.slices import SegmentationMeter, dice_coef_multiclass
from ..models import create_model
from .losses import build_loss


class SegmentationModule(L.LightningModule):
    """Wraps a registry model.

    Logged every epoch: ``loss``, ``dice_coef_multiclass`` (train) and ``val_loss``,
    ``val_dice_coef_multiclass`` plus per-class hard Dice/IoU (``val_liver_dice_pooled`` ...).
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = create_model(cfg.model)
        self.loss_fn = build_loss(cfg.model.loss)
        self.num_classes = cfg.model.num_classes
        self.class_names = cfg.class_names
        self._val_meter: SegmentationMeter | None = None
        self._train_soft = [0.0, 0]
        self._plateau = None  # ReduceLROnPlateau, stepped here (see on_validation_end)
        self._plateau_state = None  # its state from a checkpoint, applied in configure_optimizers
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _step(self, batch):
        x, y = batch
        logits = self(x).float()
        loss = self.loss_fn(logits, y)
        probs = torch.softmax(logits.detach(), dim=1)
        onehot = F.one_hot(y, self.num_classes).permute(0, 3, 1, 2).float()
        soft = dice_coef_multiclass(onehot, probs)
        return loss, probs, soft

    def training_step(self, batch, batch_idx):
        loss, _, soft = self._step(batch)
        if not torch.isfinite(loss):
            raise TrainingAborted(f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, "
                                  f"step {batch_idx}; nothing saved: last.ckpt and best.pt in "
                                  f"{self.cfg.train.model_dir} keep the last good epoch (lower [model] "
                                  "learning_rate or set clipvalue)")
        n = batch[0].shape[0]
        self.log("loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("dice_coef_multiclass", soft, on_step=False, on_epoch=True, prog_bar=True, batch_size=n,
                 sync_dist=True)
        return loss

    def on_validation_epoch_start(self):
        self._val_meter = SegmentationMeter(self.num_classes)

    def validation_step(self, batch, batch_idx):
        loss, probs, soft = self._step(batch)
        n = batch[0].shape[0]
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_dice_coef_multiclass", soft, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self._val_meter.update(probs.argmax(1).cpu().numpy(), batch[1].cpu().numpy())

    def on_validation_epoch_end(self):
        if self._val_meter is None or self._val_meter.n_images == 0:
            return
        res = self._val_meter.compute(self.class_names)
        for k, v in res.items():
            if k.endswith("_images") or (isinstance(v, float) and math.isnan(v)):
                continue
            self.log(f"val_{k}", float(v), sync_dist=True)

    # ---- learning-rate schedules ----------------------------------------------------------------
    def poly_lr(self, trainer) -> float:
        """nnU-Net's poly decay, ``lr0 * (1 - progress)^0.9``.  progress is epochs done over ``epochs``,
        or the time trained over ``max_time_minutes`` (the TimeBudget callback's clock, which travels
        with last.ckpt) when that is further along."""
        from .callbacks import TimeBudget

        p = trainer.current_epoch / max(self.cfg.train.epochs, 1)
        budget = next((c for c in trainer.callbacks if isinstance(c, TimeBudget)), None)
        if budget is not None:
            p = max(p, budget.elapsed() / budget.budget)
        return self.cfg.model.learning_rate * (1.0 - min(p, 1.0)) ** 0.9

    def on_train_epoch_start(self):
        if self.cfg.train.lr_schedule != "poly":
            return
        lr = float(self.trainer.strategy.broadcast(self.poly_lr(self.trainer), src=0))  # rank 0's clock
        for opt in self.trainer.optimizers:
            for g in opt.param_groups:
                g["lr"] = lr

    def configure_optimizers(self):
        m = self.cfg.model
        opt_cls = torch.optim.AdamW if m.optimizer == "AdamW" else torch.optim.Adam
        opt = opt_cls(self.parameters(), lr=m.learning_rate, weight_decay=m.weight_decay)
        if not self.cfg.train.learning_rate_reducer or self.cfg.train.lr_schedule != "plateau":
            return opt
        # The plateau scheduler is stepped by this module at the end of validation, not by Lightning:
        # Lightning steps it only *after* on_train_epoch_end (where last.ckpt is written) and skips that step
        # when resuming, so a resumed run would lose one scheduler step (and its LR reduction).
        self._plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=self.cfg.train.reducer_factor, patience=self.cfg.train.reducer_patience)
        if self._plateau_state is not None:
            self._plateau.load_state_dict(self._plateau_state)
            self._plateau_state = None
        return opt

    def on_validation_end(self):
        if self._plateau is None or self.trainer.sanity_checking:
            return
        val = self.trainer.callback_metrics.get("val_loss")
        if val is not None:
            self._plateau.step(float(val))

    # exact resume: RNG state travels with the checkpoint
    def on_save_checkpoint(self, checkpoint):
        checkpoint["flexunet_meta"] = {"model": self.cfg.model.model}
        if self._plateau is not None:
            checkpoint["flexunet_plateau"] = self._plateau.state_dict()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["rng_state"] = {"torch": torch.get_rng_state(),
                                   "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                             float(cached)],
                                   "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on the GPU draws from these
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint):
        self._plateau_state = checkpoint.get("flexunet_plateau")
        if self._plateau_state is None and len(checkpoint.get("lr_schedulers") or []) == 1:
            self._plateau_state = checkpoint["lr_schedulers"][0]  # written while Lightning stepped it
        rng = checkpoint.get("rng_state")
        if rng:
            torch.set_rng_state(rng["torch"])
            name, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            random.setstate(rng["python"])
            cuda = rng.get("cuda")
            if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
