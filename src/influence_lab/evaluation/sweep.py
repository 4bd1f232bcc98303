"""The results of a counterfactual sweep: each member's measurements under `results/` (written with
a `.done` marker holding their SHA-256, or a `.failed` record), and the sweep's tables from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..console import console
from ..errors import InfluenceLabError
from ..store.files import atomic_write, marker_intact, read_json, sha256, write_json
from .metrics import losses, regenerate, target_metrics
from .removal_plans import Member
from .statistics import arm_table, compare, experiment_table


def member_done(results: Path, member_id: str) -> bool:
    """The member's results exist and still have the hash recorded when they were written (an
    altered or truncated file makes the member count as not done, so it is measured again)."""
    return marker_intact(results / f"{member_id}.done", results)


def member_failed(results: Path, member_id: str) -> bool:
    return (results / f"{member_id}.failed").exists()


def member_finished(results: Path, member_id: str) -> bool:
    """Done, or recorded as failed (a re-run does not retry it; delete the .failed file to
    retry)."""
    return member_failed(results, member_id) or member_done(results, member_id)


def measure_member(
    model, member: Member, full_losses, originals, prompts, seeds, embedders: dict, patterns: dict
) -> tuple[pd.DataFrame, dict]:
    """One row per target of the member and metric: the retrained model against the full one; and
    the retrained model's outputs per target ({target: outputs}, same prompts and seeds).

    The member's own targets get every metric (`own` True); every other target gets `delta_loss`
    only (`own` False: a loss on outputs already generated, no sampling), the within-retrain
    baseline that cancels the retrained model's shift common to all targets
    (`statistics.unit_effects`)."""
    rows, regenerated = [], {}

    def add(t: int, metric: str, value: float, own: bool) -> None:
        rows.append(
            {
                "member_id": member.member_id,
                "method": member.method,
                "arm": member.arm,
                "k": member.k,
                "seed": member.seed,
                "target": t,
                "prompt": prompts[t],
                "group": int(member.group),
                "unit": member.unit or member.member_id.split("-")[0],
                "n_removed": len(member.removed),
                "own": own,
                "metric": metric,
                "value": value,
            }
        )

    for t in member.targets:
        regenerated[t] = regenerate(model, prompts[t], seeds[t])
        values = target_metrics(
            model,
            full_losses[t],
            originals[t],
            regenerated[t],
            prompts[t],
            seeds[t],
            embedders,
            patterns,
        )
        for metric, value in values.items():
            add(t, metric, value, True)
    for t in sorted(set(range(len(prompts))) - set(member.targets)):
        change = losses(model, originals[t], prompts[t]) - full_losses[t]
        add(t, "delta_loss", float(np.mean(change)), False)
    return pd.DataFrame(rows), regenerated


def write_member(
    results: Path, job: int, member_id: str, table: pd.DataFrame, regenerated: dict
) -> None:
    """The member's measurements (`<id>.parquet`) and its regenerated outputs (`<id>.outputs.npz`,
    one array `t<target>` per target: images, or texts as strings), then the `.done` marker with
    both files' SHA-256."""
    files = {f"{member_id}.parquet": None, f"{member_id}.outputs.npz": None}
    atomic_write(results / f"{member_id}.parquet", lambda p: table.to_parquet(p, index=False))

    def save(p):
        with open(p, "wb") as fh:
            np.savez(fh, **{f"t{t}": np.asarray(v) for t, v in regenerated.items()})

    atomic_write(results / f"{member_id}.outputs.npz", save)
    write_json(
        results / f"{member_id}.done",
        {"job": job, "sha256": {name: sha256(results / name) for name in files}},
    )


def read_regenerated(results: Path, member_id: str) -> dict:
    """{target: outputs} a member's retrained model regenerated ({} for results written before
    the outputs were kept); texts come back as lists of strings."""
    path = results / f"{member_id}.outputs.npz"
    if not path.exists():
        return {}
    with np.load(path) as data:
        return {
            int(key[1:]): (data[key].tolist() if data[key].dtype.kind == "U" else data[key])
            for key in data.files
        }


def write_failures(results: Path, job: int, failures: dict[str, str]) -> None:
    for member_id, message in failures.items():
        write_json(
            results / f"{member_id}.failed",
            {"job": job, "member_id": member_id, "error": f"retrain job {job}: {message}"},
        )


def gather(folder: Path, members: list[Member]) -> tuple[pd.DataFrame, list[dict]]:
    """Every finished member's rows in one table, and the records of the failed members (written to
    failures.csv and reported); refused when every member failed."""
    results = folder / "results"
    failed = [
        read_json(results / f"{m.member_id}.failed")
        for m in members
        if member_failed(results, m.member_id)
    ]
    if failed:
        atomic_write(folder / "failures.csv", lambda p: pd.DataFrame(failed).to_csv(p, index=False))
        for record in failed:
            console.print(f"[red]failed member:[/] {record['error']}", highlight=False)
    finished = [m for m in members if member_done(results, m.member_id)]
    if not finished:
        raise InfluenceLabError(
            f"every member of {folder} failed (see {folder / 'failures.csv'}); "
            f"no counterfactual numbers can be computed."
        )
    table = pd.concat(
        [pd.read_parquet(results / f"{m.member_id}.parquet") for m in finished], ignore_index=True
    )
    return table, failed


def write_tables(
    folder: Path, table: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """results.parquet, stats.csv (top-k vs controls), arms.csv and (grouped sweeps)
    experiments.csv."""
    stats, arms, experiments = compare(table), arm_table(table), experiment_table(table)
    atomic_write(folder / "results.parquet", lambda p: table.to_parquet(p, index=False))
    if len(experiments):
        atomic_write(folder / "experiments.csv", lambda p: experiments.to_csv(p, index=False))
    atomic_write(folder / "stats.csv", lambda p: stats.to_csv(p, index=False))
    atomic_write(folder / "arms.csv", lambda p: arms.to_csv(p, index=False))
    return stats, arms, experiments
