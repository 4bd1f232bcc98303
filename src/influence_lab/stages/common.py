"""What every stage shares: validation and error reporting at entry, the config of upstream stages,
and (from the pieces below) the console and the output root."""

from __future__ import annotations

import functools
import sys

from omegaconf import DictConfig
from rich.markup import escape

from ..errors import InfluenceLabError
from ..store.paths import output_dir
from ..tracking.console import console
from ..tracking.loggers import tracked_run
from .validation import SAFE_RESOLVERS, check_resolvers, validate


def stage_entry(fn):
    """Validate the stage's whole config (`validation.validate`) before anything else, then run the
    stage; turn an `InfluenceLabError` into one red sentence on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig):
        try:
            validate(cfg)
            return fn(cfg)
        except InfluenceLabError as exc:
            console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False
            )  # the message is not markup
            sys.exit(2)

    return wrapper


def upstream(cfg: DictConfig) -> DictConfig:
    """The config for the stages this one depends on: `force` recomputes only the stage asked
    for."""
    out = cfg.copy()
    out.force = False
    return out


def stage_tracking(cfg: DictConfig, run_dir, job_type: str, config: dict, name: str | None = None):
    """`tracked_run` for one stage's run, with the stage config's logger, output root and group."""
    return tracked_run(
        cfg.logger,
        run_dir,
        job_type,
        output_dir=output_dir(cfg),
        group=str(cfg.group),
        config=config,
        name=name,
    )


__all__ = [
    "stage_entry",
    "validate",
    "check_resolvers",
    "SAFE_RESOLVERS",
    "upstream",
    "stage_tracking",
    "output_dir",
    "console",
]
