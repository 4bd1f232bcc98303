"""`influence-lab attribute`: rank, per prompt and method, the training items that influenced the
prompt's generated outputs. Writes `attribution.parquet`, neighbour grids (PNG, or text for
names) under `neighbours/`, and a W&B table with the images."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ..attribution.embedders import build_embedder
from ..attribution.gradient_methods import GRADIENT_METHODS, check_gradient_method
from ..attribution.index import EmbeddingCache
from ..attribution.search import attribute_prompts, resolve_methods
from ..data import load_data
from ..errors import InfluenceLabError
from ..models.build import load_model
from ..orchestration.paths import inside
from ..orchestration.signature import signature
from ..orchestration.store import RunDir, atomic_write, read_json, write_json
from ..report.neighbours import neighbour_grid, neighbour_text
from ..tracking.loggers import Tracking
from .common import console, output_dir, reused, stage_entry, upstream
from .generate import generate
from .gradients import gradient_scorers


def load_outputs(gen_run: RunDir):
    """The generate stage's outputs grouped by prompt: (prompts, [outputs of each prompt], table)."""
    if not (gen_run / "outputs.parquet").exists():
        raise InfluenceLabError(f"the generate result {gen_run.path} has no outputs.parquet; "
                                f"rerun generate with force=true.")
    table = pd.read_parquet(gen_run / "outputs.parquet")
    images = np.load(gen_run / "images.npy") if (gen_run / "images.npy").exists() else None
    prompts, grouped = [], []
    for _, group in table.groupby("prompt_index", sort=True):
        prompts.append(str(group["prompt"].iloc[0]))
        rows = group.index.to_numpy()
        grouped.append(images[rows] if images is not None else list(group["text"]))
    return prompts, grouped, table


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "prompt"


def attribute(cfg: DictConfig) -> RunDir:
    bundle = load_data(cfg.data)
    gen_run = generate(upstream(cfg))
    provenance = read_json(gen_run / "provenance.json")
    acfg = cfg.attribution
    methods = resolve_methods(OmegaConf.to_container(acfg.methods) if not isinstance(acfg.methods, str)
                              else acfg.methods, bundle.kind)
    unknown = [e for e in acfg.embedders if e not in cfg.embedders]
    if unknown:
        raise InfluenceLabError(f"attribution.embedders names {unknown}, which have no settings under embedders "
                                f"(known: {', '.join(cfg.embedders)}).")
    if "paper" in methods and bundle.kind != "image":
        raise InfluenceLabError("the paper scorer works on images only; drop 'paper' from attribution.methods.")
    if "paper" in methods and acfg.paper_embedder not in acfg.embedders:
        raise InfluenceLabError(f"attribution.paper_embedder '{acfg.paper_embedder}' is not in attribution.embedders.")
    for method in methods:
        if method in GRADIENT_METHODS:
            check_gradient_method(method, str(cfg.model.name))
    spec = {"generate_signature": gen_run.signature, "methods": methods,
            "attribution": OmegaConf.to_container(acfg, resolve=True),
            "embedders": {k: OmegaConf.to_container(cfg.embedders[k], resolve=True) for k in acfg.embedders}}
    run = RunDir(output_dir(cfg), "attribute", f"{cfg.model.name}-{cfg.data.name}", signature(spec))
    if run.done and not cfg.force:
        reused(run)
        return run
    run.prepare(force=bool(cfg.force))
    embedders, caches = search_spaces(cfg, bundle, provenance)
    prompts, outputs, _ = load_outputs(gen_run)
    dense = gradient_scorers(cfg, bundle, provenance["model_dir"], provenance["model_signature"], methods)
    table = attribute_prompts(bundle.train, bundle.kind, prompts, outputs, embedders, caches, acfg, dense)
    atomic_write(run / "attribution.parquet", lambda p: table.to_parquet(p, index=False))
    pictures = draw_neighbours(run, bundle, table, prompts, outputs, int(acfg.grid_top))
    write_json(run / "provenance.json", {**spec, "generate_dir": str(gen_run.path),
                                         "embedding_dirs": {k: str(c.path) for k, c in caches.items()},
                                         "data_fingerprint": bundle.fingerprint})
    log_to_wandb(cfg, run, bundle, table, int(acfg.grid_top), spec)
    run.mark_done({"generate_signature": gen_run.signature})
    summarise(table, run, pictures)
    return run


def search_spaces(cfg: DictConfig, bundle, provenance: dict) -> tuple[dict, dict]:
    """The embedders of `attribution.embedders` and their cached training-set indexes."""
    model = load_model(provenance["model_dir"])
    root = output_dir(cfg)
    embedders, caches = {}, {}
    for name in cfg.attribution.embedders:
        embedders[name] = build_embedder(name, cfg.embedders[name], model=model,
                                         model_signature=provenance["model_signature"], bundle=bundle, root=root)
        caches[name] = EmbeddingCache(root, embedders[name], bundle, cfg.attribution.index)
    return embedders, caches


def draw_neighbours(run: RunDir, bundle, table: pd.DataFrame, prompts, outputs, top: int) -> list:
    index_of = {item_id: i for i, item_id in enumerate(bundle.train["id"])}
    images = np.asarray(bundle.train.with_format("numpy")["image"]) if bundle.kind == "image" else None
    pictures = []
    for (target, method), group in table.groupby(["target", "method"], sort=True):
        best = group.sort_values("rank").head(top)
        # prompts (possibly drawn from the data's captions) and method names become file names only
        # through _slug, which keeps [a-z0-9-]; `inside` makes sure the file stays in the run
        stem = inside(run.path, run / "neighbours" / f"{target:03d}-{_slug(prompts[target])}-{_slug(method)}",
                      "neighbour file")
        if images is not None:
            labels = [f"{r.id} {r.caption} ({r.score:.3g})" for r in best.itertuples()]
            neighbours = images[[index_of[i] for i in best["id"]]]
            pictures.append(neighbour_grid(prompts[target], method, outputs[target], neighbours, labels,
                                           stem.with_suffix(".png")))
        else:
            pictures.append(neighbour_text(prompts[target], method, outputs[target], best.to_dict("records"),
                                           stem.with_suffix(".txt")))
    return pictures


def log_to_wandb(cfg, run: RunDir, bundle, table: pd.DataFrame, top: int, spec: dict) -> None:
    tracking = Tracking(cfg.logger, run.path, output_dir(cfg), "attribute", str(cfg.group),
                        f"attribute-{run.path.name}", {**spec, "data_fingerprint": bundle.fingerprint})
    try:
        if tracking.wandb_run is None:
            return
        import wandb

        best = table[table["rank"] <= top]
        index_of = {item_id: i for i, item_id in enumerate(bundle.train["id"])}
        columns = ["prompt", "method", "rank", "id", "caption", "score", "content"]
        rows = []
        for r in best.itertuples():
            item = bundle.train[index_of[r.id]]
            content = (wandb.Image(np.asarray(item["image"]).transpose(1, 2, 0).squeeze())
                       if bundle.kind == "image" else item["text"])
            rows.append([r.prompt, r.method, r.rank, r.id, r.caption, r.score, content])
        tracking.wandb_run.log({"attribution": wandb.Table(columns=columns, data=rows)})
    finally:
        tracking.finish()


def summarise(table: pd.DataFrame, run: RunDir, pictures: list) -> None:
    console.print(f"[green]attributed[/] {table['target'].nunique()} prompts x {table['method'].nunique()} methods "
                  f"-> {run / 'attribution.parquet'}", highlight=False)
    for method, group in table[table["rank"] <= 3].groupby("method", sort=False):
        first = group[group["target"] == group["target"].min()]
        console.print(f"  {method:<14} '{first['prompt'].iloc[0]}': {', '.join(first['id'])}", highlight=False)
    if pictures:
        console.print(f"  neighbour grids: {pictures[0].parent}/", highlight=False)


run = stage_entry(attribute)
