"""`influence-lab attribute`: rank, per prompt and method, the training items that influenced the
prompt's generated outputs. Writes `attribution.parquet`, neighbour grids (PNG, or text for
names) under `neighbours/`, and a W&B table with the images."""

from __future__ import annotations

from ..attribution.methods import Targets, registry
from ..attribution.preparation import context_for, lds_dampings, prepared
from ..attribution.scoring import attribute_prompts
from ..data import DataBundle, load_data
from ..entry.plan import plan_of
from ..entry.stage_entry import (
    console,
    output_dir,
    settings_of,
    stage_entry,
    stage_tracking,
    upstream,
)
from ..reporting.neighbours import attribution_summary, draw_neighbours, wandb_table
from ..settings import StageSettings
from ..store.cached import cached, result_dir
from ..store.files import RunDir, atomic_write
from ..store.records import AttributeProvenance, GenerateProvenance, load_outputs
from .generate import generate


def attribute(settings: StageSettings) -> RunDir:
    settings = settings_of(settings)
    bundle = load_data(settings.data)
    gen_run = generate(upstream(settings))
    plan = plan_of(settings)
    spaces = registry.spaces(
        settings.attribution, list(plan.methods), "label" in bundle.full.column_names
    )
    spec = {  # attribution and embedders hashed as given (see StageSettings._given)
        "generate_signature": gen_run.signature,
        "methods": plan.labels,
        "attribution": settings.given("attribution"),
        "embedders": {k: settings.given("embedders", k) for k in spaces},
    }
    if plan.tunes_damping:
        spec["dampings"] = chosen_dampings(settings, gen_run)
    run = result_dir(settings, "attribute", spec)
    return cached(run, settings.force, lambda run: _attribute(settings, bundle, gen_run, run, spec))


def chosen_dampings(settings: StageSettings, gen_run: RunDir) -> dict[str, float]:
    """The dampings pinned by attribution.gradient.pinned_dampings, and for the other methods
    those an LDS run of this model chose on held-out subsets (empty: the default)."""
    pinned = dict(settings.attribution.gradient.pinned_dampings or {})
    model_signature = GenerateProvenance.read(gen_run.path).model_signature
    ensemble = settings.attribution.gradient.ensemble
    chosen = lds_dampings(output_dir(settings), model_signature, ensemble)
    for method, value in pinned.items():
        console.print(
            f"{method}: damping {value:g}, pinned by attribution.gradient.pinned_dampings"
        )
    for method, value in chosen.items():
        if method not in pinned:
            console.print(f"{method}: damping {value:g}, chosen by an LDS run of this model")
    return {**chosen, **pinned}


def _attribute(
    settings: StageSettings, bundle: DataBundle, gen_run: RunDir, run: RunDir, spec: dict
) -> dict:
    att = settings.attribution
    generated = GenerateProvenance.read(gen_run.path)
    prompts, outputs, _ = load_outputs(gen_run.path)
    context = context_for(
        settings, bundle, generated.model_dir, generated.model_signature, spec.get("dampings")
    )
    attributors = prepared(list(plan_of(settings).methods), context)
    table = attribute_prompts(context, attributors, Targets(prompts, outputs))
    _, caches = context.search_spaces(list(context.spaces))
    atomic_write(run / "attribution.parquet", lambda p: table.to_parquet(p, index=False))
    pictures = draw_neighbours(run.path, bundle, table, prompts, outputs, att.grid_top)
    AttributeProvenance(
        generate_dir=str(gen_run.path),
        embedding_dirs={k: str(c.path) for k, c in caches.items()},
        data_fingerprint=bundle.fingerprint,
        **spec,
    ).write(run.path)
    with stage_tracking(
        settings,
        run.path,
        "attribute",
        {**spec, "data_fingerprint": bundle.fingerprint},
    ) as tracking:
        if tracking.wandb_run is not None:
            tracking.log_table("attribution", *wandb_table(bundle, table, att.grid_top))
    console.print(
        attribution_summary(table, run / "attribution.parquet", pictures), highlight=False
    )
    return {"generate_signature": gen_run.signature}


run = stage_entry(attribute)
