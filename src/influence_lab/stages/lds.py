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

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.table import Table
from tqdm.auto import tqdm

from ..attribution.gradient_methods import (
    GRADIENT_METHODS,
    TRAK_OUTPUTS,
    TracIn,
    Trak,
    check_gradient_method,
)
from ..attribution.search import dense_scores, resolve_methods
from ..checks import (
    a_list,
    check_methods,
    is_int,
    is_number,
    non_negative_int,
    positive_int,
    seed,
    seed_list,
    show,
)
from ..counterfactual.lds import draw_subsets, lds_per_target, lds_table, memorization
from ..counterfactual.metrics import NOISE_SEED
from ..data import load_data
from ..errors import InfluenceLabError
from ..models.build import load_model
from ..orchestration.signature import signature
from ..orchestration.store import RunDir, atomic_write, read_json, write_npy, write_text
from ..report.lds_figures import dynamics_plot, lds_bars, memorization_grid
from ..tracking.loggers import Tracking
from ..training.batches import batch_of, outputs_batch
from ..training.members import train_members
from .attribute import load_outputs, search_spaces
from .common import console, output_dir, reused, stage_entry, upstream
from .generate import generate
from .gradients import gradient_setup


def lds_methods(cfg: DictConfig, model_name: str, kind: str) -> list[str]:
    methods = check_methods(cfg.lds.methods, "lds.methods", cfg)
    if methods in (None, "auto"):
        search = resolve_methods(OmegaConf.to_container(cfg.attribution.methods)
                                 if not isinstance(cfg.attribution.methods, str) else cfg.attribution.methods, kind)
        grads = ["tracin", "trak"] + (["dtrak"] if model_name == "ddpm" else [])
        return [m for m in search if m not in GRADIENT_METHODS] + grads
    methods = [str(m) for m in ([methods] if isinstance(methods, str) else methods)]
    for method in methods:
        if method in GRADIENT_METHODS:
            check_gradient_method(method, model_name)
    return methods


def check_settings(lcfg: DictConfig) -> None:
    if not is_number(lcfg.alpha) or not 0 < lcfg.alpha < 1:
        raise InfluenceLabError(f"lds.alpha is {show(lcfg.alpha)}; it must be strictly between 0 and 1.")
    if not is_int(lcfg.subsets) or lcfg.subsets < 3:
        raise InfluenceLabError(f"lds.subsets is {show(lcfg.subsets)}; a rank correlation needs at least 3 subsets.")
    seed_list(lcfg.seeds, "lds.seeds", "[1, 2]")
    ensembles = a_list(lcfg.trak_ensembles, "lds.trak_ensembles", "[1, 2, 4]")
    if not ensembles or not all(is_int(e) and e >= 1 for e in ensembles):
        raise InfluenceLabError(f"lds.trak_ensembles is {ensembles}; give sizes >= 1.")
    seed(lcfg.subset_seed, "lds.subset_seed")
    positive_int(lcfg.pack_size, "lds.pack_size")
    positive_int(lcfg.get("targets_per_prompt"), "lds.targets_per_prompt", null=True)
    positive_int(lcfg.memorization_top, "lds.memorization_top")
    non_negative_int(lcfg.track_items, "lds.track_items")
    positive_int(lcfg.bootstrap, "lds.bootstrap")


def targets_of(prompts, outputs, per_prompt) -> tuple[list[str], list]:
    """Every generated output as its own target: (prompt of each, [one-output group of each])."""
    t_prompts, t_outputs = [], []
    for prompt, outs in zip(prompts, outputs, strict=True):
        count = len(outs) if per_prompt is None else min(int(per_prompt), len(outs))
        for j in range(count):
            t_prompts.append(prompt)
            t_outputs.append(outs[j : j + 1])
    return t_prompts, t_outputs


def target_batch(t_prompts, t_outputs) -> dict:
    """Every target (a one-output group) in one batch, captioned by its prompt."""
    if isinstance(t_outputs[0], list):
        return outputs_batch([text for group in t_outputs for text in group], t_prompts)
    return outputs_batch(np.concatenate(t_outputs), t_prompts)


def lds_stage(cfg: DictConfig):
    """One LDS run, or one per `lds.runs` entry, exported to `lds.export_dir` when set."""
    from .pipeline import run_configs

    runs = {label: lds(run_cfg) for label, run_cfg in run_configs(cfg, "lds", cfg.lds.get("runs") or [])}
    if cfg.lds.get("export_dir"):
        export_lds(Path(str(cfg.lds.export_dir)), runs, str(cfg.group))
    return runs


def export_lds(folder: Path, runs: dict, experiment: str) -> Path:
    from .pipeline import write_results

    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# Results: {experiment}", "", "Generated by the experiment's command; do not edit by hand.", ""]
    for label, run in runs.items():
        target = folder / label
        target.mkdir(exist_ok=True)
        for name in ("lds.csv", "lds.png", "memorization.png", "memorization.txt", "dynamics.png", "summary.md"):
            if (run / name).exists():
                shutil.copy(run / name, target / name)
        table = pd.read_csv(run / "lds.csv").sort_values("lds", ascending=False)
        lines += [f"## {label}", "", "| method | LDS | 95% interval | targets |", "|---|---:|---:|---:|"]
        lines += [f"| {r.method} | {r.lds:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.targets} |"
                  for r in table.itertuples()]
        lines += ["", f"![{label}]({label}/lds.png)", ""]
    return write_results(folder, "\n".join(lines), len(runs))


def lds(cfg: DictConfig) -> RunDir:
    lcfg = cfg.lds
    check_settings(lcfg)
    bundle = load_data(cfg.data)
    methods = lds_methods(cfg, str(cfg.model.name), bundle.kind)
    gen_run = generate(upstream(cfg))
    provenance = read_json(gen_run / "provenance.json")
    settings = {k: v for k, v in OmegaConf.to_container(lcfg, resolve=True).items() if k not in ("pack_size", "runs", "export_dir")}
    spec = {"generate_signature": gen_run.signature, "lds": settings, "methods": methods,
            "attribution": OmegaConf.to_container(cfg.attribution, resolve=True),
            "embedders": {k: OmegaConf.to_container(cfg.embedders[k], resolve=True) for k in cfg.attribution.embedders}}
    run = RunDir(output_dir(cfg), "lds", f"{cfg.model.name}-{cfg.data.name}", signature(spec))
    if run.done and not cfg.force:
        reused(run)
        print_table(pd.read_csv(run / "lds.csv"), f"{cfg.model.name} on {cfg.data.name}")
        return run
    run.prepare(force=bool(cfg.force))
    write_text(run / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    ids = list(bundle.train["id"])
    n = len(ids)
    masks = draw_subsets(n, int(lcfg.subsets), float(lcfg.alpha), int(lcfg.subset_seed))
    write_npy(run / "subsets.npy", masks)
    members = [{"member_id": f"s{j:03d}-seed{s}", "subset": j, "seed": int(s),
                "removed": [ids[i] for i in np.flatnonzero(~masks[j])]}
               for j in range(len(masks)) for s in lcfg.seeds]
    rng = np.random.default_rng(int(lcfg.subset_seed))
    track_ids = [ids[i] for i in sorted(rng.choice(n, min(int(lcfg.track_items), n), replace=False))]
    runs = train_subset_models(cfg, bundle, members, run, track_ids)

    prompts, outputs, _ = load_outputs(gen_run)
    t_prompts, t_outputs = targets_of(prompts, outputs, lcfg.targets_per_prompt)
    batch = target_batch(t_prompts, t_outputs)
    truth, item_losses = measure(runs, members, batch, batch_of(bundle.train), run)
    member_masks = masks[[m["subset"] for m in members]]

    scores = method_scores(cfg, bundle, provenance, methods, t_prompts, t_outputs, batch)
    subset_truth = truth.reshape(len(masks), len(lcfg.seeds), -1).mean(1)  # averaged over seeds
    per_target = {label: lds_per_target(masks, -subset_truth, s) for label, s in scores.items()}
    table = lds_table(per_target, int(lcfg.bootstrap))
    rows = [{"method": label, "target": t, "prompt": t_prompts[t], "lds": float(v)}
            for label, values in per_target.items() for t, v in enumerate(values)]
    atomic_write(run / "lds_targets.parquet", lambda p: pd.DataFrame(rows).to_parquet(p, index=False))
    atomic_write(run / "lds.csv", lambda p: table.to_csv(p, index=False))
    title = (f"LDS, {cfg.model.name} on {cfg.data.name}: {len(masks)} subsets x {len(lcfg.seeds)} seeds, "
             f"alpha={lcfg.alpha}, {len(t_prompts)} targets")
    pictures = {"lds": lds_bars(table, run / "lds.png", title)}
    pictures.update(memorized(bundle, member_masks, item_losses, run, int(lcfg.memorization_top)))
    pictures.update(dynamics(runs, members, track_ids, run, bundle.name))
    write_text(run / "summary.md", summary_markdown(table, title, pictures))
    log_summary(cfg, run, table, pictures)
    run.mark_done({"models": len(members)})
    print_table(table, title)
    console.print("  " + "\n  ".join(f"{k}: {v}" for k, v in pictures.items()), highlight=False)
    return run


def train_subset_models(cfg: DictConfig, bundle, members: list[dict], run: RunDir, track_ids: list[str]) -> dict:
    size = int(cfg.lds.pack_size)
    packs = [members[i : i + size] for i in range(0, len(members), size)]
    runs = {}
    for pack in tqdm(packs, desc=f"subset models ({len(members)} in packs of {size})"):
        pack_dir = run.path.parent / "packs" / signature(sorted(m["member_id"] for m in pack) + [run.signature])
        runs.update(train_members(cfg, bundle, pack, pack_dir, track_ids))
    return runs


@torch.no_grad()
def measure(runs: dict, members: list[dict], targets: dict, train_batch: dict, run: RunDir):
    """Each subset model's example_loss of every target (fixed noise) and of every training item;
    cached per model under `losses/` so that a killed run resumes here."""
    truth, items = [], []
    for member in tqdm(members, desc="losses under subset models", leave=False):
        path = run / "losses" / f"{member['member_id']}.npz"
        if not path.exists():
            model = load_model(runs[member["member_id"]].path)
            t = model.example_loss(targets, NOISE_SEED).numpy()
            i = model.example_loss(train_batch, NOISE_SEED).numpy()

            def write(p, t=t, i=i):
                with open(p, "wb") as fh:
                    np.savez(fh, targets=t, items=i)

            atomic_write(path, write)
        data = np.load(path)
        truth.append(data["targets"])
        items.append(data["items"])
    return np.stack(truth), np.stack(items)


def method_scores(cfg, bundle, provenance, methods, t_prompts, t_outputs, batch) -> dict[str, np.ndarray]:
    """Scores of every training item for every target: {label: (T, N)}; TRAK and D-TRAK once per
    ensemble size of `lds.trak_ensembles` (labels `trak@e`)."""
    out = {}
    search = [m for m in methods if m not in GRADIENT_METHODS]
    if search:
        acfg = cfg.attribution.copy()
        acfg.methods = search
        scfg = cfg.copy()
        scfg.attribution = acfg
        embedders, caches = search_spaces(scfg, bundle, provenance)
        out.update(dense_scores(bundle.train, bundle.kind, t_prompts, t_outputs, embedders, caches, acfg))
    grads = [m for m in methods if m in GRADIENT_METHODS]
    if not grads:
        return out
    sizes = sorted({int(e) for e in cfg.lds.trak_ensembles})
    setup = gradient_setup(cfg, bundle, provenance["model_dir"], provenance["model_signature"],
                           max(sizes) if any(m != "tracin" for m in grads) else 0)
    for method in grads:
        console.print(f"lds: scores of {method}", highlight=False)
        if method == "tracin":
            out["tracin"] = TracIn(setup).scores(batch, NOISE_SEED)
            continue
        per_model = Trak(setup, TRAK_OUTPUTS[method], max(sizes)).per_model_scores(batch, NOISE_SEED)
        for e in sizes:
            out[f"{method}@{e}"] = np.mean(per_model[:e], axis=0)
    return out


def memorized(bundle, masks, item_losses, run: RunDir, top: int) -> dict:
    mem = memorization(masks, item_losses)
    table = pd.DataFrame({"id": list(bundle.train["id"]), "caption": list(bundle.train["caption"]),
                          "memorization": mem}).sort_values("memorization", ascending=False, na_position="last")
    atomic_write(run / "memorization.parquet", lambda p: table.to_parquet(p, index=False))
    best = table.head(top)
    index = {item_id: i for i, item_id in enumerate(bundle.train["id"])}
    title = "most memorized training items: mean loss held out minus trained on"
    if bundle.kind == "image":
        images = np.asarray(bundle.train.with_format("numpy")["image"])[[index[i] for i in best["id"]]]
        labels = [f"{r.id} {r.caption} ({r.memorization:.3g})" for r in best.itertuples()]
        return {"memorization": memorization_grid(images, labels, run / "memorization.png", title)}
    texts = list(bundle.train["text"])
    lines = [title, ""] + [f"{r.memorization:>9.3f}  {texts[index[r.id]]:<20} {r.id} ({r.caption})"
                           for r in best.itertuples()]
    write_text(run / "memorization.txt", "\n".join(lines) + "\n")
    return {"memorization": run / "memorization.txt"}


def dynamics(runs: dict, members: list[dict], track_ids: list[str], run: RunDir, data_name: str) -> dict:
    frames = []
    for member in members:
        path = runs[member["member_id"]] / "dynamics.parquet"
        if path.exists():
            frame = pd.read_parquet(path)
            frames.append(frame[frame["id"].isin(track_ids)].assign(member=member["member_id"]))
    if not frames:
        console.print("lds: no training dynamics recorded (the subset models were trained by an earlier call "
                      "that tracked other items)", highlight=False)
        return {}
    table = pd.concat(frames, ignore_index=True)
    atomic_write(run / "dynamics.parquet", lambda p: table.to_parquet(p, index=False))
    return {"dynamics": dynamics_plot(table, run / "dynamics.png",
                                      f"training dynamics on {data_name}: loss of tracked items per epoch")}


def print_table(table: pd.DataFrame, title: str) -> None:
    shown = Table(title=title, title_justify="left")
    for col in ("method", "LDS", "95% interval", "targets"):
        shown.add_column(col, justify="left" if col == "method" else "right")
    for r in table.sort_values("lds", ascending=False).itertuples():
        shown.add_row(str(r.method), f"{r.lds:.3f}", f"[{r.ci_low:.3f}, {r.ci_high:.3f}]", str(r.targets))
    console.print(shown)


def summary_markdown(table: pd.DataFrame, title: str, pictures: dict) -> str:
    lines = [f"# {title}", "", "| method | LDS | 95% interval | targets |", "|---|---:|---:|---:|"]
    for r in table.sort_values("lds", ascending=False).itertuples():
        lines.append(f"| {r.method} | {r.lds:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.targets} |")
    lines += [""] + [f"![{name}]({path.name})" for name, path in pictures.items() if path.suffix == ".png"]
    return "\n".join(lines) + "\n"


def log_summary(cfg, run: RunDir, table: pd.DataFrame, pictures: dict) -> None:
    tracking = Tracking(cfg.logger, run.path, output_dir(cfg), "lds", str(cfg.group), f"lds-{run.path.name}",
                        {"signature": run.signature})
    try:
        tracking.log_table("lds", list(table.columns), table.astype(object).values.tolist())
        for name, path in pictures.items():
            if path.suffix == ".png":
                tracking.log_image(name, path)
        tracking.summary({f"lds/{r.method}": float(r.lds) for r in table.itertuples()})
    finally:
        tracking.finish()


run = stage_entry(lds_stage)
