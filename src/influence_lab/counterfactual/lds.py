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

The retraining ceiling (as BrunoKM/diffusion-influence's `lds.py` reports it): models trained on
the same subset with different seeds differ, so no method can predict one seed's outputs better
than the other seeds' outputs do. Per target, the Spearman correlation across subsets between one
seed's outputs and the mean of the other seeds', averaged over the seeds; a method's `share` is its
LDS over the ceiling's. (The methods are scored against the mean over all seeds, which is less
noisy than any one seed, so the ceiling is conservative: a share near or above 1 is possible.)

Memorization of a training item (Feldman & Zhang 2020, as a loss): its mean loss under the models
that did not see it minus its mean loss under the models that did.
"""

from __future__ import annotations

import warnings

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
    return _spearman_columns(predicted, np.asarray(outputs))


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


def _spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation between the columns of a and b (S, T), NaN where either is constant."""
    values = np.full(a.shape[1], np.nan)
    for t in range(a.shape[1]):
        if np.ptp(a[:, t]) > 0 and np.ptp(b[:, t]) > 0:
            values[t] = stats.spearmanr(a[:, t], b[:, t]).statistic
    return values


CEILING = "ceiling"  # the table row of the seed-to-seed retraining ceiling


def ceiling_per_target(outputs: np.ndarray) -> np.ndarray:
    """The retraining ceiling per target from outputs (S, seeds, T): each seed's outputs against
    the mean of the other seeds' (Spearman across subsets), averaged over the seeds; NaN with one
    seed."""
    count = outputs.shape[1]
    if count < 2:
        return np.full(outputs.shape[2], np.nan)
    per_seed = [
        _spearman_columns(outputs[:, j], np.delete(outputs, j, axis=1).mean(1))
        for j in range(count)
    ]
    with warnings.catch_warnings():  # a target constant under every seed stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(per_seed), 0)


def lds_table(
    per_target: dict[str, np.ndarray], n_boot: int = 2000, ceiling: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per method label with the mean LDS, its interval and the number of targets; with a
    ceiling (per target), a `ceiling` row and each method's `share` of it."""
    rows = [{"method": label, **summarise(values, n_boot)} for label, values in per_target.items()]
    table = pd.DataFrame(rows)
    if ceiling is not None and np.isfinite(ceiling).any():
        top = summarise(ceiling, n_boot)
        table["share"] = table["lds"] / top["lds"] if top["lds"] > 0 else np.nan
        table = pd.concat([table, pd.DataFrame([{"method": CEILING, **top}])], ignore_index=True)
    return table


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
