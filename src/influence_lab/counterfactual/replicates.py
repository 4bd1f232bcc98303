"""Replicates: a finding is only as good as its randomness.

A sweep's interval resamples prompts only; the attribution itself is one draw (one model seed, one
embedder fit, one set of generated outputs, one set of control picks). `replicates=R` reruns the
whole chain R times with shifted seeds (`replicate_changes`), each replicate its own cached sweep,
and pools the statistics here:

- the pooled difference is the mean over replicates and prompts of (top-k effect - control effect);
- its interval is a two-level bootstrap: resample replicates, then prompts (the same prompts in
  every replicate: `two_level_bootstrap`), so the spread between replicates widens it;
- the Wilcoxon p-value pairs prompts, each prompt's difference averaged over replicates;
- `stable`: every replicate's own mean difference has the sign of the pooled one;
- `topk_jaccard`: how much of each method's top-k per prompt the replicates share (mean pairwise
  Jaccard, averaged over prompts): a method whose top-10 changes wholesale with its embedder's seed
  reads near 0.

Written here: no statistics library offers a hierarchical (two-level) bootstrap of paired
differences; scipy's `bootstrap` resamples one level.
"""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pandas as pd

from .plans import CONTROLS
from .statistics import changes_only, compare, effect_ratio, per_target, wilcoxon_p

SEED_STRIDE = 1000  # replicate r shifts the model, generation and retrain seeds by r * SEED_STRIDE


def replicate_changes(settings, r: int) -> dict:
    """The dotted-key changes that make replicate `r` of `settings` (r = 0: none): the full model's
    seed, the generation seed and the retrain seeds move by r * SEED_STRIDE (so they never meet
    one another or another replicate's), every embedder's fit seed and the gradient projection's
    seed by r. The prompts, the data split and the plan stay. Control draws follow the retrain
    seeds."""
    if r == 0:
        return {}
    shift = r * SEED_STRIDE
    changes = {
        "seed": settings.seed + shift,
        "generate.seed": settings.generate.seed + shift,
        "counterfactual.seeds": [s + shift for s in settings.counterfactual.seeds],
    }
    if settings.attribution is not None:
        changes["attribution.gradient.proj_seed"] = settings.attribution.gradient.proj_seed + r
    for name, embedder in (settings.embedders or {}).items():
        if getattr(embedder, "seed", None) is not None:
            changes[f"embedders.{name}.seed"] = embedder.seed + r
    return changes


def two_level_bootstrap(
    diffs: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the mean of `diffs` (replicates x prompts; NaN where a prompt is missing in
    a replicate): each resample draws R replicates with replacement, then the prompts with
    replacement, and takes the mean. The prompts are the same in every replicate (the prompts are
    crossed with the replicates, not nested in them), so one draw of prompts serves every drawn
    replicate: replicates that agree exactly give the interval of one replicate's prompts, and
    replicates that disagree widen it."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if np.isfinite(diffs).sum() < 2 or diffs.shape[1] < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    count, prompts = diffs.shape
    means = np.empty(n_boot)
    for start in range(0, n_boot, 500):  # blocks of resamples: bounded memory
        size = min(500, n_boot - start)
        rows = rng.integers(0, count, (size, count))[:, :, None]
        cols = rng.integers(0, prompts, (size, prompts))[:, None, :]
        with warnings.catch_warnings():  # a resample of only missing prompts: NaN, dropped
            warnings.simplefilter("ignore", RuntimeWarning)
            means[start : start + size] = np.nanmean(diffs[rows, cols], axis=(1, 2))
    lo, hi = np.nanquantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def _matrix(table: pd.DataFrame, replicates: list[int]) -> pd.DataFrame:
    """replicates x targets of the values of one (method, arm, k, metric)."""
    return table.pivot(index="replicate", columns="target", values="value").reindex(replicates)


def pooled_compare(results: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """`statistics.compare` over replicates: `results` holds every replicate's rows with a
    `replicate` column. One row per (method, k, metric, control) with the pooled means and
    difference, the two-level bootstrap interval, the Wilcoxon p over prompts, `replicates`,
    `stable` and each replicate's own difference (`replicate_diffs`, ';'-joined)."""
    replicates = sorted(results.replicate.unique())
    if len(replicates) == 1:
        single = compare(results.drop(columns="replicate"))
        return single.assign(replicates=1, stable=np.nan, replicate_diffs="")
    table = changes_only(
        pd.concat(
            [per_target(part).assign(replicate=r) for r, part in results.groupby("replicate")]
        )
    )
    rows = []
    for (method, k, metric), top in table[table.arm == "topk"].groupby(["method", "k", "metric"]):
        top = _matrix(top, replicates)
        for control in CONTROLS:
            part = table[(table.arm == control) & (table.k == k) & (table.metric == metric)]
            if part.empty:
                continue
            ctrl = _matrix(part, replicates).reindex(columns=top.columns)
            diffs = (top - ctrl).to_numpy()
            per_replicate = np.nanmean(diffs, 1)
            mean_diff = float(np.nanmean(diffs))
            lo, hi = two_level_bootstrap(diffs, n_boot)
            mean_top, mean_ctrl = float(np.nanmean(top.to_numpy())), float(np.nanmean(ctrl))
            prompt_diffs = np.nanmean(diffs, 0)
            rows.append(
                {
                    "method": method,
                    "k": int(k),
                    "metric": metric,
                    "control": control,
                    "n_targets": int(np.isfinite(prompt_diffs).sum()),
                    "topk_mean": mean_top,
                    "control_mean": mean_ctrl,
                    "mean_diff": mean_diff,
                    "ci_low": lo,
                    "ci_high": hi,
                    "wilcoxon_p": wilcoxon_p(prompt_diffs[np.isfinite(prompt_diffs)]),
                    "ratio": effect_ratio(mean_top, mean_ctrl),
                    "replicates": len(replicates),
                    "stable": bool(np.all(np.sign(per_replicate) == np.sign(mean_diff)))
                    and mean_diff != 0,
                    "replicate_diffs": ";".join(f"{d:.4g}" for d in per_replicate),
                }
            )
    return pd.DataFrame(rows)


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else float("nan")


def topk_overlap(rankings: list[pd.DataFrame], k: int) -> pd.DataFrame:
    """Per method: the mean over prompts of the mean pairwise Jaccard of its top-k across the
    replicates' rankings (each an attribute stage's table); NaN with one replicate."""
    methods = list(dict.fromkeys(m for table in rankings for m in table.method))
    rows = []
    for method in methods:
        per_prompt = []
        for target in sorted(rankings[0].target.unique()):
            tops = [
                set(t[(t.method == method) & (t.target == target)].nsmallest(k, "rank").id)
                for t in rankings
            ]
            pairs = [jaccard(a, b) for a, b in combinations(tops, 2)]
            per_prompt.append(np.mean(pairs) if pairs else np.nan)
        rows.append(
            {
                "method": method,
                "k": int(k),
                "topk_jaccard": float(np.mean(per_prompt)),
                "min_prompt_jaccard": float(np.min(per_prompt)),
                "replicates": len(rankings),
            }
        )
    return pd.DataFrame(rows)
