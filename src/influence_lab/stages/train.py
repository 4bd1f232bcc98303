"""`influence-lab train`: fit a model and write its weights, resolved config, metrics and data
fingerprint under `<output_dir>/train/<model>-<data>-<signature>/`."""

from __future__ import annotations

import time

from omegaconf import DictConfig, OmegaConf

from ..data import DataBundle, load_data
from ..models.build import build_model, save_model
from ..orchestration.store import RunDir, write_json, write_text
from ..tracking.loggers import Tracking, check_logger
from ..training.fit import fit
from .common import console, output_dir, reused, stage_entry, train_run, train_spec
from .samples import draw_samples


def begin_train_run(run: RunDir, cfg: DictConfig, bundle: DataBundle) -> dict:
    """Write what a train result records before fitting: resolved config and data fingerprint."""
    write_text(run / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    data_info = {"fingerprint": bundle.fingerprint, "full_fingerprint": bundle.full_fingerprint,
                 "n_train": len(bundle.train), "n_val": len(bundle.val), "excluded": sorted(bundle.excluded)}
    write_json(run / "fingerprint.json", data_info)
    return train_spec(cfg, bundle)


def train(cfg: DictConfig, bundle: DataBundle | None = None) -> RunDir:
    """Train the model `cfg` describes unless a complete run with its signature exists."""
    bundle = bundle or load_data(cfg.data)
    run = train_run(cfg, bundle)
    with run.claim():  # another process training the same model: wait for it, then reuse its result
        return _train(cfg, bundle, run)


def _train(cfg: DictConfig, bundle: DataBundle, run: RunDir) -> RunDir:
    if run.done and not cfg.force:
        reused(run)
        return run
    model = build_model(cfg.model, bundle, int(cfg.seed))  # checks the model fits the data
    check_logger(cfg.logger)
    run.prepare(force=bool(cfg.force))
    console.print(f"training {cfg.model.name} on {bundle.name} ({len(bundle.train)} items) -> {run.path}",
                  highlight=False)
    spec = begin_train_run(run, cfg, bundle)
    tracking = Tracking(cfg.logger, run.path, output_dir(cfg), "train", str(cfg.group),
                        f"train-{run.path.name}", {**spec, "signature": run.signature,
                                                   "data_fingerprint": bundle.fingerprint})
    try:
        start = time.perf_counter()
        metrics = fit(model, bundle, cfg.model.fit, cfg.trainer, run.path, int(cfg.seed), tracking.loggers)
        metrics["fit_seconds"] = time.perf_counter() - start
        save_model(model, run.path)
        grid = draw_samples(model.eval(), list(cfg.data.prompts), int(cfg.data.sample_seeds), run / "samples",
                            f"{cfg.model.name} on {bundle.name}, after training")
        tracking.log_image("samples", grid)
        tracking.summary({**metrics, "data_fingerprint": bundle.fingerprint})
        metrics["wandb_dir"] = tracking.wandb_dir
    finally:
        tracking.finish()
    write_json(run / "metrics.json", metrics)
    run.mark_done({"data_fingerprint": bundle.fingerprint})
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    console.print(f"[green]trained[/] {run.path} ({shown}); samples: {grid}", highlight=False)
    return run


run = stage_entry(train)
