"""`influence-lab train`: fit a model and write its weights, resolved config, metrics and data
fingerprint under `<output_dir>/train/<model>-<data>-<signature>/`."""

from __future__ import annotations

import time

from ..data import DataBundle, load_data
from ..entry.stage_entry import console, settings_of, stage_entry, stage_tracking
from ..models.build import build_model, save_model
from ..reporting.figures import draw_samples
from ..settings import StageSettings
from ..store.cached import cached
from ..store.files import RunDir, write_json
from ..store.paths import output_dir
from ..training.fit import fit
from ..training.members import begin_train_run, train_run


def train(settings: StageSettings, bundle: DataBundle | None = None) -> RunDir:
    """Train the model `settings` describe unless a complete run with its signature exists (another
    process training the same model: wait for it, then reuse its result)."""
    settings = settings_of(settings)
    bundle = bundle or load_data(settings.data)
    built = []

    def check() -> None:  # before anything is written: the model must fit the data
        built.append(build_model(settings.model, bundle, settings.seed, output_dir(settings)))

    return cached(
        train_run(settings, bundle),
        settings.force,
        lambda run: _fit(settings, bundle, run, built[0]),
        check=check,
    )


def _fit(settings: StageSettings, bundle: DataBundle, run: RunDir, model) -> dict:
    console.print(
        f"training {settings.model.name} on {bundle.name} ({len(bundle.train)} items) "
        f"-> {run.path}",
        highlight=False,
    )
    spec = begin_train_run(run, settings, bundle)
    with stage_tracking(
        settings,
        run.path,
        "train",
        {**spec, "signature": run.signature, "data_fingerprint": bundle.fingerprint},
    ) as tracking:
        start = time.perf_counter()
        metrics = fit(
            model,
            bundle,
            settings.model.fit,
            settings.trainer,
            run.path,
            settings.seed,
            tracking.loggers,
        )
        metrics["fit_seconds"] = time.perf_counter() - start
        save_model(model, run.path)
        grid = draw_samples(
            model.eval(),
            list(settings.data.prompts),
            settings.data.sample_seeds,
            run / "samples",
            f"{settings.model.name} on {bundle.name}, after training",
        )
        tracking.log_image("samples", grid)
        tracking.summary({**metrics, "data_fingerprint": bundle.fingerprint})
        metrics["wandb_dir"] = tracking.wandb_dir
    write_json(run / "metrics.json", metrics)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    console.print(f"[green]trained[/] {run.path} ({shown}); samples: {grid}", highlight=False)
    return {"data_fingerprint": bundle.fingerprint}


run = stage_entry(train)
