"""What every stage shares: error reporting, the config of upstream stages, and (imported from the
pieces below) the console, output paths and train results."""

from __future__ import annotations

import functools
import re
import sys

from omegaconf import DictConfig, OmegaConf
from rich.markup import escape

from ..checks import check_settings
from ..data import load_data
from ..errors import InfluenceLabError
from ..orchestration.cached import reused
from ..orchestration.paths import output_dir
from ..tracking.console import console
from ..training.members import train_run, train_spec


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


__all__ = ["stage_entry", "upstream", "output_dir", "train_spec", "train_run", "reused", "load_data", "console"]
