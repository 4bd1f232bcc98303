"""`influence-lab retrain sweep_dir=DIR job=N`: train the members of one retrain job of a
counterfactual sweep and measure each against the full model. Launched by `counterfactual` as a
Hydra multirun (`-m job=0,1,...`) on any launcher; safe to re-run: finished members are skipped,
each member's results are written atomically with a `.done` marker holding their SHA-256. A job is
claimed with a file lock, so two sweeps on one output directory never run it twice at once. A
member whose training loss stops being finite gets a `.failed` record instead of numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ..attribution.embedders import build_embedder
from ..counterfactual.metrics import losses, target_metrics
from ..data import load_data
from ..data.canaries import canary_pattern
from ..errors import InfluenceLabError
from ..models.build import load_model
from ..orchestration.signature import signature
from ..orchestration.store import atomic_write, claim, marker_intact, read_json, sha256, write_json
from ..tracking.loggers import Tracking
from ..training.members import train_members
from .attribute import load_outputs
from .common import console, output_dir, stage_entry, validate


def member_done(results: Path, member_id: str) -> bool:
    """The member's results exist and still have the hash recorded when they were written (an
    altered or truncated file makes the member count as not done, so it is measured again)."""
    return marker_intact(results / f"{member_id}.done", results)


def member_failed(results: Path, member_id: str) -> bool:
    return (results / f"{member_id}.failed").exists()


def member_finished(results: Path, member_id: str) -> bool:
    """Done, or recorded as failed (a re-run does not retry it; delete the .failed file to retry)."""
    return member_failed(results, member_id) or member_done(results, member_id)


def retrain(cfg: DictConfig) -> list[str]:
    sweep = Path(str(cfg.sweep_dir))
    if not (sweep / "plan.json").exists():
        raise InfluenceLabError(f"sweep_dir '{sweep}' holds no plan.json; run influence-lab counterfactual first.")
    base = OmegaConf.load(sweep / "config.yaml")
    validate(base)  # the sweep's config may have been edited by hand
    plan = read_json(sweep / "plan.json")
    job = int(cfg.job)
    if not 0 <= job < len(plan["jobs"]):
        raise InfluenceLabError(f"job is {job}; this sweep has jobs 0..{len(plan['jobs']) - 1}.")
    members = {m["member_id"]: m for m in plan["members"]}
    results = sweep / "results"
    with claim(results / f".job{job:04d}.lock", f"retrain job {job} of {sweep}"):
        todo = [members[i] for i in plan["jobs"][job] if not member_finished(results, i)]
        if not todo:
            console.print(f"retrain job {job}: every member is already done", highlight=False)
            return []
        return run_job(base, plan, sweep, job, todo)


def run_job(base: DictConfig, plan: dict, sweep: Path, job: int, todo: list[dict]) -> list[str]:
    results = sweep / "results"
    bundle = load_data(base.data)
    full = load_model(plan["model_dir"])
    prompts, originals, _ = load_outputs(_Dir(plan["generate_dir"]))
    seeds = plan.get("prompt_seeds") or [plan["output_seeds"]] * len(prompts)
    embedders = {name: build_embedder(name, base.embedders[name], model=full, model_signature=plan["model_signature"],
                                      bundle=bundle, root=output_dir(base))
                 for name in base.counterfactual.embedders}
    full_losses = [losses(full, originals[t], prompts[t]) for t in range(len(prompts))]
    canaries = base.data.get("canaries") or {}
    patterns = ({"canary": canary_pattern(np.asarray(bundle.full[0]["image"]).shape, int(canaries.get("seed") or 0))}
                if int(canaries.get("count") or 0) > 0 else {})
    tracking = Tracking(base.logger, sweep / "jobs" / f"job{job:04d}", output_dir(base), "retrain",
                        str(base.group), f"retrain-{sweep.name}-job{job}", {"job": job, "members": plan["jobs"][job]})
    finished = []
    try:
        # the pack's checkpoint directory is named by its members, so a regrouped sweep never
        # resumes a pack of other members
        pack_dir = sweep / "packs" / signature(sorted(m["member_id"] for m in todo))
        failures = {}
        runs = train_members(base, bundle, todo, pack_dir, failures=failures)
        for member_id, message in failures.items():
            write_json(results / f"{member_id}.failed", {"job": job, "member_id": member_id,
                                                         "error": f"retrain job {job}: {message}"})
        for member in (m for m in todo if m["member_id"] in runs):
            model = load_model(runs[member["member_id"]].path)
            rows = []
            for t in member["targets"]:
                values = target_metrics(model, full_losses[t], originals[t], prompts[t], seeds[t], embedders,
                                        patterns)
                for metric, value in values.items():
                    rows.append({"member_id": member["member_id"], "method": member["method"], "arm": member["arm"],
                                 "k": member["k"], "seed": member["seed"], "target": t, "prompt": prompts[t],
                                 "group": int(member.get("group", 0)),
                                 "n_removed": len(member["removed"]), "metric": metric, "value": value})
            table = pd.DataFrame(rows)
            atomic_write(results / f"{member['member_id']}.parquet", lambda p, tb=table: tb.to_parquet(p, index=False))
            write_json(results / f"{member['member_id']}.done",
                       {"job": job, "sha256": {f"{member['member_id']}.parquet":
                                               sha256(results / f"{member['member_id']}.parquet")}})
            means = table.groupby("metric")["value"].mean()
            if tracking.wandb_run is not None:
                tracking.wandb_run.log({f"{member['arm']}/{m}": float(v) for m, v in means.items()})
            finished.append(member["member_id"])
            console.print(f"retrain job {job}: {member['member_id']} "
                          + ", ".join(f"{m}={v:.4g}" for m, v in means.items()), highlight=False)
    finally:
        tracking.finish()
    return finished


class _Dir:
    """A path with the `/` of a RunDir, for reading another stage's files."""

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, other):
        return self.path / other


run = stage_entry(retrain)
