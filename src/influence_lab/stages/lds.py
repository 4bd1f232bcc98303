"""`influence-lab lds`: score every attribution method by the linear datamodeling score.

Trains `lds.subsets` models on random subsets holding a fraction `lds.alpha` of the training set,
with each of `lds.seeds` (as packs; each model is a signature-named train result, so the models
are reused by every later call and every method), measures each target's `example_loss` under
every subset model, and correlates it with each method's prediction. Targets are the generated
outputs of `generate`, each on its own. From the same models: a memorization score per training
item and the training dynamics of `lds.track_items` items.

Writes lds.csv (the table), lds_targets.parquet (per target), memorization.parquet, lds.png,
memorization.png (or .txt for texts), dynamics.png, summary.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ..attribution.gradient_methods import GRADIENT_METHODS, check_gradient_method
from ..attribution.search import resolve_methods
from ..counterfactual.lds import draw_subsets, lds_per_target, lds_table
from ..counterfactual.subsets import (
    measure,
    method_scores,
    subset_members,
    target_batch,
    targets_of,
    tracked_items,
    train_subset_models,
)
from ..data import load_data
from ..orchestration.cached import cached
from ..orchestration.records import GenerateProvenance, load_outputs
from ..report.exports import export_lds
from ..report.lds_figures import lds_bars
from ..report.lds_summary import dynamics, memorized, print_table, summary_markdown
from ..store.files import RunDir, atomic_write, write_npy, write_text
from ..store.signature import signature
from ..training.batches import batch_of
from .common import console, output_dir, stage_entry, stage_tracking, upstream
from .generate import generate


def lds_methods(cfg: DictConfig, model_name: str, kind: str) -> list[str]:
    """The methods of `lds.methods` (checked against the model and embedders at the stage's
    entry)."""
    methods = cfg.lds.methods
    if methods in (None, "auto"):
        search = resolve_methods(
            OmegaConf.to_container(cfg.attribution.methods)
            if not isinstance(cfg.attribution.methods, str)
            else cfg.attribution.methods,
            kind,
        )
        grads = ["tracin", "trak"] + (["dtrak"] if model_name == "ddpm" else [])
        return [m for m in search if m not in GRADIENT_METHODS] + grads
    methods = [str(m) for m in ([methods] if isinstance(methods, str) else methods)]
    for method in methods:
        if method in GRADIENT_METHODS:
            check_gradient_method(method, model_name)
    return methods


def lds_stage(cfg: DictConfig):
    """One LDS run, or one per `lds.runs` entry, exported to `lds.export_dir` when set."""
    from .pipeline import run_configs

    runs = {
        label: lds(run_cfg) for label, run_cfg in run_configs(cfg, "lds", cfg.lds.get("runs") or [])
    }
    if cfg.lds.get("export_dir"):
        export_lds(Path(str(cfg.lds.export_dir)), runs, str(cfg.group))
    return runs


def lds(cfg: DictConfig) -> RunDir:
    lcfg = cfg.lds
    bundle = load_data(cfg.data)
    methods = lds_methods(cfg, str(cfg.model.name), bundle.kind)
    gen_run = generate(upstream(cfg))
    settings = {
        k: v
        for k, v in OmegaConf.to_container(lcfg, resolve=True).items()
        if k not in ("pack_size", "runs", "export_dir")
    }
    spec = {
        "generate_signature": gen_run.signature,
        "lds": settings,
        "methods": methods,
        "attribution": OmegaConf.to_container(cfg.attribution, resolve=True),
        "embedders": {
            k: OmegaConf.to_container(cfg.embedders[k], resolve=True)
            for k in cfg.attribution.embedders
        },
    }
    run = RunDir(output_dir(cfg), "lds", f"{cfg.model.name}-{cfg.data.name}", signature(spec))
    return cached(
        run,
        bool(cfg.force),
        lambda run: _score(cfg, bundle, gen_run, methods, run),
        reuse=lambda run: print_table(
            pd.read_csv(run / "lds.csv"), f"{cfg.model.name} on {cfg.data.name}"
        ),
    )


def _score(cfg: DictConfig, bundle, gen_run: RunDir, methods: list[str], run: RunDir) -> dict:
    lcfg = cfg.lds
    write_text(run / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    ids = list(bundle.train["id"])
    masks = draw_subsets(len(ids), int(lcfg.subsets), float(lcfg.alpha), int(lcfg.subset_seed))
    write_npy(run / "subsets.npy", masks)
    members = subset_members(ids, masks, lcfg.seeds)
    track_ids = tracked_items(ids, int(lcfg.track_items), int(lcfg.subset_seed))
    runs = train_subset_models(cfg, bundle, members, run, track_ids)

    prompts, outputs, _ = load_outputs(gen_run.path)
    t_prompts, t_outputs = targets_of(prompts, outputs, lcfg.targets_per_prompt)
    batch = target_batch(t_prompts, t_outputs)
    truth, item_losses = measure(runs, members, batch, batch_of(bundle.train), run)
    member_masks = masks[[m["subset"] for m in members]]

    scores = method_scores(
        cfg, bundle, GenerateProvenance.read(gen_run.path), methods, t_prompts, t_outputs, batch
    )
    subset_truth = truth.reshape(len(masks), len(lcfg.seeds), -1).mean(1)  # averaged over seeds
    per_target = {label: lds_per_target(masks, -subset_truth, s) for label, s in scores.items()}
    table = lds_table(per_target, int(lcfg.bootstrap))
    rows = [
        {"method": label, "target": t, "prompt": t_prompts[t], "lds": float(v)}
        for label, values in per_target.items()
        for t, v in enumerate(values)
    ]
    atomic_write(
        run / "lds_targets.parquet", lambda p: pd.DataFrame(rows).to_parquet(p, index=False)
    )
    atomic_write(run / "lds.csv", lambda p: table.to_csv(p, index=False))
    title = (
        f"LDS, {cfg.model.name} on {cfg.data.name}: "
        f"{len(masks)} subsets x {len(lcfg.seeds)} seeds, "
        f"alpha={lcfg.alpha}, {len(t_prompts)} targets"
    )
    pictures = {"lds": lds_bars(table, run / "lds.png", title)}
    pictures.update(
        memorized(bundle, member_masks, item_losses, run.path, int(lcfg.memorization_top))
    )
    pictures.update(dynamics(runs, members, track_ids, run.path, bundle.name))
    write_text(run / "summary.md", summary_markdown(table, title, pictures))
    with stage_tracking(cfg, run.path, "lds", {"signature": run.signature}) as tracking:
        tracking.log_frame("lds", table)
        for name, path in pictures.items():
            if path.suffix == ".png":
                tracking.log_image(name, path)
        tracking.summary({f"lds/{r.method}": float(r.lds) for r in table.itertuples()})
    print_table(table, title)
    console.print("  " + "\n  ".join(f"{k}: {v}" for k, v in pictures.items()), highlight=False)
    return {"models": len(members)}


run = stage_entry(lds_stage)
