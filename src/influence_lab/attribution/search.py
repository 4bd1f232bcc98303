"""Search for influence: for each prompt, measure every training item against the prompt's m
outputs (prompt filter, raw space, latent spaces through faiss) and rank them with each scorer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InfluenceLabError
from ..settings import AttributionSettings, section
from ..settings.attribution import paper_space, resolve_methods
from ..tracking.console import track
from .index import similarity_matrix
from .prompt_filter import PromptFilter
from .raw import raw_similarities
from .scorers import PromptEvidence, paper_features, score

__all__ = ["check_sizes", "resolve_methods", "evaluate", "attribute_prompts", "dense_scores"]


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


EVERY_RAW = ("raw_only",)  # the methods that rank every item by its raw similarities


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
    train,
    kind: str,
    prompts: list[str],
    outputs: list,
    embedders: dict,
    caches: dict,
    cfg: AttributionSettings,
    dense: dict | None = None,
    desc: str = "attribute",
):
    """Yield (target, prompt, evidence, {method: (candidate indices, scores)}) per prompt.

    `dense` maps extra method names (the gradient attributors) to a function
    `(prompt, outputs) -> scores over every training item`. (A raw `attribution` section is
    validated first.)"""
    cfg = section(AttributionSettings, cfg, "attribution")
    captions = list(train["caption"])
    content = (
        np.asarray(train.with_format("numpy")["image"], dtype=np.float32)
        if kind == "image"
        else list(train["text"])
    )
    n = len(captions)
    check_sizes(cfg, n)
    dense = dense or {}
    prompt_filter = PromptFilter(captions, cfg.filter)
    methods = resolve_methods(cfg.methods, kind)
    weights = dict(cfg.fused_weights)
    search_k = cfg.search_k
    every = np.arange(n)
    # scorers that score every prompt at once do so first (gradient attributors: one projection)
    ready = {
        name: fn.score_all(prompts, outputs)
        for name, fn in dense.items()
        if name in methods and hasattr(fn, "score_all")
    }
    for target, (prompt, outs) in enumerate(track(list(zip(prompts, outputs, strict=True)), desc)):
        pool, _ = prompt_filter.pool(prompt, cfg.pool_size)
        b = prompt_filter.scores(prompt)
        raw = _raw(outs, content, pool, every_raw=any(m in EVERY_RAW for m in methods))
        latent, queries = {}, {}
        for name, embedder in embedders.items():
            queries[name] = embedder.embed(outs, [prompt] * len(outs))
            if name in cfg.embedders:  # a space built only for the paper scorer is not searched
                latent[name] = _latent(caches[name], queries[name], n, pool, search_k)
        ev = PromptEvidence(b=b, pool=pool, raw=raw, latent=latent)
        if "paper" in methods and kind == "image":
            emb_name = paper_space(cfg.paper_embedder, "label" in train.column_names)
            ev.paper = paper_features(
                outs, content[pool], queries[emb_name], caches[emb_name].embeddings[pool]
            )
        scored = {}
        for method in methods:
            scored[method] = (
                (every, ready[method][target] if method in ready else dense[method](prompt, outs))
                if method in dense
                else score(method, ev, weights)
            )
        yield target, prompt, ev, scored


def attribute_prompts(
    train,
    kind: str,
    prompts: list[str],
    outputs: list,
    embedders: dict,
    caches: dict,
    cfg: AttributionSettings,
    dense: dict | None = None,
) -> pd.DataFrame:
    """One row per (target, method, rank): id, caption, score, caption_score and every per-space
    similarity (mean over the prompt's outputs)."""
    cfg = section(AttributionSettings, cfg, "attribution")
    captions = list(train["caption"])
    ids = list(train["id"])
    rows = []
    for target, prompt, ev, scored in evaluate(
        train, kind, prompts, outputs, embedders, caches, cfg, dense
    ):
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


def dense_scores(
    train,
    kind: str,
    prompts: list[str],
    outputs: list,
    embedders: dict,
    caches: dict,
    cfg: AttributionSettings,
    dense: dict | None = None,
) -> dict[str, np.ndarray]:
    """Every method's score of every training item per prompt: {method: (prompts, N)}. Items outside
    a method's candidate pool get the pool's lowest score (they rank below every candidate)."""
    out: dict[str, list] = {}
    for _, _, _, scored in evaluate(
        train, kind, prompts, outputs, embedders, caches, cfg, dense, desc="scores"
    ):
        for method, (cand, scores) in scored.items():
            full = np.full(len(train), float(np.min(scores)) if len(scores) else 0.0)
            full[cand] = scores
            out.setdefault(method, []).append(full)
    return {method: np.stack(rows) for method, rows in out.items()}
