"""What every stage shares: error reporting, output paths, the train signature, tracking."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ..data import DataBundle, load_data
from ..errors import InfluenceLabError
from ..orchestration.signature import signature
from ..orchestration.store import RunDir

console = Console(stderr=True, width=None if sys.stderr.isatty() else 130)


def stage_entry(fn):
    """Turn an `InfluenceLabError` into one red sentence on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig):
        try:
            return fn(cfg)
        except InfluenceLabError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            sys.exit(2)

    return wrapper


def upstream(cfg: DictConfig) -> DictConfig:
    """The config for the stages this one depends on: `force` recomputes only the stage asked for."""
    out = cfg.copy()
    out.force = False
    return out


def output_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.paths.output_dir)).expanduser().resolve()


def train_spec(cfg: DictConfig, bundle: DataBundle) -> dict:
    """Everything that determines a trained model: data (not the prompts), model, seed, and the
    fingerprint of the training items."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("prompts", None)
    data["exclude_ids"] = sorted(bundle.excluded)
    return {"data": data, "model": OmegaConf.to_container(cfg.model, resolve=True), "seed": int(cfg.seed),
            "train_fingerprint": bundle.fingerprint}


def train_run(cfg: DictConfig, bundle: DataBundle) -> RunDir:
    return RunDir(output_dir(cfg), "train", f"{cfg.model.name}-{cfg.data.name}", signature(train_spec(cfg, bundle)))


def reused(run: RunDir) -> None:
    console.print(f"[green]reusing[/] {run.stage} result {run.path} (signature {run.signature}); "
                  f"force=true recomputes it", highlight=False)


__all__ = ["stage_entry", "upstream", "output_dir", "train_spec", "train_run", "reused", "load_data", "console"]
