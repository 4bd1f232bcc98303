"""`influence-lab generate`: m outputs for each prompt with fixed seeds, with provenance.

Writes `outputs.parquet` (output_id, prompt, seed, model_signature; `text` for texts),
`images.npy` (N, C, H, W) for images, a picture (`grid.png` or `samples.txt`) and `quality.json`.
The model is found by its train signature and trained first if missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ..data import load_data
from ..models.build import load_model
from ..orchestration.signature import signature
from ..orchestration.store import RunDir, atomic_write, write_json, write_npy
from ..report.quality import quality
from ..tracking.loggers import Tracking
from .common import console, output_dir, reused, stage_entry, upstream
from .samples import draw, output_seeds, sample_grid
from .train import train


def generate(cfg: DictConfig) -> RunDir:
    bundle = load_data(cfg.data)
    model_run = train(upstream(cfg), bundle)
    prompts = [str(p) for p in cfg.generate.prompts]
    if not prompts:
        from ..errors import InfluenceLabError

        raise InfluenceLabError("generate.prompts is empty; give at least one prompt.")
    seeds = output_seeds(int(cfg.generate.m), int(cfg.generate.seed))
    spec = {"model_signature": model_run.signature, "prompts": prompts, "seeds": seeds}
    run = RunDir(output_dir(cfg), "generate", f"{cfg.model.name}-{cfg.data.name}", signature(spec))
    if run.done and not cfg.force:
        reused(run)
        return run
    run.prepare(force=bool(cfg.force))
    model = load_model(model_run.path)
    outputs = sample_grid(model, prompts, seeds)
    rows = [
        {"output_id": f"p{i:03d}-s{seed}", "prompt_index": i, "prompt": p, "seed": seed,
         "model_signature": model_run.signature}
        for i, p in enumerate(prompts) for seed in seeds
    ]
    table = pd.DataFrame(rows)
    if isinstance(outputs, np.ndarray):
        flat = outputs.reshape(-1, *outputs.shape[2:]).astype(np.float32)
        write_npy(run / "images.npy", flat)
    else:
        table["text"] = [t for row in outputs for t in row]
    atomic_write(run / "outputs.parquet", lambda p: table.to_parquet(p, index=False))
    picture = draw(outputs, prompts, run / ("grid" if isinstance(outputs, np.ndarray) else "samples"),
                   f"{cfg.model.name} on {bundle.name}: {len(seeds)} seeds per prompt")
    scores = quality(bundle, prompts, outputs)
    write_json(run / "quality.json", scores)
    write_json(run / "provenance.json", {**spec, "model_dir": str(model_run.path),
                                         "data_fingerprint": bundle.fingerprint})
    tracking = Tracking(cfg.logger, run.path, output_dir(cfg), "generate", str(cfg.experiment),
                        f"generate-{run.path.name}", {**spec, "data_fingerprint": bundle.fingerprint})
    try:
        if picture.suffix == ".png":
            tracking.log_image("generations", picture, "rows: prompts; columns: seeds")
        tracking.log_table("outputs", list(table.columns), table.astype(str).values.tolist())
        tracking.summary(scores)
    finally:
        tracking.finish()
    run.mark_done({"model_signature": model_run.signature})
    shown = ", ".join(f"{k}={v:.3f}" for k, v in scores.items())
    console.print(f"[green]generated[/] {len(table)} outputs -> {run.path}\n  picture: {picture}"
                  + (f"\n  quality: {shown}" if shown else ""), highlight=False)
    return run


run = stage_entry(generate)
