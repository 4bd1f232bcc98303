"""The linear datamodeling score (LDS, Park et al. 2023) and memorization from subset models.

Models are trained on random subsets S_1..S_M, each holding a fraction alpha of the training set.
For a target z, an attribution method's scores tau(z, i) predict the model's output on z as the
sum over the included items; LDS is the Spearman correlation, across subsets, between that
prediction and the actual output. The output here is the target's negative `example_loss`
(fixed noise): higher = the model produces the target more readily, the direction in which every
method's scores point ("higher = more responsible").

Damping without peeking: TRAK and D-TRAK choose their damping on the first `selection` share of
the subsets (the subsets are drawn independently, so the first ones are as random as any) and the
LDS is reported on the others, for every method alike.

Memorization of a training item (Feldman & Zhang 2020, as a loss): its mean loss under the models
that did not see it minus its mean loss under the models that did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .statistics import bootstrap_ci


def draw_subsets(n: int, count: int, alpha: float, seed: int) -> np.ndarray:
    """(count, n) boolean masks, each holding exactly round(alpha * n) items."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    size = max(1, round(alpha * n))
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, n), dtype=bool)
    for row in masks:
        row[rng.choice(n, size, replace=False)] = True
    return masks


def lds_per_target(masks: np.ndarray, outputs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Spearman correlation per target between the predicted and actual model outputs.

    masks (S, n): which items each subset model saw; outputs (S, T): the model output of each
    target under each subset model (higher = target more likely); scores (T, n)."""
    predicted = masks.astype(np.float64) @ np.asarray(scores, dtype=np.float64).T  # (S, T)
    values = np.full(outputs.shape[1], np.nan)
    for t in range(outputs.shape[1]):
        if np.ptp(predicted[:, t]) > 0 and np.ptp(outputs[:, t]) > 0:
            values[t] = stats.spearmanr(predicted[:, t], outputs[:, t]).statistic
    return values


def summarise(values: np.ndarray, n_boot: int = 2000) -> dict:
    """Mean LDS over targets with a bootstrap 95% interval (resampling targets)."""
    finite = values[np.isfinite(values)]
    lo, hi = bootstrap_ci(finite, n_boot)  # NaN for fewer than 2 targets
    return {
        "lds": float(np.mean(finite)) if len(finite) else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "targets": int(len(finite)),
    }


def memorization(masks: np.ndarray, item_losses: np.ndarray) -> np.ndarray:
    """Per item: mean loss when excluded minus mean loss when included (NaN if never/always
    seen)."""
    inc = masks.astype(np.float64)
    exc = 1.0 - inc
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = (item_losses * inc).sum(0) / inc.sum(0)
        mean_out = (item_losses * exc).sum(0) / exc.sum(0)
    return mean_out - mean_in


def lds_table(per_target: dict[str, np.ndarray], n_boot: int = 2000) -> pd.DataFrame:
    """One row per method label with the mean LDS, its interval and the number of targets."""
    rows = [{"method": label, **summarise(values, n_boot)} for label, values in per_target.items()]
    return pd.DataFrame(rows)


MIN_PART = 3  # subsets on each side of the split (a rank correlation needs 3)


def split_subsets(count: int, selection: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(selection indices, evaluation indices) of `count` subsets, or None when there are too few
    to give each part MIN_PART."""
    chosen = max(MIN_PART, round(selection * count))
    if count - chosen < MIN_PART:
        return None
    return np.arange(chosen), np.arange(chosen, count)


def damping_curve(masks: np.ndarray, outputs: np.ndarray, grid_scores: np.ndarray) -> np.ndarray:
    """Mean LDS over targets for each damping: grid_scores (dampings, targets, items)."""
    return np.array([np.nanmean(lds_per_target(masks, outputs, scores)) for scores in grid_scores])


def choose_dampings(
    scores: dict, masks, outputs, split, dampings
) -> tuple[dict, dict, pd.DataFrame]:
    """Each gradient method's damping, the best of `dampings` on the selection subsets, and its
    scores at that damping: (scores, {label: damping}, the LDS-against-damping curves)."""
    chosen, curves, out = {}, [], {}
    for label, s in scores.items():
        if s.ndim == 2:
            out[label] = s
            continue
        select, evaluate = split
        on_select = damping_curve(masks[select], outputs[select], s)
        on_evaluate = damping_curve(masks[evaluate], outputs[evaluate], s)
        best = int(np.nanargmax(on_select)) if np.isfinite(on_select).any() else 0
        out[label], chosen[label] = s[best], float(dampings[best])
        curves += [
            {"method": label, "damping": float(d), "lds_selection": a, "lds_evaluation": b}
            for d, a, b in zip(dampings, on_select, on_evaluate, strict=True)
        ]
    return out, chosen, pd.DataFrame(curves)
