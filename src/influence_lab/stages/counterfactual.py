"""`influence-lab counterfactual`: plan removals (each method's top-k and controls), retrain
without them as a Hydra multirun of `retrain`, and compare the changes with paired statistics.

Writes plan.json (every member with its removed ids), results/ (one file per member),
results.parquet, stats.csv, arms.csv, chart.png and summary.md. Re-running the same command runs
only the members that are missing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ..attribution.prompt_filter import PromptFilter
from ..counterfactual.plans import jobs_of, make_plan
from ..counterfactual.report import bar_chart, print_summary, summary_markdown
from ..counterfactual.statistics import arm_table, compare, experiment_table
from ..data import load_data
from ..errors import InfluenceLabError
from ..orchestration.launch import launcher_overrides, run_multirun
from ..orchestration.signature import signature
from ..orchestration.store import RunDir, atomic_write, read_json, write_json, write_text
from ..tracking.loggers import Tracking
from .attribute import attribute
from .common import console, output_dir, reused, stage_entry, upstream
from .retrain import member_done, member_failed, member_finished


def _methods(cfg_methods, ranking: pd.DataFrame) -> list[str]:
    available = list(dict.fromkeys(ranking.method))
    if cfg_methods in (None, "auto"):
        return available
    methods = [str(m) for m in cfg_methods]
    missing = [m for m in methods if m not in available]
    if missing:
        raise InfluenceLabError(f"counterfactual.methods has {missing}, which the attribute stage did not run "
                                f"(it ran {', '.join(available)}); add them to attribution.methods.")
    return methods


def counterfactual(cfg: DictConfig) -> RunDir:
    bundle = load_data(cfg.data)
    att_run = attribute(upstream(cfg))
    att = read_json(att_run / "provenance.json")
    gen = read_json(Path(att["generate_dir"]) / "provenance.json")
    ranking = pd.read_parquet(att_run / "attribution.parquet")
    ccfg = cfg.counterfactual
    methods = _methods(OmegaConf.to_container(ccfg.methods) if not isinstance(ccfg.methods, str) else ccfg.methods,
                       ranking)
    prompt_filter = PromptFilter(list(bundle.train["caption"]), str(cfg.attribution.filter))
    train_ids = list(bundle.train["id"])
    prompts = ranking.drop_duplicates("target").sort_values("target")["prompt"].tolist()
    pools = {t: [train_ids[i] for i in prompt_filter.pool(p, cfg.attribution.pool_size)[0]] for t, p in enumerate(prompts)}
    members = make_plan(ranking, pools, train_ids, methods, list(ccfg.arms), [int(k) for k in ccfg.k],
                        [int(s) for s in ccfg.seeds], str(ccfg.grouping),
                        None if ccfg.get("group_size") is None else int(ccfg.group_size))
    jobs = jobs_of(members, int(ccfg.pack_size))
    spec = {"attribute_signature": att_run.signature, "methods": methods,
            "counterfactual": {k: v for k, v in OmegaConf.to_container(ccfg, resolve=True).items()
                               if k not in ("launcher", "launcher_overrides", "pack_size")}}
    run = RunDir(output_dir(cfg), "counterfactual", f"{cfg.model.name}-{cfg.data.name}", signature(spec))
    with run.claim():  # a second sweep on the same output directory waits, then reuses this one
        return sweep(cfg, run, members, jobs, methods, att, gen)


def sweep(cfg: DictConfig, run: RunDir, members: list, jobs: list, methods: list, att: dict, gen: dict) -> RunDir:
    ccfg = cfg.counterfactual
    if run.done and not cfg.force:
        reused(run)
        print_summary(pd.read_csv(run / "stats.csv"), console)
        return run
    if cfg.force:
        run.prepare(force=True)
    run.prepare()
    write_text(run / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    plan = {"members": [m.to_dict() for m in members], "jobs": jobs, "model_dir": gen["model_dir"],
            "model_signature": gen["model_signature"], "generate_dir": att["generate_dir"],
            "output_seeds": gen["seeds"], "prompt_seeds": gen.get("prompt_seeds"), "methods": methods}
    write_json(run / "plan.json", plan)
    results = run / "results"
    results.mkdir(exist_ok=True)

    def count_done() -> int:
        return sum(1 for m in members if member_finished(results, m.member_id))

    missing = [j for j, ids in enumerate(jobs) if not all(member_finished(results, i) for i in ids)]
    console.print(f"counterfactual sweep {run.path}: {len(members)} retrained models in {len(jobs)} jobs, "
                  f"{len(members) - count_done()} to run", highlight=False)
    if missing:
        overrides = launcher_overrides(str(ccfg.launcher), list(ccfg.launcher_overrides))
        overrides += [f"paths.output_dir={output_dir(cfg)}"]
        run_multirun(run.path, missing, overrides, count_done, len(members), run / "retrain.log")
    if count_done() != len(members):
        raise InfluenceLabError(f"{len(members) - count_done()} members of {run.path} have no results; "
                                f"see {run / 'retrain.log'} and run the same command again.")
    failed = [read_json(results / f"{m.member_id}.failed") for m in members if member_failed(results, m.member_id)]
    if failed:
        atomic_write(run / "failures.csv", lambda p: pd.DataFrame(failed).to_csv(p, index=False))
        for record in failed:
            console.print(f"[red]failed member:[/] {record['error']}", highlight=False)
    finished = [m for m in members if member_done(results, m.member_id)]
    if not finished:
        raise InfluenceLabError(f"every member of {run.path} failed (see {run / 'failures.csv'}); "
                                f"no counterfactual numbers can be computed.")
    table = pd.concat([pd.read_parquet(results / f"{m.member_id}.parquet") for m in finished], ignore_index=True)
    stats, arms, experiments = compare(table), arm_table(table), experiment_table(table)
    atomic_write(run / "results.parquet", lambda p: table.to_parquet(p, index=False))
    if len(experiments):
        atomic_write(run / "experiments.csv", lambda p: experiments.to_csv(p, index=False))
    atomic_write(run / "stats.csv", lambda p: stats.to_csv(p, index=False))
    atomic_write(run / "arms.csv", lambda p: arms.to_csv(p, index=False))
    chart = bar_chart(stats, run / "chart.png")
    summary = summary_markdown(stats, arms, chart, experiments)
    if failed:
        summary += (f"\n## Failed members\n\n{len(failed)} of {len(members)} retrained models failed and have no "
                    f"numbers (failures.csv):\n\n" + "\n".join(f"- {r['error']}" for r in failed) + "\n")
    write_text(run / "summary.md", summary)
    log_summary(cfg, run, stats, arms, chart)
    run.mark_done({"members": len(members), "failed": len(failed)})
    print_summary(stats, console)
    console.print(f"  results: {run / 'results.parquet'}\n  chart: {chart}\n  summary: {run / 'summary.md'}",
                  highlight=False)
    return run


def log_summary(cfg, run: RunDir, stats: pd.DataFrame, arms: pd.DataFrame, chart) -> None:
    tracking = Tracking(cfg.logger, run.path, output_dir(cfg), "counterfactual", str(cfg.group),
                        f"counterfactual-{run.path.name}", {"signature": run.signature})
    try:
        tracking.log_table("stats", list(stats.columns), stats.astype(object).values.tolist())
        tracking.log_table("arms", list(arms.columns), arms.astype(object).values.tolist())
        tracking.log_image("chart", chart, "top-k minus control, 95% bootstrap interval")
    finally:
        tracking.finish()


run = stage_entry(counterfactual)
