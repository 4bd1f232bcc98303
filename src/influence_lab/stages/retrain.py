"""`influence-lab retrain sweep_dir=DIR job=N`: train the members of one retrain job of a
counterfactual sweep and measure each against the full model. Launched by `counterfactual` as a
Hydra multirun (`-m job=0,1,...`) on any launcher; safe to re-run: finished members are skipped,
each member's results are written atomically with a `.done` marker holding their SHA-256. A job is
claimed with a file lock, so two sweeps on one output directory never run it twice at once. A
member whose training loss stops being finite gets a `.failed` record instead of numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ..attribution.embedders import build_embedder
from ..data import load_data
from ..data.canaries import canary_pattern
from ..entry.stage_entry import (
    console,
    output_dir,
    settings_of,
    stage_entry,
    stage_tracking,
    validate,
)
from ..errors import InfluenceLabError
from ..evaluation.metrics import losses
from ..evaluation.removal_plans import Member, Plan
from ..evaluation.sweep import measure_member, member_finished, write_failures, write_member
from ..models.build import load_model
from ..models.sampling import use_sampling
from ..settings import StageSettings
from ..store.files import claim
from ..store.records import load_outputs
from ..store.signature import signature
from ..training.members import train_members


def retrain(settings: StageSettings) -> list[str]:
    settings = settings_of(settings)
    sweep = Path(str(settings.sweep_dir))
    if not (sweep / "plan.json").exists():
        raise InfluenceLabError(
            f"sweep_dir '{sweep}' holds no plan.json; run influence-lab counterfactual first."
        )
    # the sweep's config (written by counterfactual; it may have been edited by hand)
    base = validate(OmegaConf.load(sweep / "config.yaml"))
    plan = Plan.read(sweep)
    job = settings.job
    if job is None or not 0 <= job < len(plan.jobs):
        raise InfluenceLabError(f"job is {job}; this sweep has jobs 0..{len(plan.jobs) - 1}.")
    members = {m.member_id: m for m in plan.members}
    results = sweep / "results"
    with claim(results / f".job{job:04d}.lock", f"retrain job {job} of {sweep}"):
        todo = [members[i] for i in plan.jobs[job] if not member_finished(results, i)]
        if not todo:
            console.print(f"retrain job {job}: every member is already done", highlight=False)
            return []
        return run_job(base, plan, sweep, job, todo)


def run_job(
    base: StageSettings, plan: Plan, sweep: Path, job: int, todo: list[Member]
) -> list[str]:
    results = sweep / "results"
    bundle = load_data(base.data)
    full = load_model(plan.model_dir)
    prompts, originals, _ = load_outputs(plan.generate_dir)
    seeds = [plan.seeds_of(t) for t in range(len(prompts))]
    embedders = {
        name: build_embedder(
            name,
            base.embedders[name],
            model=full,
            model_signature=plan.model_signature,
            bundle=bundle,
            root=output_dir(base),
        )
        for name in base.counterfactual.embedders
    }
    full_losses = [losses(full, originals[t], prompts[t]) for t in range(len(prompts))]
    canaries = base.data.canaries
    patterns = (
        {"canary": canary_pattern(np.asarray(bundle.full[0]["image"]).shape, canaries.seed)}
        if base.data.canary_count > 0
        else {}
    )
    finished = []
    with stage_tracking(
        base,
        sweep / "jobs" / f"job{job:04d}",
        "retrain",
        {"job": job, "members": plan.jobs[job]},
        name=f"retrain-{sweep.name}-job{job}",
    ) as tracking:
        # the pack's checkpoint directory is named by its members, so a regrouped sweep never
        # resumes a pack of other members
        pack_dir = sweep / "packs" / signature(sorted(m.member_id for m in todo))
        failures = {}
        runs = train_members(base, bundle, [m.to_dict() for m in todo], pack_dir, failures=failures)
        write_failures(results, job, failures)
        for member in (m for m in todo if m.member_id in runs):
            model = use_sampling(load_model(runs[member.member_id].path), base.model)
            table, regenerated = measure_member(
                model, member, full_losses, originals, prompts, seeds, embedders, patterns
            )
            write_member(results, job, member.member_id, table, regenerated)
            means = table[table.own].groupby("metric")["value"].mean()
            if tracking.wandb_run is not None:
                tracking.wandb_run.log({f"{member.arm}/{m}": float(v) for m, v in means.items()})
            finished.append(member.member_id)
            console.print(
                f"retrain job {job}: {member.member_id} "
                + ", ".join(f"{m}={v:.4g}" for m, v in means.items()),
                highlight=False,
            )
    return finished


run = stage_entry(retrain)
