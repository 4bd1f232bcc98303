"""Trackers: W&B (offline by default, runs under `<output_dir>/wandb`), a local CSV file, or none.

The local CSV (`<run>/csv/metrics.csv`) is kept whenever a tracker is on, so every number W&B
holds is also on disk. If W&B fails to start, training goes on with the CSV logger and one warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..settings import LoggerSettings, StageSettings
from ..settings.logger import LOGGERS as KINDS  # noqa: F401  (the logger names, declared in settings)
from ..store.paths import output_dir as output_root


class Tracking:
    """The Lightning loggers of one job, plus direct access to the W&B run for images/tables.
    `logger.mode=disabled` keeps only the local CSV."""

    def __init__(
        self,
        logger: LoggerSettings,
        run_dir: Path,
        output_dir: Path,
        stage: str,
        experiment: str,
        name: str,
        config: dict[str, Any],
    ):
        self.loggers: list = []
        self.wandb_run = None
        if logger.name == "none":
            return
        # imported here: Lightning (and torch under it) costs seconds, and the report stage and
        # other runs without a Lightning fit log through this class too
        from pytorch_lightning.loggers import CSVLogger

        self.loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
        if logger.name == "wandb" and logger.mode != "disabled":
            self._start_wandb(logger, output_dir, stage, experiment, name, config)

    def _start_wandb(self, logger, output_dir, stage, experiment, name, config):
        save_dir = Path(output_dir)  # W&B adds its own `wandb/` folder below this
        save_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        from pytorch_lightning.loggers import WandbLogger

        try:
            wandb_logger = WandbLogger(
                project=logger.project,
                entity=logger.entity,
                save_dir=str(save_dir),
                offline=logger.mode == "offline",
                group=experiment,
                job_type=stage,
                name=name,
                config=config,
            )
            # Lightning always passes `anonymous` to wandb.init, which then warns on every run that
            # the setting has no effect; leaving it out changes nothing else
            wandb_logger._wandb_init.pop("anonymous", None)
            self.wandb_run = wandb_logger.experiment  # starts the run now, so failures surface here
            self.loggers.append(wandb_logger)
        except Exception as exc:  # any failure to start W&B: keep training, say so once
            warnings.warn(
                f"W&B could not start ({exc}); logging to the local CSV only.", stacklevel=2
            )
            self.wandb_run = None

    @property
    def wandb_dir(self) -> str | None:
        return getattr(self.wandb_run, "dir", None) and str(Path(self.wandb_run.dir).parent)

    def log_image(self, key: str, png: Path, caption: str = "") -> None:
        """Log a picture; a text listing (samples.txt of a text model) is logged as preformatted
        HTML."""
        if self.wandb_run is not None:
            import html

            import wandb

            if Path(png).suffix == ".png":
                self.wandb_run.log({key: wandb.Image(str(png), caption=caption)})
            else:
                self.wandb_run.log(
                    {key: wandb.Html(f"<pre>{html.escape(Path(png).read_text())}</pre>")}
                )

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Table(columns=columns, data=rows)})

    def log_frame(self, key: str, frame, cell=object) -> None:
        """A DataFrame as a W&B table (cells as `cell`: object keeps numbers, str prints all)."""
        self.log_table(key, list(frame.columns), frame.astype(cell).values.tolist())

    def log_bars(self, key: str, labels: list[str], values: list[float], title: str) -> None:
        """A W&B bar chart (one bar per label) of `values`."""
        if self.wandb_run is not None:
            import wandb

            table = wandb.Table(
                columns=["comparison", "value"],
                data=[list(p) for p in zip(labels, values, strict=True)],
            )
            self.wandb_run.log({key: wandb.plot.bar(table, "comparison", "value", title=title)})

    def summary(self, values: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.summary.update(values)

    def finish(self) -> None:
        for logger in self.loggers:
            logger.finalize("success")
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


@contextmanager
def tracked_run(
    logger: LoggerSettings,
    run_dir: Path,
    job_type: str,
    *,
    output_dir: Path,
    group: str,
    config: dict[str, Any],
    name: str | None = None,
) -> Iterator[Tracking]:
    """The trackers of one job (W&B run grouped by `group`, job type `job_type`, named
    `<job_type>-<run folder>` unless `name` is given; the local CSV), finished however the block
    ends."""
    tracking = Tracking(
        logger,
        run_dir,
        output_dir,
        job_type,
        group,
        name or f"{job_type}-{Path(run_dir).name}",
        config,
    )
    try:
        yield tracking
    finally:
        tracking.finish()


def stage_tracking(
    settings: StageSettings, run_dir, job_type: str, config: dict, name: str | None = None
):
    """`tracked_run` for one stage's run, with the settings' logger, output root and group."""
    return tracked_run(
        settings.logger,
        run_dir,
        job_type,
        output_dir=output_root(settings),
        group=settings.group,
        config=config,
        name=name,
    )
