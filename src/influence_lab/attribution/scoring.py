"""Search for influence: for each prompt, measure every training item against the prompt's m
outputs (prompt filter, raw space, latent spaces through faiss) once, and score it with every
search method of the run; the other attributors (gradient methods, a user's) score every target
at once through `Attributor.scores`. One loop for every method: `evaluate`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..console import track
from ..errors import InfluenceLabError
from ..settings import AttributionSettings
from .index import similarity_matrix
from .methods.attributor import Attributor, Targets, spaces_read
from .methods.context import AttributionContext
from .prompt_filter import PromptFilter
from .raw import raw_similarities
from .scorers import PromptEvidence

__all__ = ["check_sizes", "evaluate", "attribute_prompts", "subset_sums_of"]


def check_sizes(cfg: AttributionSettings, n: int) -> None:
    """The sizes of the settings against the training set's (their signs are the schema's)."""
    for key in ("pool_size", "grid_top", "search_k"):
        value = getattr(cfg, key)
        if value is not None and value > n:
            raise InfluenceLabError(
                f"attribution.{key} is {value} but the training set has {n} items; "
                f"choose at most that many" + (", or null." if key != "grid_top" else ".")
            )


def _latent(cache, queries: np.ndarray, n: int, pool: np.ndarray, search_k) -> np.ndarray:
    if queries.shape[1] != cache.index.d:
        raise InfluenceLabError(
            f"the cached embeddings in {cache.path} have dimension {cache.index.d} "
            f"but the embedder gives "
            f"{queries.shape[1]}; delete that directory or run with force=true."
        )
    sims = similarity_matrix(cache.index, queries, n, cache.cfg, k=search_k)
    if search_k is not None and search_k < n:  # make sure the whole pool is measured
        in_pool = similarity_matrix(cache.index, queries, n, cache.cfg, subset=pool)
        sims[:, pool] = in_pool[:, pool]
    return sims


def _raw(outs, content, pool: np.ndarray, every_raw: bool) -> dict[str, np.ndarray]:
    """Raw similarities of every item, or (when no method ranks every item by them) of the
    prompt's pool only, NaN elsewhere: SSIM over thousands of 28x28 items per prompt dominated
    the search on Fashion-MNIST, and fused and paper read only the pool."""
    if every_raw:
        return raw_similarities(outs, content)
    in_pool = raw_similarities(
        outs, [content[i] for i in pool] if isinstance(content, list) else content[pool]
    )
    out = {}
    for name, values in in_pool.items():
        full = np.full((values.shape[0], len(content)), np.nan)
        full[:, pool] = values
        out[name] = full
    return out


def evaluate(
    context: AttributionContext,
    attributors: dict[str, Attributor],
    targets: Targets,
    desc: str = "attribute",
):
    """Yield (target, prompt, evidence, {method: (candidate indices, scores)}) per target, for
    every prepared attributor (in the order given). The search methods' evidence is measured once
    per target for all of them, in the searched spaces of attribution.embedders and those the
    methods read; the other attributors score every target at once first."""
    cfg, train, kind = context.attribution, context.bundle.train, context.bundle.kind
    captions = list(train["caption"])
    content = (
        np.asarray(train.with_format("numpy")["image"], dtype=np.float32)
        if kind == "image"
        else list(train["text"])
    )
    n = len(captions)
    check_sizes(cfg, n)
    prompt_filter = PromptFilter(captions, cfg.filter)
    evidence = {k: a for k, a in attributors.items() if a.shares_evidence}
    read = ((type(a), a.option) for a in evidence.values())
    embedders, caches = context.search_spaces(spaces_read(cfg, context.labelled, read))
    weights = dict(cfg.fused_weights)
    every_raw = any(a.raw_everywhere for a in evidence.values())
    ready = {k: a.scores(targets) for k, a in attributors.items() if k not in evidence}
    pairs = list(zip(targets.prompts, targets.outputs, strict=True))
    for target, (prompt, outs) in enumerate(track(pairs, desc, log_tenths=True)):
        pool, _ = prompt_filter.pool(prompt, cfg.pool_size)
        b = prompt_filter.scores(prompt)
        raw = _raw(outs, content, pool, every_raw)
        latent, queries = {}, {}
        for name, embedder in embedders.items():
            queries[name] = embedder.embed(outs, [prompt] * len(outs))
            if name in cfg.embedders:  # a space built only for the paper scorer is not searched
                latent[name] = _latent(caches[name], queries[name], n, pool, cfg.search_k)
        ev = PromptEvidence(b=b, pool=pool, raw=raw, latent=latent)
        for a in evidence.values():
            a.add_evidence(ev, outs, content, queries, caches)
        yield (
            target,
            prompt,
            ev,
            {
                name: evidence[name].from_evidence(ev, weights)
                if name in evidence
                else ready[name].ranked(target, n)
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
    from .methods.attributor import ScoreTable, subset_sums

    masks, n = np.asarray(masks, dtype=np.float64), masks.shape[1]  # converted once
    out = {name: np.zeros((len(masks), len(targets))) for name in attributors}
    for target, _, _, scored in evaluate(context, attributors, targets, desc="scores"):
        for method, (c, s) in scored.items():
            out[method][:, target] = subset_sums(masks, ScoreTable([s], [c]).dense(n))[:, 0]
    return out
