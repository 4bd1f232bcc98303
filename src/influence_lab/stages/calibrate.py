"""`influence-lab calibrate`: the false-positive rate of this config's counterfactual design.

Runs the design `calibrate.runs` times with the null arms and the controls only (no method), run r
shifting every seed of the chain as replicate r would (`replicate_changes`: model, generation,
retrains, embedders; the null draws follow the model seed), each run its own cached sweep (a killed
calibration resumes), ranking with `calibrate.methods` (the nulls need only the targets and the
pools). Then, per control and metric (`counterfactual.calibration`): the share of null intervals
that exclude 0 with its binomial interval, the p-values' KS test against uniform, and the
smallest detectable effect.

Writes, under `<output_dir>/calibration/<model>-<data>-<signature>/`: runs.csv (every null
comparison of every run), rates.csv, calibration.png (delta_loss), summary.md; logs them to W&B.
With `pipeline.runs` (an experiment of several configs), each config is calibrated in turn;
`calibrate.export_dir` copies each into an experiment's folder with a RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from ..entry.plan import plan_of
from ..entry.stage_entry import console, settings_of, stage_entry, stage_tracking
from ..evaluation.calibration import null_rows, rate_table
from ..evaluation.removal_plans import design_of
from ..evaluation.replicated_sweeps import pooled_results
from ..evaluation.replicates import replicate_changes
from ..evaluation.statistics import compare
from ..reporting.calibration_summary import calibration_plot
from ..reporting.document import cell, table_markdown
from ..reporting.exports import export_calibration
from ..reporting.sweep_summary import HEADLINE
from ..settings import StageSettings
from ..store.cached import cached, result_dir
from ..store.files import RunDir, atomic_write, write_json, write_text
from .counterfactual import one_sweep
from .pipeline import run_configs


def calibrate(settings: StageSettings) -> dict:
    settings = settings_of(settings)
    out = {}
    for label, run_settings in run_configs(settings, "calibrate"):
        console.print(f"[bold]calibrating {label}[/]", highlight=False)
        out[label] = calibrate_one(run_settings)
    if settings.calibrate.export_dir:
        export_calibration(Path(settings.calibrate.export_dir), out, settings.group)
    return out


def null_settings(settings: StageSettings, r: int) -> StageSettings:
    """Null run `r` of these settings: seeds shifted as replicate r, ranked with
    calibrate.methods."""
    from ..attribution.methods.registry import NULL_RUN_METHODS

    changes = replicate_changes(settings, r)
    changes["attribution.methods"] = list(settings.calibrate.methods or NULL_RUN_METHODS)
    changes["counterfactual.methods"] = "auto"  # a null run tests no method
    changes["attribution.paper_embedder"] = settings.attribution.paper_embedder
    changes["force"] = False  # force=true recomputes the calibration's summary, not its runs
    return settings.replaced(changes)


def calibrate_one(settings: StageSettings) -> RunDir:
    """The null runs of one config and their rates. A design with `replicates` R is calibrated as
    it is run: null run i pools the R replicates of shifts (start + i) * R to (start + i + 1) * R
    - 1, so its units are those of the design's verdicts."""
    cal, count = settings.calibrate, settings.replicates
    plan_of(null_settings(settings, cal.start * count))  # its methods, checked before any run
    runs = []
    for i, r in enumerate(range(cal.start, cal.start + cal.runs)):
        shifts = list(range(r * count, (r + 1) * count))
        console.print(f"[bold]null run {i + 1}/{cal.runs}[/] (shifts {shifts})", highlight=False)
        runs.append([one_sweep(null_settings(settings, j), nulls_only=True)[0] for j in shifts])
    spec = {
        "runs": [[s.signature for s in sweeps] for sweeps in runs],
        "design": design_of(settings.given()),
    }
    run = result_dir(settings, "calibration", spec)
    return cached(
        run,
        settings.force,
        lambda run: summarise(settings, run, runs),
        reuse=lambda run: print_rates(pd.read_csv(run / "rates.csv")),
    )


def summarise(settings: StageSettings, run: RunDir, groups: list[list[RunDir]]) -> dict:
    # from each run's measurements, not its stats.csv: a rerun with force=true applies the
    # statistics of the code that runs it to the cached sweeps
    sweeps = [s for group in groups for s in group]
    write_json(run / "design.json", design_of(settings.given()))
    runs = pd.concat(
        [null_rows(compare(pooled_results(group)), r) for r, group in enumerate(groups)],
        ignore_index=True,
    )
    rates = rate_table(runs)
    atomic_write(run / "runs.csv", lambda p: runs.to_csv(p, index=False))
    atomic_write(run / "rates.csv", lambda p: rates.to_csv(p, index=False))
    metric = HEADLINE if HEADLINE in set(runs.metric) else runs.metric.iloc[0]
    picture = calibration_plot(runs, rates, metric, run / "calibration.png")
    write_text(run / "summary.md", summary_markdown(rates, len(groups), sweeps))
    with stage_tracking(settings, run.path, "calibrate", {"runs": len(groups)}) as tracking:
        tracking.log_frame("rates", rates)
        tracking.log_frame("runs", runs)
        tracking.log_image("calibration", picture, "null intervals and p-values")
        tracking.summary(
            {
                f"{r.metric}/{r.control}/{key}": float(getattr(r, key))
                for r in rates.itertuples()
                for key in ("fpr", "fpr_low", "fpr_high", "ks_p", "mde")
            }
        )
    print_rates(rates)
    console.print(f"  rates: {run / 'rates.csv'}\n  picture: {picture}", highlight=False)
    return {"runs": len(groups)}


def print_rates(rates: pd.DataFrame) -> None:
    table = Table(title="false-positive rate: null arms against their own controls (95% intervals)")
    total = "total_fpr" in rates
    columns = ["control", "metric", "runs", "excluded 0", "rate [95% CI]", "KS p", "MDE", "status"]
    columns += ["total change: rate", "KS p", "status"] if total else []
    for col in columns:
        table.add_column(col, no_wrap=True)
    for r in rates.itertuples():
        cells = [
            r.control,
            r.metric,
            str(r.runs),
            str(r.excluded),
            f"{r.fpr:.1%} [{r.fpr_low:.1%}, {r.fpr_high:.1%}]",
            cell(r.ks_p),
            cell(r.mde),
            r.status,
        ]
        if total:
            found = isinstance(r.total_status, str)
            rate = f"{r.total_fpr:.1%} [{r.total_fpr_low:.1%}, {r.total_fpr_high:.1%}]"
            cells += [rate, cell(r.total_ks_p), r.total_status] if found else ["", "", ""]
        table.add_row(*cells)
    console.print(table)


def summary_markdown(rates: pd.DataFrame, count: int, sweeps: list[RunDir]) -> str:
    return "\n".join(
        [
            "# Calibration",
            "",
            f"{count} null runs of the design (every seed of the chain shifted per run). Each "
            "compares a null arm (null_<control>: drawn like the control) with its own control, "
            "so a calibrated design's 95% interval excludes 0 in about 5% of runs (bar: 2-9%) "
            "and its p-values are uniform (KS p > 0.05). `mde`: the median smallest difference "
            "the design detects with 80% power at 5%; `units`: independent units per comparison; "
            "`total_*`: the same for the own targets' total change, where the verdict's estimate "
            "is the change beyond the other prompts in the same retrained model.",
            "",
            table_markdown(rates),
            "",
            "![calibration](calibration.png)",
            "",
            *[f"- sweep {i}: {s.path}" for i, s in enumerate(sweeps)],
            "",
        ]
    )


run = stage_entry(calibrate)
