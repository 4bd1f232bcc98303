"""Replicates: a finding is only as good as its randomness.

A sweep is one draw of the attribution itself (one model seed, one embedder fit, one set of
generated outputs, one set of control picks). `replicates=R` reruns the
whole chain R times with shifted seeds (`replicate_changes`), each replicate its own cached sweep,
and pools the statistics here:

- every replicate's units (targets or groups, each with retrained models of its own) are
  independent units of `statistics.compare`, which pools them: the difference is the mean over
  the units of all replicates, with its t interval and p-value;
- `stable`: every replicate's own mean difference has the sign of the pooled one;
- `topk_jaccard`: how much of each method's top-k per prompt the replicates share (mean pairwise
  Jaccard, averaged over prompts): a method whose top-10 changes wholesale with its embedder's seed
  reads near 0.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from ..settings.stage import SEED_STRIDE  # replicate r shifts the seeds by r * SEED_STRIDE


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
