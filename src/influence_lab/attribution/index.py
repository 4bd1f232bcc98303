"""faiss indexes over training-set embeddings, cached with the embeddings.

`flat` (exact, the default: below about a million items it is fast enough), `ivf` and `hnsw`
(approximate, parameters in config). Metric `ip` works on L2-normalised vectors, so scores are
cosine similarities; `l2` returns negative squared distances so that larger is always closer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InfluenceLabError
from ..settings import IndexSettings
from ..settings.attribution import INDEX_METRICS, INDEX_TYPES
from ..store.files import RunDir, atomic_write, write_npy
from ..store.signature import signature

if TYPE_CHECKING:
    import faiss

TYPES, METRICS = INDEX_TYPES, INDEX_METRICS  # declared in settings.attribution


def _prep(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if metric == "ip":
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    return x


def build_index(x: np.ndarray, cfg: IndexSettings) -> faiss.Index:
    import faiss  # imported where used: a process that searches nothing never loads it

    kind, metric = cfg.type, cfg.metric
    if kind not in TYPES:
        raise InfluenceLabError(
            f"attribution.index.type is '{kind}'; allowed values are {', '.join(TYPES)}."
        )
    if metric not in METRICS:
        raise InfluenceLabError(
            f"attribution.index.metric is '{metric}'; allowed values are ip and l2."
        )
    x = _prep(x, metric)
    d = x.shape[1]
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    if kind == "flat":
        index = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    elif kind == "ivf":
        nlist = max(1, min(cfg.nlist, len(x) // 4))
        quantizer = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, fmetric)
        index.train(x)
        index.nprobe = cfg.nprobe
    else:
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, fmetric)
        index.hnsw.efSearch = cfg.ef_search
    index.add(x)
    return index


def _params(index: faiss.Index, cfg: IndexSettings, subset: np.ndarray | None):
    import faiss

    sel = faiss.IDSelectorBatch(np.asarray(subset, dtype=np.int64)) if subset is not None else None
    if cfg.type == "ivf":
        return faiss.SearchParametersIVF(sel=sel, nprobe=cfg.nprobe)
    if cfg.type == "hnsw":
        return faiss.SearchParametersHNSW(sel=sel, efSearch=cfg.ef_search)
    return faiss.SearchParameters(sel=sel) if sel is not None else None


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    cfg: IndexSettings,
    subset: np.ndarray | None = None,
):
    """Top-k (scores, indices) for each query, larger score = closer; -1 where fewer found."""
    q = _prep(queries, cfg.metric)
    k = min(int(k), index.ntotal if subset is None else len(subset))
    scores, idx = index.search(q, k, params=_params(index, cfg, subset))
    if cfg.metric == "l2":
        scores = -scores
    return scores, idx


def similarity_matrix(
    index, queries, n: int, cfg, subset: np.ndarray | None = None, k: int | None = None
) -> np.ndarray:
    """(m, n) similarities to every training item; NaN for items the search did not return."""
    scores, idx = search(index, queries, k or (n if subset is None else len(subset)), cfg, subset)
    out = np.full((len(queries), n), np.nan)
    for row in range(len(queries)):
        ok = idx[row] >= 0
        out[row, idx[row][ok]] = scores[row][ok]
    return out


class EmbeddingCache:
    """Training-set embeddings + their faiss index, one directory per (embedder, data, index)."""

    def __init__(self, root: Path, embedder, bundle, index: IndexSettings):
        import faiss

        sig = signature(embedder.signature, bundle.fingerprint, index.plain())
        self.run = RunDir(root, "embeddings", f"{embedder.name}-{bundle.name}", sig)
        self.cfg = index
        if not self.run.done:
            self._build(embedder, bundle)
        self.embeddings = np.load(self.run / "embeddings.npy")
        self.index = faiss.read_index(str(self.run / "index.faiss"))

    def _build(self, embedder, bundle) -> None:
        import faiss

        self.run.prepare()
        train = bundle.train
        content = (
            np.asarray(train.with_format("numpy")["image"], dtype=np.float32)
            if bundle.kind == "image"
            else list(train["text"])
        )
        emb = embedder.embed(content, list(train["caption"]))
        write_npy(self.run / "embeddings.npy", emb)
        index = build_index(emb, self.cfg)
        atomic_write(self.run / "index.faiss", lambda p: faiss.write_index(index, str(p)))
        self.run.mark_done({"n": len(emb), "dim": int(emb.shape[1])})

    @property
    def path(self) -> Path:
        return self.run.path
