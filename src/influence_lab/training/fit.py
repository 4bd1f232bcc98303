"""Fit one model with a Lightning Trainer, resuming from the run's last checkpoint if present.

Checkpoints are written atomically with a SHA-256 beside them and loaded with weights_only=True;
one that fails its hash is discarded (training starts over) instead of being resumed. A loss that
stops being finite ends the fit with an error naming the run."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..console import show_progress
from ..data import DataBundle
from ..errors import InfluenceLabError
from ..models.protocol import GenerativeModel
from ..settings import FitSettings, TrainerSettings
from ..store.files import atomic_write, read_json, sha256, write_json, write_text
from .batches import loader

for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Lightning 2.6 on torch 2.13 warns about its own use of a torch pytree API on every fit
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# with slurm-client installed, Lightning warns on every fit outside a job that srun is unused
warnings.filterwarnings(
    "ignore", message=r".*The `srun` command is available on your system but is not used.*"
)


class Snapshots(pl.Callback):
    """Save the weights and learning rate at `count` evenly spaced epochs (TracIn's checkpoints)
    under `<run>/snapshots/`, listed in `snapshots/index.json`."""

    def __init__(self, folder: Path, count: int, max_epochs: int):
        self.folder = Path(folder)
        self.epochs = sorted({max(1, round(max_epochs * (i + 1) / count)) for i in range(count)})

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch not in self.epochs:
            return
        name = f"epoch{epoch:04d}.pt"
        atomic_write(self.folder / name, lambda p: torch.save(pl_module.state_dict(), p))
        index = (
            read_json(self.folder / "index.json") if (self.folder / "index.json").exists() else []
        )
        index = [e for e in index if e["epoch"] != epoch]
        index.append(
            {"epoch": epoch, "file": name, "lr": float(trainer.optimizers[0].param_groups[0]["lr"])}
        )
        write_json(self.folder / "index.json", sorted(index, key=lambda e: e["epoch"]))


class NonFiniteLoss(InfluenceLabError):
    """A training loss became NaN or infinite."""


class HashedCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed, with `<file>.sha256` beside
    them, and read back with weights_only=True (no code runs while loading)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        def write(tmp: Path) -> None:
            torch.save(checkpoint, tmp)
            # the hash goes down first: a kill between the two writes leaves a checkpoint whose hash
            # does not match, which is discarded, never one that is trusted without a hash
            # (the epoch rides along, so a resume can say where it starts without loading the file
            # twice)
            write_text(Path(f"{path}.sha256"), f"{sha256(tmp)} {checkpoint.get('epoch')}\n")

        atomic_write(Path(path), write)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        if not checkpoint_intact(Path(path)):
            raise InfluenceLabError(
                f"checkpoint {path} does not match its recorded SHA-256; delete it to start over."
            )
        return torch.load(
            path, map_location=map_location or (lambda storage, loc: storage), weights_only=True
        )


def _sidecar(path: Path) -> list[str]:
    """The `<hash> <epoch>` recorded beside a checkpoint (empty if there is none)."""
    stored = Path(f"{path}.sha256")
    return stored.read_text().split() if stored.is_file() else []


def checkpoint_intact(path: Path) -> bool:
    recorded = _sidecar(path)
    return path.is_file() and bool(recorded) and recorded[0] == sha256(path)


def resume_point(run_dir: Path, name: str) -> str | None:
    """The run's last checkpoint if it is intact; a truncated, altered or unhashed one is removed
    with a warning, so the fit starts over rather than resume from bad state."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not last.exists():
        return None
    if checkpoint_intact(last):
        epoch = (_sidecar(last)[1:] or [None])[0]
        print(f"{name}: resuming from {last} (epoch {epoch})", file=sys.stderr, flush=True)
        return str(last)
    warnings.warn(
        f"{last} does not match its recorded SHA-256 (truncated or altered); training {name} "
        f"from the start instead of resuming.",
        stacklevel=2,
    )
    last.unlink()
    return None


class LastCheckpoint(pl.Callback):
    """Save `checkpoints/last.ckpt` at the end of an epoch when `every_s` seconds have passed since
    the last save, and after the last epoch: what a killed fit resumes from. (Lightning's
    ModelCheckpoint with save_top_k=0 writes `last.ckpt` only when the fit ends.) A large
    checkpoint (a pack of 40 fashion VAEs writes 270 MB) waits longer: saving takes at most
    MAX_SHARE of the fit's time, so a pack does arithmetic, not I/O, between saves."""

    MAX_SHARE = 0.05

    def __init__(self, folder: Path, every_s: float):
        self.path = Path(folder) / "last.ckpt"
        self.every_s = float(every_s)
        self.wait_s = self.every_s
        self._saved = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        last_epoch = trainer.current_epoch + 1 >= trainer.max_epochs
        if last_epoch or time.monotonic() - self._saved >= self.wait_s:
            start = time.monotonic()
            trainer.save_checkpoint(self.path)
            took = time.monotonic() - start
            self.wait_s = max(self.every_s, took * (1 - self.MAX_SHARE) / self.MAX_SHARE)
            self._saved = time.monotonic()


class FiniteLoss(pl.Callback):
    """Stop the fit with a clear error when the training loss is NaN or infinite."""

    def __init__(self, name: str):
        self.name = name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(torch.isfinite(loss).all()):
            raise NonFiniteLoss(
                f"training {self.name} stopped: the loss is {float(loss)} at epoch "
                f"{trainer.current_epoch}, batch {batch_idx}; lower model.lr or "
                f"check the data for NaN values."
            )


def make_trainer(
    trainer: TrainerSettings,
    max_epochs: int,
    run_dir: Path,
    loggers,
    snapshots: int = 0,
    name: str = "",
) -> pl.Trainer:
    callbacks = [LastCheckpoint(Path(run_dir) / "checkpoints", trainer.checkpoint_every_s)]
    if snapshots:
        callbacks.append(Snapshots(Path(run_dir) / "snapshots", snapshots, max_epochs))
    if name:
        callbacks.append(FiniteLoss(name))
    progress = trainer.progress_bar and show_progress()  # rich, and only on a terminal
    if progress:
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=False, console_kwargs={"stderr": True}))
    plugins = [HashedCheckpointIO()]
    if (
        "SLURM_JOB_ID" in os.environ
    ):  # inside a submitit job: submitit, not Lightning, handles requeueing
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))
    return pl.Trainer(
        plugins=plugins,
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        precision=trainer.precision,
        deterministic=trainer.deterministic,
        max_epochs=max_epochs,
        logger=loggers or False,
        callbacks=callbacks,
        enable_checkpointing=False,  # LastCheckpoint saves what a resume needs
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
    )


def fit(
    model: GenerativeModel,
    bundle: DataBundle,
    fit_settings: FitSettings,
    trainer_settings: TrainerSettings,
    run_dir: Path,
    seed: int,
    loggers=None,
) -> dict[str, float]:
    """Train `model` on `bundle.train` (validating on `bundle.val`); return the final metrics."""
    pl.seed_everything(seed, workers=True, verbose=False)
    model.noise_seed = int(seed)
    if trainer_settings.num_threads:
        torch.set_num_threads(trainer_settings.num_threads)
    train = loader(bundle.train, fit_settings.batch_size, shuffle=True, seed=seed)
    val = loader(bundle.val, 512) if len(bundle.val) else None
    name = Path(run_dir).name
    trainer = make_trainer(
        trainer_settings,
        fit_settings.max_epochs,
        run_dir,
        loggers,
        fit_settings.snapshots or 0,
        name=name,
    )
    trainer.fit(model, train, val, ckpt_path=resume_point(run_dir, name), weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["epochs"] = int(trainer.current_epoch)
    metrics["steps"] = int(trainer.global_step)
    return metrics


def fit_pack(
    models: list[GenerativeModel],
    train,
    member_items,
    seeds: list[int],
    fit_settings: FitSettings,
    trainer_settings: TrainerSettings,
    run_dir: Path,
    loggers=None,
    record_seen: bool = False,
    track=None,
):
    """Train `models` together as one pack (see `training.pack`): member m on the rows
    `member_items[m]` of `train` with seed `seeds[m]`. The trained weights are copied back into
    `models`; the pack is returned (per-member loss histories, items seen, and the measured loss
    of the rows `track` after every epoch)."""
    from .pack import Pack

    pl.seed_everything(int(seeds[0]), workers=True, verbose=False)
    if trainer_settings.num_threads:
        torch.set_num_threads(trainer_settings.num_threads)
    pack = Pack(
        models,
        train,
        member_items,
        seeds,
        fit_settings.batch_size,
        fit_settings.max_epochs,
        record_seen,
        track,
    )
    trainer = make_trainer(trainer_settings, fit_settings.max_epochs, run_dir, loggers)
    trainer.fit(
        pack, ckpt_path=resume_point(run_dir, f"pack {Path(run_dir).name}"), weights_only=True
    )
    pack.unpack(models)
    for model, seed in zip(models, seeds, strict=True):
        model.noise_seed = int(seed)
    return pack
