"""What every stage shares: error reporting, output paths, the train signature, tracking."""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ..checks import check_settings
from ..data import DataBundle, load_data
from ..errors import InfluenceLabError
from ..orchestration.paths import check_name
from ..orchestration.signature import signature
from ..orchestration.store import RunDir

console = Console(stderr=True, width=None if sys.stderr.isatty() else 130)


def stage_entry(fn):
    """Turn an `InfluenceLabError` into one red sentence on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig):
        try:
            check_resolvers(cfg)
            check_settings(cfg)
            return fn(cfg)
        except InfluenceLabError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)  # the message is not markup
            sys.exit(2)

    return wrapper


# OmegaConf's and Hydra's own resolvers; none of them runs code. influence-lab registers none.
SAFE_RESOLVERS = ("oc.env", "oc.select", "oc.decode", "oc.create", "oc.deprecated", "oc.dict.keys",
                  "oc.dict.values", "now", "hydra", "python_version")
_RESOLVER = re.compile(r"(?<!\\)\$\{\s*([^\s:{}]+)\s*:")


def check_resolvers(cfg: DictConfig) -> None:
    """Refuse any interpolation `${name:...}` whose resolver is not one of SAFE_RESOLVERS, before
    anything is resolved (OmegaConf would refuse an unregistered one too, with a traceback)."""

    def walk(node, key: str):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, str):
            bad = [r for r in _RESOLVER.findall(node) if r not in SAFE_RESOLVERS]
            if bad:
                raise InfluenceLabError(
                    f"{key} uses the resolver '{bad[0]}' ({node}); influence-lab evaluates no code in its "
                    f"config, and the resolvers allowed are {', '.join(SAFE_RESOLVERS)}."
                )

    walk(OmegaConf.to_container(cfg, resolve=False), "")


def upstream(cfg: DictConfig) -> DictConfig:
    """The config for the stages this one depends on: `force` recomputes only the stage asked for."""
    out = cfg.copy()
    out.force = False
    return out


def output_dir(cfg: DictConfig) -> Path:
    """The root every result is written under. `model.name` and `data.name` name the result
    directories below it, so they must be plain file-name components."""
    for setting in ("model.name", "data.name"):
        value = OmegaConf.select(cfg, setting)
        if value is not None:
            check_name(value, setting)
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
