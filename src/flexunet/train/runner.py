"""``flexunet train``: build datasets, module, callbacks and the Lightning Trainer from a Config."""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

from ..errors import DataError, FlexUNetError, TrainingAborted, unwrap_worker_error
from ..io.atomic import atomic_copytree


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*treespec.*")


def build_datasets(cfg):
    """Train and validation datasets: 2D slices from folders, or straight from volumes."""
    if cfg.dataset.class_name == "VolumeSliceDataset":
        from ..data.volume_dataset import build_volume_datasets

        return build_volume_datasets(cfg)
    from ..data.dataset2d import SliceDataset
    from ..data.images import find_pairs

    t = cfg.train
    train_pairs = find_pairs(t.images_dir, t.masks_dir, cfg.mask.mask_file_format)
    if not cfg.valid.images_dir or not cfg.valid.masks_dir:
        raise DataError(f"{cfg.source}: [valid] images_dir and masks_dir are required; "
                        "expected folders of validation images and masks")
    valid_pairs = find_pairs(cfg.valid.images_dir, cfg.valid.masks_dir, cfg.mask.mask_file_format)
    from ..data.lesions import training_augment
    from ..data.patches import patch_transform

    augment = training_augment(cfg)
    return (SliceDataset(train_pairs, cfg, augment=augment, seed=t.seed, crop=patch_transform(cfg)),
            SliceDataset(valid_pairs, cfg, augment=None, seed=t.seed))


def _check_writable(folder: str) -> None:
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".flexunet-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"{folder}: output folder cannot be written ({exc.strerror or exc}); "
                        "expected a writable folder") from None


#: the lock file a training holds in its [train] model_dir
LOCK_NAME = "flexunet-train.lock"


def _launched_rank() -> int:
    """This process's rank when a launcher (Lightning's DDP subprocesses, torchrun) started it, else 0."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(var, "0")
        if value.strip().isdigit() and int(value) != 0:
            return int(value)
    return 0


def train(cfg, resume: bool = False, quiet: bool = False) -> dict:
    """Train while holding the lock of ``[train] model_dir``, so two trainings never share it.

    Args:
        cfg: the config.
        resume: continue from ``model_dir/last.ckpt``.
        quiet: no progress output.

    Returns:
        A summary dict: epochs run, best val_loss, paths, seconds.

    Raises:
        DataError: when another live training holds ``model_dir`` (the lock file
            ``model_dir/flexunet-train.lock`` names its PID, host and start time), or on bad input.
        TrainingAborted: on a non-finite loss or a signal.
    """
    import shlex
    import sys

    from ..io.lock import folder_lock

    _check_writable(cfg.train.model_dir)
    if _launched_rank() != 0:  # the rank-0 process of this run holds the lock
        return _train_unlocked(cfg, resume=resume, quiet=quiet)
    with folder_lock(cfg.train.model_dir, LOCK_NAME, "[train] model_dir", command=shlex.join(sys.argv)):
        return _train_unlocked(cfg, resume=resume, quiet=quiet)


def _train_unlocked(cfg, resume: bool = False, quiet: bool = False) -> dict:
    """Train; returns a summary dict (epochs run, best val_loss, paths, seconds)."""
    import lightning as L

    from ..data.dataset2d import build_dataloader
    from ..infer.precision import trainer_precision
    from .callbacks import (AugmentState, BestWeights, BreakFile, EMAWeights, EpochChangeInfer, EpochHistory,
                            LastCheckpoint, SignalStop, TimeBudget)
    from .module import SegmentationModule

    _quiet_lightning()
    t = cfg.train
    for folder in (t.model_dir, t.eval_dir):
        _check_writable(folder)
    last_path = Path(t.model_dir) / "last.ckpt"
    if resume and not last_path.exists():
        raise DataError(f"{last_path}: no checkpoint to resume from; expected a previous run of "
                        "`flexunet train` with the same [train] model_dir")
    if t.create_backup and not resume and any(Path(t.model_dir).iterdir()):
        backup = Path(str(Path(t.model_dir)).rstrip("/") + time.strftime("_backup_%Y%m%d_%H%M%S"))
        atomic_copytree(t.model_dir, backup, ignore=(LOCK_NAME,))  # the lock is this run's, not the backup's

    L.seed_everything(t.seed, workers=True, verbose=False)
    train_ds, valid_ds = build_datasets(cfg)
    from ..data.sampling import build_sampler

    sampler, sampler_msg = build_sampler(train_ds, t.oversample_class, t.oversample_fraction, t.seed)
    if sampler_msg and not quiet:
        print(sampler_msg)
    train_dl = build_dataloader(train_ds, t.batch_size, shuffle=True, num_workers=t.num_workers, drop_last=False,
                                sampler=sampler)
    valid_dl = build_dataloader(valid_ds, t.batch_size, shuffle=False, num_workers=t.num_workers)
    module = SegmentationModule(cfg)
    from ..models.checkpoint import load_weights_into

    if resume:
        # refuse a corrupt, unsafe or other-architecture last.ckpt with a one-line CheckpointError
        # before Lightning loads it (also with weights_only=True, below)
        load_weights_into(module.model, last_path, cfg.model.model)
    elif cfg.model.pretrained:
        load_weights_into(module.model, cfg.model.pretrained, cfg.model.model)
    if cfg.model.show_summary and not quiet:
        n = sum(p.numel() for p in module.model.parameters())
        print(f"{cfg.model.model}: {n:,} parameters")

    last = LastCheckpoint(cfg)
    best = BestWeights(cfg)
    breaker = BreakFile(cfg)
    signals = SignalStop(last)
    # order matters: last.ckpt is written after the history and the break file have seen the epoch
    callbacks = [EpochHistory(cfg), best, breaker, signals, AugmentState(train_ds)]
    if t.ema_decay:
        callbacks.append(EMAWeights(t.ema_decay))  # after BestWeights: best.pt gets the average
    if t.patience > 0:
        callbacks.append(L.pytorch.callbacks.EarlyStopping(monitor="val_loss", patience=t.patience, mode="min"))
    if t.epoch_change_infer:
        callbacks.append(EpochChangeInfer(cfg))
    if not quiet:
        callbacks.append(L.pytorch.callbacks.TQDMProgressBar(leave=True))
    if t.max_time_minutes:
        callbacks.append(TimeBudget(t.max_time_minutes))
    callbacks.append(last)

    precision = trainer_precision(t.precision, t.accelerator)
    trainer = L.Trainer(
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=precision,
        gradient_clip_val=cfg.model.clipvalue,
        gradient_clip_algorithm="value" if cfg.model.clipvalue else None,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not quiet,
        enable_model_summary=False,
        limit_train_batches=t.max_steps_per_epoch if t.max_steps_per_epoch else 1.0,
        num_sanity_val_steps=0,
        deterministic=False,
        default_root_dir=t.model_dir,
    )
    start = time.perf_counter()
    try:
        trainer.fit(module, train_dl, valid_dl, ckpt_path=str(last_path) if resume else None,
                    weights_only=True if resume else None)
    except FlexUNetError as exc:
        # an error raised in a DataLoader worker arrives wrapped in its traceback text: re-raise the one line
        plain = unwrap_worker_error(exc)
        if plain is exc:
            raise
        raise plain from exc
    except (Exception, SystemExit) as exc:
        # after SIGINT/SIGTERM: Lightning's SIGTERM exit (multi-process runs), a second signal, or a
        # DataLoader worker killed by the same Ctrl-C all end here
        if signals.received is None:
            raise
        signals.where = signals.where or f"during epoch {trainer.current_epoch}"
        raise TrainingAborted(signals.message()) from exc
    finally:
        signals.restore()
    if signals.received is not None:
        raise TrainingAborted(signals.message())
    seconds = time.perf_counter() - start
    return {"epochs": trainer.current_epoch, "best_val_loss": best.best, "best": str(best.path),
            "last": str(last.path), "seconds": seconds, "precision": precision,
            "is_global_zero": trainer.is_global_zero}
