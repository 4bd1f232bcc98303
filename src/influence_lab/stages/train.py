"""`influence-lab train`: fit a model and write its weights, resolved config, metrics and data
fingerprint under `<output_dir>/train/<model>-<data>-<signature>/`."""

from __future__ import annotations

import time

from omegaconf import DictConfig

from ..data import DataBundle, load_data
from ..models.build import build_model, save_model
from ..orchestration.cached import cached
from ..report.figures import draw_samples
from ..store.files import RunDir, write_json
from ..tracking.loggers import check_logger
from ..training.fit import fit
from ..training.members import begin_train_run, train_run
from .common import console, stage_entry, stage_tracking


def train(cfg: DictConfig, bundle: DataBundle | None = None) -> RunDir:
    """Train the model `cfg` describes unless a complete run with its signature exists (another
    process training the same model: wait for it, then reuse its result)."""
    bundle = bundle or load_data(cfg.data)
    built = []

    def check() -> None:  # before anything is written: the model must fit the data
        built.append(build_model(cfg.model, bundle, int(cfg.seed)))
        check_logger(cfg.logger)

    return cached(
        train_run(cfg, bundle),
        bool(cfg.force),
        lambda run: _fit(cfg, bundle, run, built[0]),
        check=check,
    )


def _fit(cfg: DictConfig, bundle: DataBundle, run: RunDir, model) -> dict:
    console.print(
        f"training {cfg.model.name} on {bundle.name} ({len(bundle.train)} items) -> {run.path}",
        highlight=False,
    )
    spec = begin_train_run(run, cfg, bundle)
    with stage_tracking(
        cfg,
        run.path,
        "train",
        {**spec, "signature": run.signature, "data_fingerprint": bundle.fingerprint},
    ) as tracking:
        start = time.perf_counter()
        metrics = fit(
            model, bundle, cfg.model.fit, cfg.trainer, run.path, int(cfg.seed), tracking.loggers
        )
        metrics["fit_seconds"] = time.perf_counter() - start
        save_model(model, run.path)
        grid = draw_samples(
            model.eval(),
            list(cfg.data.prompts),
            int(cfg.data.sample_seeds),
            run / "samples",
            f"{cfg.model.name} on {bundle.name}, after training",
        )
        tracking.log_image("samples", grid)
        tracking.summary({**metrics, "data_fingerprint": bundle.fingerprint})
        metrics["wandb_dir"] = tracking.wandb_dir
    write_json(run / "metrics.json", metrics)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    console.print(f"[green]trained[/] {run.path} ({shown}); samples: {grid}", highlight=False)
    return {"data_fingerprint": bundle.fingerprint}


run = stage_entry(train)
