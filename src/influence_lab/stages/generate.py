"""`influence-lab generate`: m outputs for each prompt with fixed seeds, with provenance.

Writes `outputs.parquet` (output_id, prompt, seed, model_signature; `text` for texts),
`images.npy` (N, C, H, W) for images, a picture (`grid.png` or `samples.txt`) and `quality.json`.
The model is found by its train signature and trained first if missing.
"""

from __future__ import annotations

import numpy as np

from ..data import DataBundle, load_data
from ..entry.stage_entry import (
    console,
    output_dir,
    settings_of,
    stage_entry,
    stage_tracking,
    upstream,
)
from ..errors import InfluenceLabError
from ..models.build import load_model
from ..models.sampling import (
    draw_prompts,
    output_seeds,
    prompt_seeds,
    sample_grid,
    use_sampling,
)
from ..reporting.figures import draw
from ..reporting.quality import quality
from ..settings import StageSettings
from ..store.cached import cached, result_dir
from ..store.files import RunDir, write_json
from ..store.records import GenerateProvenance, write_outputs
from .train import train


def generate(settings: StageSettings) -> RunDir:
    settings = settings_of(settings)
    bundle = load_data(settings.data)
    model_run = train(upstream(settings), bundle)
    gen = settings.generate
    if gen.prompt_count:
        prompts = draw_prompts(
            list(bundle.train["caption"]), gen.prompt_count, gen.prompt_group, gen.prompt_seed
        )
    else:
        prompts = [str(p) for p in gen.prompts]
    if not prompts:
        raise InfluenceLabError("generate.prompts is empty; give at least one prompt.")
    seeds = output_seeds(gen.m, gen.seed)
    per_prompt = prompt_seeds(len(prompts), gen.m, gen.seed, gen.seed_stride)
    spec = {"model_signature": model_run.signature, "prompts": prompts, "seeds": seeds}
    if gen.seed_stride:
        spec["prompt_seeds"] = per_prompt
    sampling = settings.model.sampling_args()  # not in the train signature: hashed here
    if sampling:
        spec["sampling"] = {k: settings.given("model").get(k, v) for k, v in sampling.items()}
    provenance = GenerateProvenance(
        model_signature=model_run.signature,
        model_dir=str(model_run.path),
        prompts=prompts,
        seeds=seeds,
        prompt_seeds=per_prompt,
        data_fingerprint=bundle.fingerprint,
    )
    run = result_dir(settings, "generate", spec)
    return cached(run, settings.force, lambda run: _sample(settings, bundle, run, provenance, spec))


def _sample(
    cfg: StageSettings, bundle: DataBundle, run: RunDir, provenance: GenerateProvenance, spec: dict
) -> dict:
    prompts = provenance.prompts
    model = use_sampling(load_model(provenance.model_dir), cfg.model)
    outputs = sample_grid(model, prompts, provenance.prompt_seeds)
    table = write_outputs(run.path, provenance, outputs)
    shown = min(len(prompts), 20)  # the picture shows the first 20 prompts
    picture = draw(
        outputs[:shown],
        prompts[:shown],
        run / ("grid" if isinstance(outputs, np.ndarray) else "samples"),
        f"{cfg.model.name} on {bundle.name}: {len(provenance.seeds)} seeds per prompt",
    )
    scores = quality(bundle, prompts, outputs, output_dir(cfg))
    write_json(run / "quality.json", scores)
    provenance.write(run.path)
    with stage_tracking(
        cfg,
        run.path,
        "generate",
        {**spec, "data_fingerprint": bundle.fingerprint},
    ) as tracking:
        if picture.suffix == ".png":
            tracking.log_image("generations", picture, "rows: prompts; columns: seeds")
        tracking.log_frame("outputs", table, str)
        tracking.summary(scores)
    shown = ", ".join(f"{k}={v:.3f}" for k, v in scores.items())
    console.print(
        f"[green]generated[/] {len(table)} outputs -> {run.path}\n  picture: {picture}"
        + (f"\n  quality: {shown}" if shown else ""),
        highlight=False,
    )
    return {"model_signature": provenance.model_signature}


run = stage_entry(generate)
