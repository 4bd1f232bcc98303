"""`influence-lab counterfactual`: plan removals (each method's top-k and controls), retrain
without them as a Hydra multirun of `retrain`, and compare the changes with paired statistics.

Writes plan.json (every member with its removed ids), results/ (one file per member),
results.parquet, stats.csv, arms.csv, chart.png and summary.md. Re-running the same command runs
only the members that are missing."""

from __future__ import annotations

import pandas as pd

from ..attribution.prompt_filter import PromptFilter
from ..data import load_data
from ..entry.stage_entry import (
    console,
    output_dir,
    settings_of,
    stage_entry,
    stage_tracking,
    upstream,
)
from ..errors import InfluenceLabError
from ..evaluation.launch import launcher_overrides, run_multirun
from ..evaluation.removal_plans import PLAN_DESIGN, Plan, jobs_of, make_plan
from ..evaluation.sweep import gather, member_finished, write_tables
from ..reporting.exports import export_metrics
from ..reporting.regenerations import draw_regenerations
from ..reporting.sweep_summary import (
    bar_chart,
    forest_plot,
    headline,
    print_summary,
    summary_markdown,
)
from ..settings import StageSettings
from ..store.cached import cached, result_dir
from ..store.files import RunDir, write_text
from ..store.records import AttributeProvenance, GenerateProvenance
from .attribute import attribute

REGENERATED_PROMPTS = 6  # prompts whose outputs before / after retraining are drawn


def _methods(cfg_methods, ranking: pd.DataFrame) -> list[str]:
    available = list(dict.fromkeys(ranking.method))
    if cfg_methods in (None, "auto"):
        return available
    methods = [str(m) for m in cfg_methods]
    missing = [m for m in methods if m not in available]
    if missing:
        raise InfluenceLabError(
            f"counterfactual.methods has {missing}, which the attribute stage did not run "
            f"(it ran {', '.join(available)}); add them to attribution.methods."
        )
    return methods


def counterfactual(settings: StageSettings) -> RunDir:
    """The sweep of these settings; with `replicates` > 1, one sweep per replicate (seeds shifted:
    `stages.replicates`) and the folder of their pooled statistics."""
    settings = settings_of(settings)
    if settings.replicates > 1:
        from ..evaluation.replicated_sweeps import replicated

        return replicated(settings, one_sweep)
    return one_sweep(settings)[0]


def one_sweep(settings: StageSettings, nulls_only: bool = False) -> tuple[RunDir, RunDir]:
    """One counterfactual sweep: (its result, the attribute result it tested). `nulls_only`: the
    null arms and the controls, no method (a run of `calibrate`)."""
    bundle = load_data(settings.data)
    att_run = attribute(upstream(settings))
    att = AttributeProvenance.read(att_run.path)
    gen = GenerateProvenance.read(att.generate_dir)
    ranking = pd.read_parquet(att_run / "attribution.parquet")
    cf = settings.counterfactual
    methods = [] if nulls_only else _methods(cf.methods, ranking)
    prompt_filter = PromptFilter(list(bundle.train["caption"]), settings.attribution.filter)
    train_ids = list(bundle.train["id"])
    prompts = ranking.drop_duplicates("target").sort_values("target")["prompt"].tolist()
    pools = {
        t: [train_ids[i] for i in prompt_filter.pool(p, settings.attribution.pool_size)[0]]
        for t, p in enumerate(prompts)
    }
    members = make_plan(
        ranking,
        pools,
        train_ids,
        methods,
        list(cf.arms),
        list(cf.k),
        list(cf.seeds),
        cf.grouping,
        cf.group_size,
        nulls=cf.nulls or nulls_only,
        null_seed=settings.seed,
    )
    plan = Plan(
        members,
        jobs_of(members, cf.pack_size),
        gen.model_dir,
        gen.model_signature,
        att.generate_dir,
        gen.seeds,
        gen.prompt_seeds,
        methods,
    )
    spec = {  # the counterfactual section hashed as given (see StageSettings._given)
        "attribute_signature": att_run.signature,
        "design": PLAN_DESIGN,
        "methods": methods,
        "counterfactual": {
            k: v
            for k, v in settings.given("counterfactual").items()
            if k not in ("launcher", "launcher_overrides", "pack_size")
        },
    }
    run = result_dir(settings, "counterfactual", spec)
    # a second sweep on the same output directory waits, then reuses this one
    result = cached(
        run,
        settings.force,
        lambda run: sweep(settings, run, plan),
        reuse=lambda run: print_summary(pd.read_csv(run / "stats.csv"), console),
    )
    return result, att_run


def headline_numbers(stats: pd.DataFrame) -> dict[str, float]:
    """The sweep's headline numbers for a W&B summary: per method, k and control of the headline
    metric, `<metric>/<method>@<k>/vs_<control>/{diff,ci_low,ci_high,p,units}`."""
    out = {}
    for r in headline(stats).itertuples():
        key = f"{r.metric}/{r.method}@{r.k}/vs_{r.control}"
        out.update(
            {
                f"{key}/diff": float(r.mean_diff),
                f"{key}/ci_low": float(r.ci_low),
                f"{key}/ci_high": float(r.ci_high),
                f"{key}/p": float(r.p),
                f"{key}/units": int(r.n_units),
            }
        )
    return out


def sweep(settings: StageSettings, run: RunDir, plan: Plan) -> dict:
    write_text(run / "config.yaml", settings.config_yaml())  # what retrain reads
    plan.write(run.path)
    results = run / "results"
    results.mkdir(exist_ok=True)
    members = plan.members

    def count_done() -> int:
        return sum(1 for m in members if member_finished(results, m.member_id))

    missing = [
        j for j, ids in enumerate(plan.jobs) if not all(member_finished(results, i) for i in ids)
    ]
    console.print(
        f"counterfactual sweep {run.path}: {len(members)} retrained models "
        f"in {len(plan.jobs)} jobs, "
        f"{len(members) - count_done()} to run",
        highlight=False,
    )
    if missing:
        cf = settings.counterfactual
        overrides = launcher_overrides(cf.launcher, list(cf.launcher_overrides))
        run_multirun(
            run.path,
            missing,
            overrides + [f"paths.output_dir={output_dir(settings)}"],
            count_done,
            len(members),
            run / "retrain.log",
        )
    if count_done() != len(members):
        raise InfluenceLabError(
            f"{len(members) - count_done()} members of {run.path} have no results; "
            f"see {run / 'retrain.log'} and run the same command again."
        )
    table, failed = gather(run.path, members)
    stats, arms, experiments = write_tables(run.path, table)
    chart = bar_chart(stats, run / "chart.png")
    forest = forest_plot(stats, export_metrics(stats), run / "forest.png")
    draw_regenerations(run.path, plan, REGENERATED_PROMPTS)
    write_text(
        run / "summary.md",
        summary_markdown(stats, arms, chart, experiments, failed, len(members), forest),
    )
    with stage_tracking(
        settings, run.path, "counterfactual", {"signature": run.signature}
    ) as tracking:
        tracking.log_frame("stats", stats)
        tracking.log_frame("arms", arms)
        tracking.log_image("chart", chart, "top-k minus control, 95% bootstrap interval")
        tracking.log_image("forest", forest, "the finding: top-k minus each control, 95% interval")
        head = headline_numbers(stats)
        tracking.summary(head)
        diffs = {k.removesuffix("/diff"): v for k, v in head.items() if k.endswith("/diff")}
        tracking.log_bars(
            "headline", list(diffs), list(diffs.values()), "top-k minus control (headline metric)"
        )
    print_summary(stats, console)
    console.print(
        f"  results: {run / 'results.parquet'}\n  forest plot: {forest}\n"
        f"  chart (every metric): {chart}\n  summary: {run / 'summary.md'}",
        highlight=False,
    )
    return {"members": len(members), "failed": len(failed)}


run = stage_entry(counterfactual)
