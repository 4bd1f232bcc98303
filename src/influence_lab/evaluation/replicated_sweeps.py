"""`replicates=R` for `counterfactual` and `pipeline`: R sweeps, each with every seed of the chain
shifted (`counterfactual.replicates.replicate_changes`) and each its own cached result, then one
folder of pooled statistics, `<output_dir>/counterfactual/<model>-<data>-r<R>-<signature>/`, laid
out like a sweep's so that the pipeline, exports and the report read it as one:

stats.csv (pooled over every replicate's units, `replicates`, `stable`, `replicate_diffs`,
`topk_jaccard`),
replicate_stats.csv (each replicate's own table), overlap.csv (each method's top-k overlap across
replicates), results.parquet (every replicate's rows, with `replicate`), arms.csv, experiments.csv,
forest.png, chart.png, summary.md, replicates.json (the replicate sweeps), and replicate 0's
plan.json and regenerated/ pictures."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pandas as pd

from ..console import console
from ..reporting.document import table_markdown
from ..reporting.exports import export_metrics
from ..reporting.sweep_summary import bar_chart, forest_plot, print_summary, summary_markdown
from ..settings import StageSettings
from ..store.cached import cached, result_dir
from ..store.files import RunDir, atomic_write, write_json, write_text
from ..tracking.loggers import stage_tracking
from .replicates import replicate_changes, topk_overlap
from .statistics import arm_table, compare, experiment_table

OVERLAP_NOTE = (
    "`topk_jaccard`: how much of the method's top-k per prompt the replicates share (mean "
    "pairwise Jaccard, averaged over prompts; 1 = the same items in every replicate)."
)


def replicated(settings: StageSettings, one_sweep: Callable) -> RunDir:
    """Every replicate's sweep (computed or reused), then their pooled statistics."""
    count = settings.replicates
    sweeps = []
    for r in range(count):
        changes = replicate_changes(settings, r)
        shown = ", ".join(f"{k}={v}" for k, v in changes.items()) or "the settings as given"
        console.print(f"[bold]replicate {r + 1}/{count}[/]: {shown}", highlight=False)
        sweeps.append(one_sweep(settings.replaced(changes)))
    spec = {"replicates": [(run.signature, att.signature) for run, att in sweeps]}
    run = result_dir(settings, "counterfactual", spec, suffix=f"-r{count}")
    return cached(
        run,
        settings.force,
        lambda run: pool(settings, run, sweeps),
        reuse=lambda run: print_summary(pd.read_csv(run / "stats.csv"), console),
    )


def pooled_results(sweeps) -> pd.DataFrame:
    """Every replicate sweep's measurements in one table, each row with its `replicate`."""
    return pd.concat(
        [pd.read_parquet(s / "results.parquet").assign(replicate=r) for r, s in enumerate(sweeps)],
        ignore_index=True,
    )


def pool(settings: StageSettings, run: RunDir, sweeps: list[tuple[RunDir, RunDir]]) -> dict:
    results = pooled_results([s for s, _ in sweeps])
    rankings = [pd.read_parquet(att / "attribution.parquet") for _, att in sweeps]
    overlap = pd.concat(
        [topk_overlap(rankings, k) for k in settings.counterfactual.k], ignore_index=True
    )
    stats = compare(results).merge(
        overlap[["method", "k", "topk_jaccard"]], on=["method", "k"], how="left"
    )
    each = pd.concat(
        [pd.read_csv(s / "stats.csv").assign(replicate=r) for r, (s, _) in enumerate(sweeps)],
        ignore_index=True,
    )
    arms, experiments = arm_table(results), experiment_table(results)
    tables = {
        "results.parquet": lambda p: results.to_parquet(p, index=False),
        "stats.csv": lambda p: stats.to_csv(p, index=False),
        "replicate_stats.csv": lambda p: each.to_csv(p, index=False),
        "overlap.csv": lambda p: overlap.to_csv(p, index=False),
        "arms.csv": lambda p: arms.to_csv(p, index=False),
    }
    if len(experiments):
        tables["experiments.csv"] = lambda p: experiments.to_csv(p, index=False)
    for file, write in tables.items():
        atomic_write(run / file, write)
    first = sweeps[0][0]
    shutil.copy(first / "plan.json", run / "plan.json")  # canaries and pictures: replicate 0's
    if (first / "regenerated").is_dir():
        shutil.copytree(first / "regenerated", run / "regenerated")
    write_json(run / "replicates.json", [str(s.path) for s, _ in sweeps])
    chart = bar_chart(stats, run / "chart.png")
    forest = forest_plot(stats, export_metrics(stats), run / "forest.png")
    summary = summary_markdown(stats, arms, chart, experiments, None, 0, forest)
    write_text(run / "summary.md", summary + replicate_markdown(overlap, sweeps))
    with stage_tracking(
        settings,
        run.path,
        "counterfactual",
        {"signature": run.signature, "replicates": len(sweeps)},
    ) as tracking:
        tracking.log_frame("stats", stats)
        tracking.log_frame("overlap", overlap)
        tracking.log_image("forest", forest, "pooled over replicates and prompts: 95% interval")
        tracking.summary(
            {
                f"{r.metric}/{r.method}@{r.k}/vs_{r.control}/{key}": float(getattr(r, key))
                for r in stats[stats.metric == "delta_loss"].itertuples()
                for key in ("mean_diff", "ci_low", "ci_high", "stable")
            }
        )
    print_summary(stats, console)
    console.print(
        f"  pooled over {len(sweeps)} replicates: {run / 'stats.csv'}\n"
        f"  forest plot: {forest}\n  summary: {run / 'summary.md'}",
        highlight=False,
    )
    return {"replicates": len(sweeps)}


def replicate_markdown(overlap: pd.DataFrame, sweeps) -> str:
    """summary.md's replicate section: how the pooled numbers were made, each method's top-k
    overlap, and the replicate sweeps."""
    lines = [
        "",
        f"## Replicates ({len(sweeps)})",
        "",
        "Every seed of the chain shifted per replicate (model, embedders, generation, "
        "retrains and control draws). The difference is the mean over the independent units of "
        "every replicate (targets or groups with retrained models of their own), with its t "
        "interval; `stable`: every replicate's own difference has the pooled sign "
        "(`replicate_diffs`). " + OVERLAP_NOTE,
        "",
        table_markdown(overlap),
        "",
        *[f"- replicate {r}: {s.path}" for r, (s, _) in enumerate(sweeps)],
        "",
    ]
    return "\n".join(lines)
