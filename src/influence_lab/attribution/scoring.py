"""Scoring a run's attributors together: one loop over the targets in which the search methods
share the evidence measured once per prompt (`methods/evidence.py`) and every other attributor's
table, scored at once through `Attributor.scores`, is read row by row. `attribute_prompts` turns
it into the attribute stage's table, `subset_sums_of` into the LDS's predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .methods.attributor import Attributor, ScoreTable, Targets, subset_sums
from .methods.context import AttributionContext
from .methods.evidence import EvidenceAttributor, measured

__all__ = ["evaluate", "attribute_prompts", "subset_sums_of"]


def evaluate(
    context: AttributionContext,
    attributors: dict[str, Attributor],
    targets: Targets,
    desc: str = "attribute",
):
    """Yield (target, prompt, evidence, {method: (candidate indices, scores)}) per target, for
    every prepared attributor (in the order given). The search methods' evidence is measured once
    per target for all of them (`methods/evidence.measured`); the other attributors score every
    target at once first, through their `scores`."""
    n = len(context.bundle.train)
    evidence = {k: a for k, a in attributors.items() if isinstance(a, EvidenceAttributor)}
    stream = measured(context, evidence, targets, desc)  # builds the search spaces
    ready = {k: a.scores(targets) for k, a in attributors.items() if k not in evidence}
    for target, prompt, ev, scored in stream:
        yield (
            target,
            prompt,
            ev,
            {
                name: scored[name] if name in evidence else ready[name].ranked(target, n)
                for name in attributors
            },
        )


def attribute_prompts(
    context: AttributionContext, attributors: dict[str, Attributor], targets: Targets
) -> pd.DataFrame:
    """One row per (target, method, rank): id, caption, score, caption_score and every per-space
    similarity (mean over the prompt's outputs)."""
    cfg, train = context.attribution, context.bundle.train
    captions = list(train["caption"])
    ids = list(train["id"])
    rows = []
    for target, prompt, ev, scored in evaluate(context, attributors, targets):
        for method, (cand, scores) in scored.items():
            order = np.argsort(-scores, kind="stable")[: cfg.keep]
            for rank, j in enumerate(order):
                i = int(cand[j])
                row = {
                    "target": target,
                    "prompt": prompt,
                    "method": method,
                    "rank": rank + 1,
                    "id": ids[i],
                    "caption": captions[i],
                    "score": float(scores[j]),
                    "caption_score": float(ev.b[i]),
                }
                for key, sim in ev.raw.items():
                    row[f"raw_{key}"] = float(np.mean(sim[:, i]))
                for key, sim in ev.latent.items():
                    row[f"latent_{key}"] = (
                        float(np.nanmean(sim[:, i])) if not np.isnan(sim[:, i]).all() else np.nan
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def subset_sums_of(
    context: AttributionContext,
    attributors: dict[str, Attributor],
    targets: Targets,
    masks: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each method's LDS prediction per subset, {method: (subsets, targets)}: for masks
    (subsets, items), each subset's sum of its items' scores. Items outside a method's candidate
    pool get the pool's lowest score (they rank below every candidate). One target's row of
    scores is held at a time, never the targets x items table."""
    masks, n = np.asarray(masks, dtype=np.float64), masks.shape[1]  # converted once
    out = {name: np.zeros((len(masks), len(targets))) for name in attributors}
    for target, _, _, scored in evaluate(context, attributors, targets, desc="scores"):
        for method, (c, s) in scored.items():
            out[method][:, target] = subset_sums(masks, ScoreTable([s], [c]).dense(n))[:, 0]
    return out
