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
from .samples import draw, draw_prompts, output_seeds, prompt_seeds, sample_grid
from .train import train


def generate(cfg: DictConfig) -> RunDir:
    bundle = load_data(cfg.data)
    model_run = train(upstream(cfg), bundle)
    gcfg = cfg.generate
    if gcfg.get("prompt_count"):
        prompts = draw_prompts(list(bundle.train["caption"]), int(gcfg.prompt_count), gcfg.get("prompt_group"),
                               int(gcfg.get("prompt_seed") or 0))
    else:
        prompts = [str(p) for p in gcfg.prompts]
    if not prompts:
        from ..errors import InfluenceLabError

        raise InfluenceLabError("generate.prompts is empty; give at least one prompt.")
    seeds = output_seeds(int(gcfg.m), int(gcfg.seed))
    per_prompt = prompt_seeds(len(prompts), int(gcfg.m), int(gcfg.seed), int(gcfg.get("seed_stride") or 0))
    spec = {"model_signature": model_run.signature, "prompts": prompts, "seeds": seeds}
    if gcfg.get("seed_stride"):
        spec["prompt_seeds"] = per_prompt
    run = RunDir(output_dir(cfg), "generate", f"{cfg.model.name}-{cfg.data.name}", signature(spec))
    if run.done and not cfg.force:
        reused(run)
        return run
    run.prepare(force=bool(cfg.force))
    model = load_model(model_run.path)
    outputs = sample_grid(model, prompts, per_prompt)
    rows = [
        {"output_id": f"p{i:03d}-s{seed}", "prompt_index": i, "prompt": p, "seed": seed,
         "model_signature": model_run.signature}
        for i, p in enumerate(prompts) for seed in per_prompt[i]
    ]
    table = pd.DataFrame(rows)
    if isinstance(outputs, np.ndarray):
        flat = outputs.reshape(-1, *outputs.shape[2:]).astype(np.float32)
        write_npy(run / "images.npy", flat)
    else:
        table["text"] = [t for row in outputs for t in row]
    atomic_write(run / "outputs.parquet", lambda p: table.to_parquet(p, index=False))
    shown = min(len(prompts), 20)  # the picture shows the first 20 prompts
    picture = draw(outputs[:shown], prompts[:shown], run / ("grid" if isinstance(outputs, np.ndarray) else "samples"),
                   f"{cfg.model.name} on {bundle.name}: {len(seeds)} seeds per prompt")
    scores = quality(bundle, prompts, outputs)
    write_json(run / "quality.json", scores)
    write_json(run / "provenance.json", {**spec, "prompt_seeds": per_prompt, "model_dir": str(model_run.path),
                                         "data_fingerprint": bundle.fingerprint})
    tracking = Tracking(cfg.logger, run.path, output_dir(cfg), "generate", str(cfg.group),
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
