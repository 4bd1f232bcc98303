"""Paired statistics across targets: does removing a method's top-k change the outputs more than
removing control items?

For each method, k, metric and control arm: per target, the top-k effect and the control effect
(each averaged over seeds) are paired; we report the mean difference with a bootstrap 95%
interval (resampling targets), a Wilcoxon signed-rank p-value, and the ratio of mean effects (where
both move the same way).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .plans import CONTROLS


def bootstrap_ci(diffs: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    if len(diffs) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (n_boot, len(diffs)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def wilcoxon_p(diffs: np.ndarray) -> float:
    if len(diffs) < 2 or np.allclose(diffs, 0):
        return float("nan")
    return float(stats.wilcoxon(diffs).pvalue)


def effect_ratio(top: float, control: float) -> float:
    """How many times the control's mean effect the top-k's is; NaN unless both move the same way
    (a ratio of changes of opposite signs, or of a change near zero, reads as a size and is not)."""
    if abs(control) <= 1e-12 or top * control <= 0:
        return float("nan")
    return top / control


def per_target(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds: one value per (method, arm, k, metric, target)."""
    return results.groupby(["method", "arm", "k", "metric", "target"], as_index=False)[
        "value"
    ].mean()


def changes_only(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of metrics that are changes (the paper's before/after levels left out)."""
    return table[~table.metric.str.startswith(("ref_before_", "ref_after_"))]


def compare(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, k, metric, control): the paired comparison of topk with that control."""
    table = changes_only(per_target(results))
    rows = []
    tested = table[table.arm == "topk"]
    for (method, k, metric), top in tested.groupby(["method", "k", "metric"]):
        top = top.set_index("target")["value"]
        for control in CONTROLS:
            ctrl = table[(table.arm == control) & (table.k == k) & (table.metric == metric)]
            if ctrl.empty:
                continue
            ctrl = ctrl.set_index("target")["value"]
            common = top.index.intersection(ctrl.index)
            diffs = (top[common] - ctrl[common]).to_numpy()
            lo, hi = bootstrap_ci(diffs)
            mean_ctrl, mean_top = float(ctrl[common].mean()), float(top[common].mean())
            rows.append(
                {
                    "method": method,
                    "k": int(k),
                    "metric": metric,
                    "control": control,
                    "n_targets": len(common),
                    "topk_mean": mean_top,
                    "control_mean": mean_ctrl,
                    "mean_diff": float(diffs.mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                    "wilcoxon_p": wilcoxon_p(diffs),
                    "ratio": effect_ratio(mean_top, mean_ctrl),
                }
            )
    return pd.DataFrame(rows)


def arm_table(results: pd.DataFrame) -> pd.DataFrame:
    """The original paper's table format: per arm, mean, std and range of each metric."""
    table = per_target(results)
    grouped = table.groupby(["method", "arm", "k", "metric"])["value"]
    out = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()
    return out.rename(columns={"count": "n_targets"})


def experiment_table(results: pd.DataFrame) -> pd.DataFrame:
    """The original paper's per-experiment table: for each group of prompts (an experiment), arm and
    embedder space, the similarity to the reference outputs before and after retraining: mean, std
    and range over the group's prompts (each prompt's value averaged over seeds first)."""
    if "group" not in results or not results.metric.str.startswith("ref_before_").any():
        return pd.DataFrame()
    per = results.groupby(["method", "arm", "k", "group", "metric", "target"], as_index=False)[
        "value"
    ].mean()
    rows = []
    for (method, arm, k, group), part in per.groupby(["method", "arm", "k", "group"]):
        for metric in sorted(m for m in part.metric.unique() if m.startswith("ref_before_")):
            space = metric[len("ref_before_") :]
            row = {
                "method": method,
                "arm": arm,
                "k": int(k),
                "experiment": int(group),
                "space": space,
            }
            for when in ("before", "after"):
                values = part[part.metric == f"ref_{when}_{space}"]["value"]
                row.update(
                    {
                        f"{when}_mean": values.mean(),
                        f"{when}_std": values.std(),
                        f"{when}_min": values.min(),
                        f"{when}_max": values.max(),
                    }
                )
            row["prompts"] = int(part[part.metric == metric]["target"].nunique())
            rows.append(row)
    return pd.DataFrame(rows)
