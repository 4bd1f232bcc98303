"""The experts beside the other judges of a method: per method, its precision@k and nDCG@k against
the experts, its LDS (an `lds` run of the same model and data) and its counterfactual effect (the
loss raised beyond the `random` control, from a counterfactual sweep), each with its interval, so a
reader sees whether the methods that do well on retraining also do well with the experts."""

from __future__ import annotations

import pandas as pd

COLUMNS = (
    "method", "k", "precision", "precision_low", "precision_high", "ndcg", "ndcg_low", "ndcg_high",
    "tasks", "lds", "lds_low", "lds_high", "delta_loss_vs_random", "delta_loss_low",
    "delta_loss_high", "counterfactual_units",
)  # fmt: skip


def side_by_side(
    experts: pd.DataFrame, lds: pd.DataFrame | None, stats: pd.DataFrame | None
) -> pd.DataFrame:
    """`experts` (review.agreement.method_scores) joined with an LDS table (lds.csv: method, lds,
    ci_low, ci_high) and a sweep's statistics (stats.csv: rows of metric delta_loss against the
    control random); a method a judge did not score gets empty cells there."""
    table = experts.copy()
    if lds is not None and len(lds):
        table = table.merge(
            lds[["method", "lds", "ci_low", "ci_high"]].rename(
                columns={"ci_low": "lds_low", "ci_high": "lds_high"}
            ),
            on="method",
            how="left",
        )
    if stats is not None and len(stats):
        rows = stats[(stats["metric"] == "delta_loss") & (stats["control"] == "random")]
        table = table.merge(
            rows[["method", "mean_diff", "ci_low", "ci_high", "n_units"]].rename(
                columns={
                    "mean_diff": "delta_loss_vs_random",
                    "ci_low": "delta_loss_low",
                    "ci_high": "delta_loss_high",
                    "n_units": "counterfactual_units",
                }
            ),
            on="method",
            how="left",
        )
    for col in COLUMNS:
        if col not in table:
            table[col] = float("nan")
    return table[list(COLUMNS)]
