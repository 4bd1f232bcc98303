"""Search for influence: for each prompt, measure every training item against the prompt's m
outputs (prompt filter, raw space, latent spaces through faiss) and rank them with each scorer."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import InfluenceLabError
from .index import similarity_matrix
from .prompt_filter import PromptFilter
from .raw import raw_similarities
from .scorers import PromptEvidence, paper_features, score


def check_sizes(cfg, n: int) -> None:
    for key in ("pool_size", "grid_top", "search_k"):
        value = cfg.get(key)
        if value is not None and not 1 <= int(value) <= n:
            raise InfluenceLabError(f"attribution.{key} is {value} but the training set has {n} items; "
                                    f"choose 1..{n}" + (" or null." if key != "grid_top" else "."))


def resolve_methods(methods, kind: str) -> list[str]:
    if methods == "auto" or methods is None:
        base = ["fused", "caption_only", "raw_only", "latent_only"]
        return (["paper"] + base) if kind == "image" else base
    return [str(m) for m in ([methods] if isinstance(methods, str) else methods)]


def _latent(cache, queries: np.ndarray, n: int, pool: np.ndarray, search_k) -> np.ndarray:
    if queries.shape[1] != cache.index.d:
        raise InfluenceLabError(
            f"the cached embeddings in {cache.path} have dimension {cache.index.d} but the embedder gives "
            f"{queries.shape[1]}; delete that directory or run with force=true."
        )
    sims = similarity_matrix(cache.index, queries, n, cache.cfg, k=search_k)
    if search_k is not None and search_k < n:  # make sure the whole pool is measured
        in_pool = similarity_matrix(cache.index, queries, n, cache.cfg, subset=pool)
        sims[:, pool] = in_pool[:, pool]
    return sims


def attribute_prompts(train, kind: str, prompts: list[str], outputs: list, embedders: dict, caches: dict,
                      cfg) -> pd.DataFrame:
    """One row per (target, method, rank): id, caption, score, caption_score and every per-space
    similarity (mean over the prompt's outputs)."""
    captions = list(train["caption"])
    ids = list(train["id"])
    content = (np.asarray(train.with_format("numpy")["image"], dtype=np.float32) if kind == "image"
               else list(train["text"]))
    n = len(ids)
    check_sizes(cfg, n)
    prompt_filter = PromptFilter(captions, str(cfg.filter))
    methods = resolve_methods(cfg.methods, kind)
    weights = dict(cfg.fused_weights)
    search_k = None if cfg.search_k is None else int(cfg.search_k)
    rows = []
    for target, (prompt, outs) in enumerate(tqdm(list(zip(prompts, outputs, strict=True)), desc="attribute",
                                                 leave=False)):
        pool, _ = prompt_filter.pool(prompt, cfg.pool_size)
        b = prompt_filter.scores(prompt)
        raw = raw_similarities(outs, content)
        latent, queries = {}, {}
        for name, embedder in embedders.items():
            queries[name] = embedder.embed(outs, [prompt] * len(outs))
            latent[name] = _latent(caches[name], queries[name], n, pool, search_k)
        ev = PromptEvidence(b=b, pool=pool, raw=raw, latent=latent)
        if "paper" in methods and kind == "image":
            emb_name = str(cfg.paper_embedder)
            ev.paper = paper_features(outs, content[pool], queries[emb_name], caches[emb_name].embeddings[pool])
        for method in methods:
            cand, scores = score(method, ev, weights)
            order = np.argsort(-scores, kind="stable")[: int(cfg.keep)]
            for rank, j in enumerate(order):
                i = int(cand[j])
                row = {"target": target, "prompt": prompt, "method": method, "rank": rank + 1, "id": ids[i],
                       "caption": captions[i], "score": float(scores[j]), "caption_score": float(b[i])}
                for key, sim in raw.items():
                    row[f"raw_{key}"] = float(np.mean(sim[:, i]))
                for key, sim in latent.items():
                    row[f"latent_{key}"] = float(np.nanmean(sim[:, i])) if not np.isnan(sim[:, i]).all() else np.nan
                rows.append(row)
    return pd.DataFrame(rows)
