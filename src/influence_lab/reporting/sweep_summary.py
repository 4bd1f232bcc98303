"""The counterfactual summary: a rich table, a bar chart with intervals, and markdown."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from rich.table import Table  # noqa: E402

from ..store.files import atomic_write  # noqa: E402
from .document import cell, table_markdown  # noqa: E402

HEADLINE = "delta_loss"


def headline(stats: pd.DataFrame) -> pd.DataFrame:
    """The rows of the headline metric (all rows if it is absent)."""
    return stats[stats.metric == HEADLINE] if HEADLINE in set(stats.metric) else stats


def replicate_count(stats: pd.DataFrame) -> int:
    """How many replicates a sweep's statistics pool (1 for a single sweep's)."""
    return int(stats["replicates"].max()) if "replicates" in stats and len(stats) else 1


def stable_mask(stats: pd.DataFrame) -> np.ndarray:
    """Which rows are `stable` (the flag as written, or read back from a CSV)."""
    return stats["stable"].astype(str).isin(["True", "1.0", "1"]).to_numpy()


SHOWN = ["method", "k", "control", "topk_mean", "control_mean", "mean_diff", "ci_low", "ci_high"]
SHOWN += ["units", "estimate", "p", "mde", "verdict", "total_mean_diff", "total_p"]
POOLED = ["replicates", "stable", "replicate_diffs", "topk_jaccard"]


def shown_columns(stats: pd.DataFrame, first: tuple = (), pooled: tuple = tuple(POOLED)) -> list:
    """The columns of stats.csv that tables show (one list for the summary, RESULTS.md and the
    report): `first` before them, and the replicate columns of `pooled` when the statistics pool
    several replicates; only the columns present (tables written before a column existed)."""
    cols = [*first, *SHOWN, *(pooled if replicate_count(stats) > 1 else ())]
    return [c for c in cols if c in stats]


def verdict_text(r) -> str:
    """A row's verdict in words: 'above' / 'below' / 'no clear difference', or 'undecided: N units
    (MDE x)' where the design has too few independent units to decide."""
    v = getattr(r, "verdict", None)
    if not isinstance(v, str):
        return ""
    if v == "undecided":
        mde = getattr(r, "mde", float("nan"))
        shown = f"; detects {cell(mde)}" if np.isfinite(mde) else ""
        return f"undecided: {int(r.n_units)} units{shown}"
    return v


def print_summary(stats: pd.DataFrame, console) -> None:
    """The headline metric only (every metric is in stats.csv and summary.md): per row the
    difference over the independent units, their count, p and the verdict; pooled over replicates
    (a `replicates` column above 1), also `stable` and the top-k overlap across replicates."""
    head = headline(stats)
    count = replicate_count(head)
    pooled = count > 1
    table = Table(
        title=f"{head.metric.iloc[0] if len(head) else ''}: "
        f"removing each method's top-k vs controls (over independent units: retrained models)"
    )
    columns = ["method", "k", "vs control", "top-k", "control", "diff [95% CI]", "units", "p"]
    columns += ["verdict", *(["stable", "top-k Jaccard"] if pooled else [])]
    for col in columns:
        table.add_column(col, no_wrap=True)
    stable = stable_mask(head) if pooled else None
    for i, r in enumerate(head.itertuples()):
        cells = [
            r.method,
            str(r.k),
            r.control,
            cell(r.topk_mean),
            cell(r.control_mean),
            f"{cell(r.mean_diff)} [{cell(r.ci_low)}, {cell(r.ci_high)}]",
            str(getattr(r, "units", "")),
            cell(r.p) if getattr(r, "verdict", "") != "undecided" else "-",
            verdict_text(r),
        ]
        if pooled:
            cells += ["yes" if stable[i] else "no", cell(getattr(r, "topk_jaccard", None))]
        table.add_row(*cells)
    console.print(table)


def bar_chart(stats: pd.DataFrame, path: Path) -> Path:
    """One panel per metric: top-k minus each control, per method, with bootstrap intervals."""
    metrics = list(dict.fromkeys(stats.metric))
    ncols = min(3, len(metrics))  # three panels a row: legible at page width
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(7.0, 4.2 * ncols), 3.4 * nrows + 0.4), squeeze=False
    )
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        sub = stats[stats.metric == metric]
        methods = list(dict.fromkeys(sub.method))
        controls = list(dict.fromkeys(sub.control))
        width = 0.8 / max(1, len(controls))
        for j, control in enumerate(controls):
            part = sub[sub.control == control].set_index("method").reindex(methods)
            x = np.arange(len(methods)) + j * width
            err = np.vstack([part.mean_diff - part.ci_low, part.ci_high - part.mean_diff])
            ax.bar(
                x, part.mean_diff, width, yerr=np.nan_to_num(err), capsize=3, label=f"vs {control}"
            )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(np.arange(len(methods)) + width * (len(controls) - 1) / 2)
        ax.set_xticklabels(methods, rotation=20, fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.set_ylabel("top-k effect minus control effect", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        "Counterfactual retraining: how much more removing the top-k changed the outputs",
        fontsize=10,
    )
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return Path(path)


def summary_markdown(
    stats: pd.DataFrame,
    arms: pd.DataFrame,
    chart: Path,
    experiments: pd.DataFrame | None = None,
    failed: list[dict] | None = None,
    members: int = 0,
    forest: Path | None = None,
) -> str:
    """summary.md of a sweep; `failed`: the records of the members that failed, of `members` in
    all; `forest`: the forest plot of the finding, shown under the headline."""
    head = headline(stats)
    parts = [
        "# Counterfactual summary",
        "",
        "Per method and k: the change when the method's top-k items are removed minus the change "
        "when control items are removed, over the independent units (targets or groups with "
        "retrained models of their own, mean over seeds first; `units`), with a Student t 95% "
        "interval and p-value, `mde` (the smallest difference the design detects with 80% power) "
        "and the `verdict` (`undecided` below 6 units). `estimate`: `beyond other prompts` (each "
        "unit's change of its own outputs minus the other prompts' change in the same retrained "
        "model, which cancels the retrain's common shift) where every member measured the other "
        "prompts, else `own prompts`; `total_*`: the own outputs' total change. `delta_loss` is "
        "the retrained model's loss on the original output minus the full model's; `drop_*` is "
        "1 - cosine between the regenerated and the original output.",
        "",
        "## Headline",
        "",
        table_markdown(head),
        "",
        *([f"![forest plot]({forest.name})", ""] if forest is not None else []),
        "## Every comparison",
        "",
        table_markdown(stats),
        "",
        "## Per arm (mean, std, range over targets)",
        "",
        table_markdown(arms),
        "",
        f"Every metric: ![chart]({chart.name})",
        "",
    ]
    if experiments is not None and len(experiments):
        parts += [
            "## Per experiment: similarity to the reference outputs before and after "
            "(the paper's table)",
            "",
            table_markdown(experiments),
            "",
        ]
    summary = "\n".join(parts)
    if failed:
        summary += (
            f"\n## Failed members\n\n{len(failed)} of {members} retrained models failed "
            f"and have no "
            f"numbers (failures.csv):\n\n" + "\n".join(f"- {r['error']}" for r in failed) + "\n"
        )
    return summary


def forest_plot(stats: pd.DataFrame, metrics: dict[str, str], path: Path) -> Path:
    """The report's one picture of the sweep: per method and k (rows), the top-k effect minus each
    control's (a marker per control) with its 95% interval, one panel per metric of `metrics`
    ({metric: axis label}); 0 = no more change than the control."""
    rows = list(dict.fromkeys(zip(stats.method, stats.k, strict=True)))
    controls = list(dict.fromkeys(stats.control))
    ncols = min(2, len(metrics))  # two panels a row: legible at page width
    nrows = -(-len(metrics) // ncols)
    height = 0.55 * len(rows) * max(1, len(controls) / 2) + 1.3
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(max(7.5, 4.6 * ncols + 1.6), height * nrows + 0.4),
        squeeze=False,
        sharey=True,
    )
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    spread = 0.5 / max(1, len(controls))
    count = replicate_count(stats)
    pooled = count > 1
    for ax, (metric, label) in zip(axes.flat, metrics.items(), strict=False):
        sub = stats[stats.metric == metric]
        for j, control in enumerate(controls):
            part = sub[sub.control == control].set_index(["method", "k"]).reindex(rows)
            y = np.arange(len(rows)) + (j - (len(controls) - 1) / 2) * spread
            err = np.vstack([part.mean_diff - part.ci_low, part.ci_high - part.mean_diff])
            ax.errorbar(
                part.mean_diff, y, xerr=np.nan_to_num(err), fmt="o", ms=5, capsize=3,
                color=f"C{j}", label=f"vs {control}",
            )  # fmt: skip
            if pooled:  # hollow markers: a verdict whose sign some replicate reverses
                unstable = ~stable_mask(part)
                ax.plot(
                    part.mean_diff[unstable],
                    y[unstable],
                    "o",
                    ms=5,
                    mfc="white",
                    mec=f"C{j}",
                    ls="none",
                    zorder=4,
                )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(label, fontsize=10)
        ax.set_title(metric, fontsize=10)
        ax.tick_params(labelsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # small values: long labels collide
        ax.grid(axis="x", color="0.9")
    for row in axes:
        row[0].set_yticks(np.arange(len(rows)), [f"{m}, top {k}" for m, k in rows])
    axes[0][0].invert_yaxis()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(controls), fontsize=10, frameon=False)
    title = "Effect of removing each method's top-k minus a control's (95% intervals)"
    if pooled:
        title += (
            f"\nover the independent units of {count} replicates; "
            "hollow: not stable (a replicate reverses the sign)"
        )
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.45 / (height * nrows + 0.4), 1, 1))
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)
