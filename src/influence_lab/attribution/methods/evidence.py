"""The evidence of the search methods: for each prompt, every training item measured against the
prompt's m outputs (prompt filter, raw space, latent spaces through faiss) once, and scored by
every search method of the run from that one measurement (`measured`). A search method owns this
loop: its `scores` runs it for itself, and `attribution/scoring.py` runs it for all of a run's
search methods at once."""

from __future__ import annotations

import numpy as np

from ...console import track
from ...errors import InfluenceLabError
from ...settings import AttributionSettings
from ..index import similarity_matrix
from ..prompt_filter import PromptFilter
from ..raw import raw_similarities
from ..scorers import PromptEvidence
from .attributor import Attributor, ScoreTable, Targets, Traits, spaces_read
from .context import AttributionContext


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


def measured(
    context: AttributionContext,
    attributors: dict[str, EvidenceAttributor],
    targets: Targets,
    desc: str = "attribute",
):
    """An iterator of (target, prompt, evidence, {method: (candidate indices, scores)}) per target
    for the search methods `attributors` (possibly none: the evidence alone), measured once per
    target in the searched spaces of attribution.embedders and those the methods read. The spaces
    are built at the call, the targets measured as the iterator is read."""
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
    read = ((type(a), a.option) for a in attributors.values())
    embedders, caches = context.search_spaces(spaces_read(cfg, context.labelled, read))
    weights = dict(cfg.fused_weights)
    every_raw = any(a.raw_everywhere for a in attributors.values())

    def per_target():
        pairs = list(zip(targets.prompts, targets.outputs, strict=True))
        for target, (prompt, outs) in enumerate(track(pairs, desc, log_tenths=True)):
            pool, _ = prompt_filter.pool(prompt, cfg.pool_size)
            b = prompt_filter.scores(prompt)
            raw = _raw(outs, content, pool, every_raw)
            latent, queries = {}, {}
            for name, embedder in embedders.items():
                queries[name] = embedder.embed(outs, [prompt] * len(outs))
                if name in cfg.embedders:  # a space built only for the paper scorer: not searched
                    latent[name] = _latent(caches[name], queries[name], n, pool, cfg.search_k)
            ev = PromptEvidence(b=b, pool=pool, raw=raw, latent=latent)
            for a in attributors.values():
                a.add_evidence(ev, outs, content, queries, caches)
            scored = {k: a.from_evidence(ev, weights) for k, a in attributors.items()}
            yield target, prompt, ev, scored

    return per_target()


class EvidenceAttributor(Attributor):
    """A search method scored from the per-prompt evidence (`PromptEvidence`) that `measured`
    gathers once for every such method of a run."""

    traits = Traits(family="search")
    raw_everywhere = False  # it reads raw similarities of every item, not only the pool's

    @classmethod
    def spaces(cls, att, labelled: bool, option: str | None) -> list[str]:
        return list(att.embedders)

    def add_evidence(self, ev: PromptEvidence, outs, content, queries: dict, caches: dict):
        """Evidence only this method reads (the paper's features), added to `ev`."""

    def from_evidence(self, ev: PromptEvidence, weights: dict) -> tuple[np.ndarray, np.ndarray]:
        """(candidate indices, scores) of one prompt."""
        raise NotImplementedError

    def scores(self, targets: Targets) -> ScoreTable:
        cand, values = [], []
        for _, _, _, scored in measured(self.context, {self.name: self}, targets):
            cand.append(scored[self.name][0])
            values.append(scored[self.name][1])
        return ScoreTable(values, cand)
