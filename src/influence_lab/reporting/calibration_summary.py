"""The picture of a calibration: per control, each null run's 95% interval (sorted; red where it
excludes 0) and the histogram of the runs' p-values against the uniform line."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..store.files import atomic_write  # noqa: E402


def calibration_plot(runs: pd.DataFrame, rates: pd.DataFrame, metric: str, path: Path) -> Path:
    """One row per control of `metric`: the intervals and the p-value histogram."""
    part = runs[runs.metric == metric]
    controls = list(dict.fromkeys(part.control))
    fig, axes = plt.subplots(
        len(controls), 2, figsize=(10, 2.6 * len(controls) + 0.6), squeeze=False
    )
    for (ax_ci, ax_p), control in zip(axes, controls, strict=True):
        rows = part[part.control == control].sort_values("mean_diff")
        y = np.arange(len(rows))
        colours = np.where(rows.excluded, "tab:red", "0.4")
        ax_ci.hlines(y, rows.ci_low, rows.ci_high, colors=colours, lw=1.2)
        ax_ci.plot(rows.mean_diff, y, "o", ms=2.5, color="black")
        ax_ci.axvline(0, color="black", lw=0.8)
        rate = rates[(rates.control == control) & (rates.metric == metric)].iloc[0]
        ax_ci.set_title(
            f"null_{control} vs {control}: {int(rate.excluded)}/{int(rate.runs)} exclude 0 "
            f"({rate.fpr:.0%} [{rate.fpr_low:.0%}, {rate.fpr_high:.0%}])",
            fontsize=9,
        )
        ax_ci.set_yticks([])
        ax_ci.set_xlabel(f"{metric}: null minus control, 95% interval per run", fontsize=8)
        bins = np.linspace(0, 1, 11)
        ax_p.hist(rows.p.dropna(), bins=bins, color="0.6", edgecolor="white")
        ax_p.axhline(len(rows.p.dropna()) / 10, color="tab:blue", lw=1, label="uniform")
        ax_p.set_title(f"p-values (KS against uniform: p = {rate.ks_p:.2f})", fontsize=9)
        ax_p.set_xlabel("p", fontsize=8)
        ax_p.legend(fontsize=7)
    fig.suptitle("Calibration: null arms against their own controls", fontsize=10)
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return Path(path)
