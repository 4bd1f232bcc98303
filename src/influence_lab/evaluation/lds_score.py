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

Two reference rows, from the same subsets, seeds and targets as the ground truth (the outputs
averaged over S training seeds); derived in docs/lds.md:
- `retraining`: how well *another* S-seed retraining would predict the ground truth. With r the
  agreement of one seed with another (Spearman across subsets, averaged over seed pairs), a mean of
  S seeds has reliability S r / (1 + (S - 1) r) (Spearman-Brown): the expected correlation of two
  independent S-seed means.
- `ceiling`: the noise ceiling, the square root of that reliability: the expected correlation of
  the ground truth with its own noise-free part, the most any predictor without seed noise (every
  attribution method) can reach. A method's `share` is its LDS over the ceiling.
Both per target, then averaged over targets (as the LDS is). Spearman-Brown holds for Pearson
correlations; on rank correlations it is close (docs/lds.md: a simulation with known signal).

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


def lds_of(predicted: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Spearman correlation per target between the predicted and actual model outputs.

    predicted (S, T): each subset's sum of its items' scores (`Attributor.subset_sums`, or
    `attribution.methods.base.subset_sums(masks, scores)` of a table); outputs (S, T): the model
    output of each target under each subset model (higher = target more likely)."""
    return _spearman_columns(np.asarray(predicted), np.asarray(outputs))


def summarise(values: np.ndarray, n_boot: int = 2000, redraw=None, seed: int = 0) -> dict:
    """Mean LDS over targets with a bootstrap 95% interval. Without `redraw`, the interval
    resamples targets only (`ci_low`, `ci_high`). With `redraw` (rows -> per-target values
    recomputed on those subsets), each resample also draws the subsets with replacement, so the
    interval carries the one draw of subsets the values rest on as well as the targets; the
    targets-only interval is kept as `ci_low_targets`, `ci_high_targets` to show what the subsets
    add."""
    finite = values[np.isfinite(values)]
    lo, hi = bootstrap_ci(finite, n_boot)  # NaN for fewer than 2 targets
    out = {
        "lds": float(np.mean(finite)) if len(finite) else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "targets": int(len(finite)),
    }
    if redraw is not None:
        out["ci_low_targets"], out["ci_high_targets"] = lo, hi
        out["ci_low"], out["ci_high"] = two_way_interval(redraw, len(values), n_boot, seed)
    return out


def two_way_interval(redraw, count: int, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean over targets when both the subsets and the targets are
    resampled: each resample draws the subsets with replacement (`redraw(rows)` gives the
    per-target values on them, `rows` indexing the subsets `redraw` closes over), then the
    `count` targets with replacement. Written here: scipy's bootstrap resamples one level of one
    array, and this statistic recomputes rank correlations per draw of rows."""
    rng = np.random.default_rng(seed)
    subsets = redraw.subsets
    means = np.full(n_boot, np.nan)
    for b in range(n_boot):
        values = redraw(rng.integers(0, subsets, subsets))[rng.integers(0, count, count)]
        if np.isfinite(values).any():
            means[b] = np.nanmean(values)
    if np.isfinite(means).sum() < 2:
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(means, [0.025, 0.975])
    return float(lo), float(hi)


class Redraw:
    """Per-target values recomputed on a draw of subsets: `fn(rows)`, over `subsets` subsets."""

    def __init__(self, fn, subsets: int):
        self.fn, self.subsets = fn, subsets

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self.fn(rows)


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
    """Spearman correlation between the columns of a and b (S, T), NaN where either is constant:
    the Pearson correlation of the columns' average ranks (scipy's definition), for every column
    at once."""
    ra = stats.rankdata(a, axis=0)
    rb = stats.rankdata(b, axis=0)
    ra -= ra.mean(0)
    rb -= rb.mean(0)
    den = np.sqrt((ra * ra).sum(0) * (rb * rb).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (ra * rb).sum(0) / den
    constant = (np.ptp(a, axis=0) == 0) | (np.ptp(b, axis=0) == 0)
    return np.where(constant, np.nan, np.clip(values, -1.0, 1.0))


CEILING = "ceiling"  # the table row of the noise ceiling (the most any predictor can reach)
RETRAINING = "retraining"  # the table row of another S-seed retraining's agreement
REFERENCES = (RETRAINING, CEILING)  # the reference rows of an LDS table, not methods


def families(table: pd.DataFrame) -> pd.Series:
    """Each row's method family (search, gradient, or reference for the reference rows): the
    `family` column an LDS run writes from its attributors' traits. A table written before that
    column existed is read through the built-ins' traits (a user's method there reads search)."""
    if "family" in table.columns:
        return table["family"].fillna("search")
    from ..attribution.methods.registry import BUILT_INS

    def of(label) -> str:
        if label in REFERENCES:
            return "reference"
        cls = BUILT_INS.get(str(label).split("@")[0])
        return cls.traits.family if cls is not None else "search"

    return table["method"].map(of)


def seed_agreement(outputs: np.ndarray) -> np.ndarray:
    """r per target from outputs (S, seeds, T): the Spearman correlation across subsets of one
    seed's outputs with another's, averaged over every pair of seeds; NaN with one seed."""
    count = outputs.shape[1]
    if count < 2:
        return np.full(outputs.shape[2], np.nan)
    pairs = [
        _spearman_columns(outputs[:, i], outputs[:, j])
        for i in range(count)
        for j in range(i + 1, count)
    ]
    with warnings.catch_warnings():  # a target constant under every seed stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(pairs), 0)


def spearman_brown(r: np.ndarray, seeds: int) -> np.ndarray:
    """The reliability of a mean of `seeds` draws whose pairwise agreement is r."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return seeds * r / (1 + (seeds - 1) * r)


def reference_rows(outputs: np.ndarray) -> dict[str, np.ndarray]:
    """{`retraining`: per target, the reliability of the S-seed ground truth; `ceiling`: its
    square root (0 where the reliability is not positive: no signal to predict)} from outputs
    (S, seeds, T); NaN with one seed."""
    reliability = spearman_brown(seed_agreement(outputs), outputs.shape[1])
    with np.errstate(invalid="ignore"):
        ceiling = np.where(np.isnan(reliability), np.nan, np.sqrt(np.clip(reliability, 0, None)))
    return {RETRAINING: reliability, CEILING: ceiling}


def lds_table(
    per_target: dict[str, np.ndarray],
    n_boot: int = 2000,
    references: dict[str, np.ndarray] | None = None,
    redraws: dict | None = None,
) -> pd.DataFrame:
    """One row per method label with the mean LDS, its interval and the number of targets; with
    reference rows (per target: `retraining`, `ceiling`), those rows and each method's `share` of
    the ceiling. `redraws` ({label: Redraw}) recompute a row's per-target values on a draw of
    subsets, so that its interval resamples the subsets too (`summarise`)."""
    redraws = redraws or {}

    def row(label, values):
        return {"method": label, **summarise(values, n_boot, redraws.get(label))}

    table = pd.DataFrame([row(label, values) for label, values in per_target.items()])
    references = {
        k: v for k, v in (references or {}).items() if v is not None and np.isfinite(v).any()
    }
    if references:
        ref = {label: row(label, values) for label, values in references.items()}
        top = ref.get(CEILING, {"lds": np.nan})["lds"]
        table["share"] = table["lds"] / top if top > 0 else np.nan
        table = pd.concat([table, pd.DataFrame(list(ref.values()))], ignore_index=True)
    return table


def subset_redraws(
    predictions: dict[str, np.ndarray], outputs: np.ndarray, by_seed: np.ndarray
) -> dict:
    """The `Redraw` of every method (predictions (S, T) against outputs (S, T)) and of the
    reference rows (from the per-seed outputs (S, seeds, T)), over the same S subsets."""
    count = len(outputs)
    out = {
        label: Redraw(lambda rows, p=p: lds_of(p[rows], outputs[rows]), count)
        for label, p in predictions.items()
    }
    for label in REFERENCES:
        out[label] = Redraw(lambda rows, lb=label: reference_rows(by_seed[rows])[lb], count)
    return out


MIN_PART = 3  # subsets on each side of the split (a rank correlation needs 3)


def split_subsets(count: int, selection: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(selection indices, evaluation indices) of `count` subsets, or None when there are too few
    to give each part MIN_PART."""
    chosen = max(MIN_PART, round(selection * count))
    if count - chosen < MIN_PART:
        return None
    return np.arange(chosen), np.arange(chosen, count)


def damping_curve(outputs: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Mean LDS over targets for each damping: grid (dampings, subsets, targets) predictions."""
    return np.array([np.nanmean(lds_of(predicted, outputs)) for predicted in grid])


def choose_dampings(predictions: dict, outputs, split, dampings) -> tuple[dict, dict, pd.DataFrame]:
    """Each gradient method's damping, the best of `dampings` on the selection subsets, and its
    predictions (subsets, targets) at that damping: (predictions, {label: damping}, the
    LDS-against-damping curves)."""
    chosen, curves, out = {}, [], {}
    for label, p in predictions.items():
        if p.ndim == 2:
            out[label] = p
            continue
        select, evaluate = split
        on_select = damping_curve(outputs[select], p[:, select])
        on_evaluate = damping_curve(outputs[evaluate], p[:, evaluate])
        best = int(np.nanargmax(on_select)) if np.isfinite(on_select).any() else 0
        out[label], chosen[label] = p[best], float(dampings[best])
        curves += [
            {"method": label, "damping": float(d), "lds_selection": a, "lds_evaluation": b}
            for d, a, b in zip(dampings, on_select, on_evaluate, strict=True)
        ]
    return out, chosen, pd.DataFrame(curves)
