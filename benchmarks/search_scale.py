"""Nearest-neighbour search at scale: faiss flat vs brute force, IVF vs flat; and the attribute
stage.

    .venv/bin/python benchmarks/search_scale.py [--sizes 10000 100000 1000000] [--queries 1000]

Synthetic N x 64 embeddings drawn around 1,000 cluster centres (real embeddings are clustered; on
structureless Gaussian noise no index beats brute force). Top-10 by inner product on normalised
vectors. Baselines, measured in the same run: brute force in numpy (a matmul and argpartition in
chunks) and scikit-learn's NearestNeighbors(algorithm="brute", metric="cosine"), the kind of
exhaustive comparison the original method ran. Ratios > 1 mean faiss is faster.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from omegaconf import OmegaConf

from influence_lab.attribution.index import build_index, search

D, K = 64, 10


def data(n: int, q: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, D)).astype(np.float32)
    x = centres[rng.integers(0, 1000, n)] + 0.35 * rng.normal(size=(n, D)).astype(np.float32)
    queries = centres[rng.integers(0, 1000, q)] + 0.35 * rng.normal(size=(q, D)).astype(np.float32)
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    return norm(x), norm(queries)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def numpy_brute(x, q):
    out = np.empty((len(q), K), dtype=np.int64)
    for s in range(0, len(q), 100):
        sims = q[s : s + 100] @ x.T
        part = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
        out[s : s + 100] = np.take_along_axis(part, order, 1)
    return out


def sklearn_brute(x, q):
    from sklearn.neighbors import NearestNeighbors

    return (
        NearestNeighbors(n_neighbors=K, algorithm="brute", metric="cosine").fit(x).kneighbors(q)[1]
    )


def recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--sklearn-max", type=int, default=100_000, help="skip scikit-learn above this N"
    )
    parser.add_argument(
        "--attribute", action="store_true", help="also time the attribute stage on digits"
    )
    args = parser.parse_args()
    print(
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, d={D}, top-{K}, "
        f"{args.queries} queries"
    )
    print(
        "| N | numpy brute (s) | sklearn brute (s) | faiss flat (s) | flat vs numpy "
        "| IVF build (s) | "
        "IVF search (s) | IVF vs flat | IVF recall@10 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        x, q = data(n, args.queries)
        truth, t_np = timed(lambda: numpy_brute(x, q))  # noqa: B023
        t_sk = None
        if n <= args.sklearn_max:
            sk, t_sk = timed(lambda: sklearn_brute(x, q))  # noqa: B023
            assert recall(sk, truth) > 0.999
        flat_cfg = OmegaConf.create({"type": "flat", "metric": "ip"})
        flat = build_index(x, flat_cfg)
        (_, found), t_flat = timed(lambda: search(flat, q, K, flat_cfg))  # noqa: B023
        assert recall(found, truth) > 0.999
        nlist = int(4 * np.sqrt(n))
        ivf_cfg = OmegaConf.create(
            {"type": "ivf", "metric": "ip", "nlist": nlist, "nprobe": max(8, nlist // 64)}
        )
        ivf, t_build = timed(lambda: build_index(x, ivf_cfg))  # noqa: B023
        (_, found_ivf), t_ivf = timed(lambda: search(ivf, q, K, ivf_cfg))  # noqa: B023
        sk_text = f"{t_sk:.2f}" if t_sk is not None else "skipped"
        print(
            f"| {n:,} | {t_np:.2f} | {sk_text} | {t_flat:.2f} | {t_np / t_flat:.1f}x "
            f"| {t_build:.1f} | "
            f"{t_ivf:.3f} | {t_flat / t_ivf:.1f}x | {recall(found_ivf, truth):.3f} |",
            flush=True,
        )
    if args.attribute:
        attribute_timing()


def attribute_timing():
    from hydra import compose, initialize_config_module

    from influence_lab.stages.attribute import attribute
    from influence_lab.stages.generate import generate

    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        cfg = compose(
            "attribute", ["logger=none", "trainer.progress_bar=false", "paths.output_dir=outputs"]
        )
    generate(cfg)  # train + generate outside the timing
    cfg.force = True
    _, t = timed(lambda: attribute(cfg))
    print(
        "attribute stage on digits (10 prompts x 8 outputs, 5 methods, model and embeddings "
        f"cached): {t:.1f} s"
    )


if __name__ == "__main__":
    main()
