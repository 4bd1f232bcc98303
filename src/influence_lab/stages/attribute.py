"""`influence-lab attribute`: rank, per prompt and method, the training items that influenced the
prompt's generated outputs. Writes `attribution.parquet`, neighbour grids (PNG, or text for
names) under `neighbours/`, and a W&B table with the images."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ..attribution.gradient_methods import GRADIENT_METHODS, check_gradient_method
from ..attribution.search import attribute_prompts, resolve_methods
from ..attribution.setup import gradient_scorers, search_spaces
from ..data import DataBundle, load_data
from ..errors import InfluenceLabError
from ..orchestration.cached import cached
from ..orchestration.records import AttributeProvenance, GenerateProvenance, load_outputs
from ..report.neighbours import attribution_summary, draw_neighbours, wandb_table
from ..store.files import RunDir, atomic_write
from ..store.signature import signature
from .common import console, output_dir, stage_entry, stage_tracking, upstream
from .generate import generate


def attribute(cfg: DictConfig) -> RunDir:
    bundle = load_data(cfg.data)
    gen_run = generate(upstream(cfg))
    acfg = cfg.attribution
    methods = resolve_methods(
        OmegaConf.to_container(acfg.methods) if not isinstance(acfg.methods, str) else acfg.methods,
        bundle.kind,
    )
    unknown = [e for e in acfg.embedders if e not in cfg.embedders]
    if unknown:
        raise InfluenceLabError(
            f"attribution.embedders names {unknown}, which have no settings under embedders "
            f"(known: {', '.join(cfg.embedders)})."
        )
    if "paper" in methods and bundle.kind != "image":
        raise InfluenceLabError(
            "the paper scorer works on images only; drop 'paper' from attribution.methods."
        )
    if "paper" in methods and acfg.paper_embedder not in acfg.embedders:
        raise InfluenceLabError(
            f"attribution.paper_embedder '{acfg.paper_embedder}' is not in attribution.embedders."
        )
    for method in methods:
        if method in GRADIENT_METHODS:
            check_gradient_method(method, str(cfg.model.name))
    spec = {
        "generate_signature": gen_run.signature,
        "methods": methods,
        "attribution": OmegaConf.to_container(acfg, resolve=True),
        "embedders": {
            k: OmegaConf.to_container(cfg.embedders[k], resolve=True) for k in acfg.embedders
        },
    }
    run = RunDir(output_dir(cfg), "attribute", f"{cfg.model.name}-{cfg.data.name}", signature(spec))
    return cached(run, bool(cfg.force), lambda run: _attribute(cfg, bundle, gen_run, run, spec))


def _attribute(
    cfg: DictConfig, bundle: DataBundle, gen_run: RunDir, run: RunDir, spec: dict
) -> dict:
    acfg = cfg.attribution
    generated = GenerateProvenance.read(gen_run.path)
    embedders, caches = search_spaces(cfg, bundle, generated)
    prompts, outputs, _ = load_outputs(gen_run.path)
    dense = gradient_scorers(
        cfg, bundle, generated.model_dir, generated.model_signature, spec["methods"]
    )
    table = attribute_prompts(
        bundle.train, bundle.kind, prompts, outputs, embedders, caches, acfg, dense
    )
    atomic_write(run / "attribution.parquet", lambda p: table.to_parquet(p, index=False))
    pictures = draw_neighbours(run.path, bundle, table, prompts, outputs, int(acfg.grid_top))
    AttributeProvenance(
        generate_dir=str(gen_run.path),
        embedding_dirs={k: str(c.path) for k, c in caches.items()},
        data_fingerprint=bundle.fingerprint,
        **spec,
    ).write(run.path)
    with stage_tracking(
        cfg,
        run.path,
        "attribute",
        {**spec, "data_fingerprint": bundle.fingerprint},
    ) as tracking:
        if tracking.wandb_run is not None:
            tracking.log_table("attribution", *wandb_table(bundle, table, int(acfg.grid_top)))
    console.print(
        attribution_summary(table, run / "attribution.parquet", pictures), highlight=False
    )
    return {"generate_signature": gen_run.signature}


run = stage_entry(attribute)
