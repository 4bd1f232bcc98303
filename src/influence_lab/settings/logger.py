"""`logger`: the tracker, one of three variants picked by `logger.name`: W&B (`mode` offline by
default: runs land under the output directory), a local CSV file, or none."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Tag

from .rules import RULE, Settings, one_of

LOGGERS = ("wandb", "csv", "none")
LOGGER_MODES = ("offline", "online", "disabled")


class WandbLogger(Settings):
    name: Literal["wandb"] = "wandb"
    project: str = "influence-lab"
    entity: str | None = None
    mode: Annotated[str, one_of(LOGGER_MODES)] = (
        "offline"  # runs land in <output_dir>/wandb; `wandb sync` uploads them
    )


class CsvLogger(Settings):
    name: Literal["csv"] = "csv"  # metrics only in <run>/csv/metrics.csv


class NoLogger(Settings):
    name: Literal["none"] = "none"  # no tracker; metrics.json is still written


def _logger_name(value):
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return f"<logger:{name}>" if name in LOGGERS else None


LoggerSettings = Annotated[
    Annotated[WandbLogger, Tag("<logger:wandb>")]
    | Annotated[CsvLogger, Tag("<logger:csv>")]
    | Annotated[NoLogger, Tag("<logger:none>")],
    Discriminator(
        _logger_name,
        custom_error_type=RULE,
        custom_error_message="unknown logger",
        custom_error_context={
            "template": "{key} is {value}; allowed values are " + ", ".join(LOGGERS) + ".",
            "value_of": "name",
        },
    ),
]
