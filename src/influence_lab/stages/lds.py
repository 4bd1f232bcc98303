"""`influence-lab lds`: score every attribution method by the linear datamodeling score.

Trains `lds.subsets` models on random subsets holding a fraction `lds.alpha` of the training set,
with each of `lds.seeds` (as packs; each model is a signature-named train result, so the models
are reused by every later call and every method), measures each target's `example_loss` under
every subset model, and correlates it with each method's prediction. Targets are the generated
outputs of `generate`, each on its own, or (`lds.targets=heldout`) items no model was trained on
(`data.heldout`). From the same models: a memorization score per training
item and the training dynamics of `lds.track_items` items.

TRAK and D-TRAK choose their damping on the first `lds.selection` share of the subsets; every
method's LDS is reported on the others (`counterfactual.lds.split_subsets`).

Writes lds.csv (the table), lds_targets.parquet (per target), memorization.parquet, lds.png,
damping.json + lds_damping.csv|png, memorization.png (or .txt for texts), dynamics.png,
summary.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data import load_data
from ..data.heldout import heldout_items
from ..entry.plan import plan_of
from ..entry.stage_entry import (
    console,
    settings_of,
    stage_entry,
    stage_tracking,
    upstream,
)
from ..evaluation.cost import cost_rows
from ..evaluation.lds_score import (
    choose_dampings,
    draw_subsets,
    lds_of,
    lds_table,
    reference_rows,
    split_subsets,
    subset_redraws,
)
from ..evaluation.subsets import (
    measure,
    method_predictions,
    subset_members,
    target_batch,
    targets_of,
    tracked_items,
    train_subset_models,
)
from ..reporting.exports import export_lds
from ..reporting.lds_figures import damping_lines, lds_bars
from ..reporting.lds_summary import (
    dynamics,
    memorized,
    print_cost,
    print_table,
    summary_markdown,
)
from ..settings import StageSettings
from ..store.cached import cached, result_dir
from ..store.files import RunDir, atomic_write, write_json, write_npy, write_text
from ..store.records import GenerateProvenance, load_outputs
from ..training.batches import batch_of
from .generate import generate


def lds_methods(settings: StageSettings) -> list:
    """The methods of `lds.methods` (auto: the search methods of attribution.methods and the
    gradient methods the model class allows), resolved and checked at the stage's entry."""
    return list(plan_of(settings).lds_methods)


def lds_stage(settings: StageSettings):
    """One LDS run, or one per `lds.runs` entry, exported to `lds.export_dir` when set."""
    from .pipeline import run_configs

    settings = settings_of(settings)
    runs = {
        label + ("-heldout" if run_settings.lds.targets == "heldout" else ""): lds(run_settings)
        for label, run_settings in run_configs(settings, "lds", settings.lds.runs)
    }
    if settings.lds.export_dir:
        export_lds(Path(settings.lds.export_dir), runs, settings.group)
    return runs


def lds(settings: StageSettings) -> RunDir:
    settings = settings_of(settings)
    bundle = load_data(settings.data)
    methods = lds_methods(settings)
    gen_run = generate(upstream(settings))
    spec = {  # lds, attribution and embedders hashed as given (see StageSettings._given)
        "generate_signature": gen_run.signature,
        "lds": {
            k: v
            for k, v in settings.given("lds").items()
            if k not in ("pack_size", "runs", "export_dir")
        },
        "methods": [m.label for m in methods],
        "attribution": settings.given("attribution"),
        "embedders": {k: settings.given("embedders", k) for k in settings.attribution.embedders},
    }
    run = result_dir(settings, "lds", spec)
    return cached(
        run,
        settings.force,
        lambda run: _score(settings, bundle, gen_run, methods, run),
        reuse=lambda run: print_table(
            pd.read_csv(run / "lds.csv"), f"{settings.model.name} on {settings.data.name}"
        ),
    )


def _score(settings: StageSettings, bundle, gen_run: RunDir, methods: list, run: RunDir) -> dict:
    lset = settings.lds
    write_text(run / "config.yaml", settings.config_yaml())
    ids = list(bundle.train["id"])
    masks = draw_subsets(len(ids), lset.subsets, lset.alpha, lset.subset_seed)
    write_npy(run / "subsets.npy", masks)
    members = subset_members(ids, masks, lset.seeds)
    track_ids = tracked_items(ids, lset.track_items, lset.subset_seed)
    runs = train_subset_models(settings, bundle, members, run, track_ids)

    t_prompts, t_outputs = lds_targets(settings, bundle, gen_run)
    batch = target_batch(t_prompts, t_outputs)
    truth, item_losses = measure(
        runs, members, batch, batch_of(bundle.train), run, lset.noise_draws
    )
    member_masks = masks[[m["subset"] for m in members]]

    split = split_subsets(len(masks), lset.selection)
    generated = GenerateProvenance.read(gen_run.path)
    predictions, families, costs = method_predictions(
        settings,
        bundle,
        generated,
        methods,
        t_prompts,
        t_outputs,
        masks,
        lset.dampings if split else None,
    )
    by_seed = -truth.reshape(len(masks), len(lset.seeds), -1)  # (subsets, seeds, targets) outputs
    subset_outputs = by_seed.mean(1)  # minus the loss averaged over seeds
    predictions, chosen, curves = choose_dampings(predictions, subset_outputs, split, lset.dampings)
    evaluate = split[1] if split else np.arange(len(masks))
    per_target = {
        label: lds_of(p[evaluate], subset_outputs[evaluate]) for label, p in predictions.items()
    }
    # the intervals resample the evaluation subsets as well as the targets (`lds.summarise`)
    redraws = subset_redraws(
        {label: p[evaluate] for label, p in predictions.items()},
        subset_outputs[evaluate],
        by_seed[evaluate],
    )
    table = lds_table(per_target, lset.bootstrap, reference_rows(by_seed[evaluate]), redraws)
    table["damping"] = [chosen.get(label, np.nan) for label in table["method"]]
    table["family"] = [families.get(label, "reference") for label in table["method"]]
    table["subsets"] = len(evaluate)
    write_dampings(run, generated.model_signature, chosen, curves, split)
    rows = [
        {"method": label, "target": t, "prompt": t_prompts[t], "lds": float(v)}
        for label, values in per_target.items()
        for t, v in enumerate(values)
    ]
    atomic_write(
        run / "lds_targets.parquet", lambda p: pd.DataFrame(rows).to_parquet(p, index=False)
    )
    atomic_write(run / "lds.csv", lambda p: table.to_csv(p, index=False))
    cost = pd.DataFrame(cost_rows(costs, len(t_prompts), len(ids)))
    atomic_write(run / "cost.csv", lambda p: cost.to_csv(p, index=False))
    title = (
        f"LDS, {settings.model.name} on {settings.data.name}: "
        f"{len(masks)} subsets x {len(lset.seeds)} seeds, "
        f"alpha={lset.alpha}, {len(t_prompts)} {lset.targets} targets"
    )
    pictures = {"lds": lds_bars(table, run / "lds.png", title)}
    if len(curves):
        pictures["damping"] = damping_lines(curves, run / "lds_damping.png", title)
    pictures.update(memorized(bundle, member_masks, item_losses, run.path, lset.memorization_top))
    pictures.update(dynamics(runs, members, track_ids, run.path, bundle.name))
    write_text(run / "summary.md", summary_markdown(table, title, pictures, cost))
    with stage_tracking(settings, run.path, "lds", {"signature": run.signature}) as tracking:
        tracking.log_frame("lds", table)
        for name, path in pictures.items():
            if path.suffix == ".png":
                tracking.log_image(name, path)
        tracking.summary({f"lds/{r.method}": float(r.lds) for r in table.itertuples()})
    print_table(table, title)
    print_cost(cost, len(ids))
    console.print("  " + "\n  ".join(f"{k}: {v}" for k, v in pictures.items()), highlight=False)
    return {"models": len(members)}


def lds_targets(settings: StageSettings, bundle, gen_run: RunDir) -> tuple[list[str], list]:
    """(caption of each target, [one-item group of each]): the generated outputs
    (`lds.targets=generated`), or `lds.heldout_targets` items no model was trained on, each with
    its own caption (`heldout`: `data.heldout`)."""
    lset = settings.lds
    if lset.targets == "heldout":
        _, captions, content = heldout_items(
            settings.data, bundle, lset.heldout_targets, lset.subset_seed
        )
        return captions, [content[i : i + 1] for i in range(len(captions))]
    prompts, outputs, _ = load_outputs(gen_run.path)
    return targets_of(prompts, outputs, lset.targets_per_prompt)


def write_dampings(run: RunDir, model_signature: str, chosen: dict, curves, split) -> None:
    """damping.json (read by `attribute` for the same model) and lds_damping.csv."""
    if not chosen:
        return
    atomic_write(run / "lds_damping.csv", lambda p: curves.to_csv(p, index=False))
    write_json(
        run / "damping.json",
        {
            "model_signature": model_signature,
            "dampings": chosen,
            "selection_subsets": len(split[0]),
            "evaluation_subsets": len(split[1]),
        },
    )
    console.print(
        "  damping chosen on "
        f"{len(split[0])} subsets, LDS on the other {len(split[1])}: "
        + ", ".join(f"{k} {v:g}" for k, v in chosen.items()),
        highlight=False,
    )


run = stage_entry(lds_stage)
