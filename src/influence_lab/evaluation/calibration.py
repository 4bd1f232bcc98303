"""The false-positive rate of a counterfactual design, measured with null arms.

Each null run (`influence-lab calibrate`) is one sweep of the design with only the null arms
(`plans.NULLS`: `null_<control>` drawn like each control) and the controls, every seed of the chain
shifted. A null against its own control compares two nulls, so a calibrated 95% interval excludes
0 in about 5% of runs and the p-values are uniform. Per (control, metric): the runs, how many
intervals excluded 0, that fraction with its exact (Clopper-Pearson) 95% interval, the
Kolmogorov-Smirnov p of the p-values against uniform, and the design's median smallest
detectable effect (80% power at 5%, `statistics.detectable_effect`). Where the sweeps measured the
other targets (the verdict then tests the change beyond them), the same for the test of the own
targets' total change (`total_*`, `statistics.compare`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .removal_plans import null_control

# the bar a calibrated design meets: this share of null intervals excluding 0, uniform p-values
CALIBRATED = (0.02, 0.09)
NOMINAL = 0.05  # the rate a calibrated 95% interval has
UNIFORM_P = 0.05


def null_rows(stats_table: pd.DataFrame, run: int) -> pd.DataFrame:
    """The rows of one run's stats.csv that compare a null with its own control, tagged with the
    run and whether the 95% interval excluded 0."""
    nulls = stats_table[stats_table.method.map(null_control).notna()].copy()
    nulls = nulls[nulls.method.map(null_control) == nulls.control]
    nulls["run"] = run
    nulls["excluded"] = (nulls.ci_low > 0) | (nulls.ci_high < 0)
    if "total_ci_low" in nulls:  # the own targets' total change, beside a within-retrain estimate
        nulls["total_excluded"] = (nulls.total_ci_low > 0) | (nulls.total_ci_high < 0)
    return nulls


def rate_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (control, metric) over the null runs: runs, excluded, fpr, fpr_low, fpr_high, ks_p,
    median mde, median units and the `status` (calibrated, anti-conservative, conservative, or p
    values not uniform); the same for the test of the own targets' total change as `total_*`
    (where the verdict's estimate is the within-retrain one, `statistics.compare`)."""
    rows = []
    for (control, metric), part in runs.groupby(["control", "metric"], sort=False):
        row = {"control": control, "metric": metric, **_rates(part, "p", "excluded")}
        row["mde"] = float(np.nanmedian(part.mde)) if part.mde.notna().any() else float("nan")
        row["units"] = int(np.median(part.n_units)) if len(part) else 0
        beyond = "estimate" in part and (part["estimate"] == "beyond other prompts").any()
        if "total_p" in part and beyond:
            total = _rates(part, "total_p", "total_excluded")
            row.update({f"total_{k}": v for k, v in total.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _rates(part: pd.DataFrame, p: str, excluded: str) -> dict:
    """runs, excluded, fpr with its exact binomial interval, the KS p of the p-values, status."""
    tested = part[np.isfinite(part[p])]
    count, hits = len(tested), int(tested[excluded].sum())
    if count:
        ci = stats.binomtest(hits, count).proportion_ci(0.95, method="exact")
        low, high = float(ci.low), float(ci.high)
    else:
        low = high = float("nan")
    ks = float(stats.kstest(tested[p], "uniform").pvalue) if count > 1 else float("nan")
    fpr = hits / count if count else float("nan")
    # how surprising the count is for a calibrated 5% (exact binomial test): with 20 runs a 5%
    # design excludes 0 in no run 36% of the time, so the rate alone reads "conservative" often
    at_five = float(stats.binomtest(hits, count, NOMINAL).pvalue) if count else float("nan")
    return {
        "runs": count,
        "excluded": hits,
        "fpr": fpr,
        "fpr_low": low,
        "fpr_high": high,
        "p_vs_5pct": at_five,
        "ks_p": ks,
        "status": status(fpr, ks),
    }


def status(fpr: float, ks_p: float) -> str:
    if not np.isfinite(fpr):
        return "no runs"
    if fpr > CALIBRATED[1]:
        return "anti-conservative"
    if np.isfinite(ks_p) and ks_p <= UNIFORM_P:
        return "p values not uniform"
    if fpr < CALIBRATED[0]:
        return "conservative"
    return "calibrated"
