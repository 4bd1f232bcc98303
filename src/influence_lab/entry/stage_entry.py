"""What every stage shares: validation and error reporting at entry, the settings of upstream
stages, and (from the pieces below) the console and the output root.

A stage function takes its settings (`StageSettings`, validated once by `stage_entry`); called
with a composed config instead (tests, notebooks), it converts it once with `settings_of`. Below
the stages, pieces take typed settings or plain values, never a config."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from omegaconf import DictConfig
from rich.markup import escape

from ..console import console
from ..errors import InfluenceLabError
from ..settings import ReportStageSettings, StageSettings, from_config
from ..store.paths import output_dir
from ..tracking.loggers import stage_tracking
from .validation import SAFE_RESOLVERS, check_resolvers, validate


def stage_entry(fn):
    """Validate the stage's whole config (`validation.validate`) before anything else, then run the
    stage with the settings it gave; turn an `InfluenceLabError` into one red sentence on stderr
    and exit status 2."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig):
        try:
            return fn(validate(cfg, command_line_overrides()))
        except InfluenceLabError as exc:
            console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False
            )  # the message is not markup
            sys.exit(2)

    return wrapper


def command_line_overrides() -> list[str]:
    """The overrides of the running Hydra app's command line, as typed (none outside one)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return []
    return list(OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False))


def compose_stage(config_name: str, overrides: list[str], config_dir: str | None = None):
    """A stage's config composed as the command line would: the package's conf/, plus a user's
    config folder (`--config-dir`) when given; inside a running Hydra app, its search path."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if config_dir:
        overrides = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]", *overrides]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def settings_of(cfg) -> StageSettings | ReportStageSettings:
    """A stage's settings: as they are, or converted once from a composed config."""
    if isinstance(cfg, (StageSettings, ReportStageSettings)):
        return cfg
    return from_config(cfg)


def upstream(settings: StageSettings) -> StageSettings:
    """The settings for the stages this one depends on: `force` recomputes only the stage asked
    for."""
    return settings.replaced({"force": False})


__all__ = [
    "stage_entry",
    "settings_of",
    "compose_stage",
    "command_line_overrides",
    "validate",
    "check_resolvers",
    "SAFE_RESOLVERS",
    "upstream",
    "stage_tracking",
    "output_dir",
    "console",
]
