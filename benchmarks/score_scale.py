"""Scoring at scale in bounded memory: the workload that ran out of memory in MadryLab/trak#45.

    .venv/bin/python benchmarks/score_scale.py [--items 1000000] [--dim 4096] [--targets 1000]
                                               [--k 100] [--dtype float16]

Synthetic features (items x dim, standard normal, stored as shards of 65,536 rows in `--dtype`
under outputs/benchmarks/score_scale/, reused by later runs) and `targets` query rows; every
target's top-k items and score sums by `attribution.topk.top_scores`, streamed over blocks of
items and targets. Then the search methods' path at the same scale: a faiss flat index over
items x 64 embeddings (the width of the search spaces), top-k per target, and the same with k = 1
(the product and one pass over every score without a top-k heap: at 64 dimensions the scan, not
the product, sets the time).

Each scoring runs in a child process, so its peak resident memory (ru_maxrss) is its own, not the
generator's. Printed beside each: the bound set by this machine's float32 matmul peak, measured in
the same run (a 2048 x 2048 product; 2 x targets x items x dim FLOPs at that rate), and the ratio
of the measured time to it (the goal: within 2x, peak RSS <= 4 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHARD_ROWS = 65_536
FOLDER = Path("outputs/benchmarks/score_scale")


def peak_gflops() -> float:
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(5):
        a @ a
    return 2 * 2048**3 * 5 / (time.perf_counter() - start) / 1e9


def shards(items: int, dim: int, dtype: str) -> list[Path]:
    """The synthetic feature shards on disk (written once; a shard is rewritten when absent)."""
    folder = FOLDER / f"{items}x{dim}-{dtype}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, start in enumerate(range(0, items, SHARD_ROWS)):
        path = folder / f"shard-{i:04d}.npy"
        rows = min(SHARD_ROWS, items - start)
        if not path.exists():
            rng = np.random.default_rng(i)
            out = np.lib.format.open_memmap(path.with_suffix(".tmp"), "w+", dtype, (rows, dim))
            for r in range(0, rows, 8192):
                n = min(8192, rows - r)
                out[r : r + n] = rng.standard_normal((n, dim), dtype=np.float32)
            out.flush()
            del out
            path.with_suffix(".tmp").rename(path)
        paths.append(path)
    return paths


def score_gradient(args) -> dict:
    from influence_lab.attribution.feature_store import Features
    from influence_lab.attribution.topk import top_scores

    feats = Features([np.load(p, mmap_mode="r") for p in shards(args.items, args.dim, args.dtype)])
    left = np.random.default_rng(99).standard_normal((args.targets, args.dim), dtype=np.float32)
    start = time.perf_counter()
    top = top_scores(left, feats, args.k)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "first": int(top.indices[0, 0]), "k": top.indices.shape[1]}


def score_search(args) -> dict:
    import faiss

    rng = np.random.default_rng(7)
    emb = rng.standard_normal((args.items, 64), dtype=np.float32)
    queries = rng.standard_normal((args.targets, 64), dtype=np.float32)
    start = time.perf_counter()
    index = faiss.IndexFlatIP(64)
    index.add(emb)
    _, ids = index.search(queries, args.k)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "first": int(ids[0, 0]), "k": ids.shape[1]}


def child(kind: str, k: int) -> dict:
    """Run one scoring in a fresh process (top-k); its result and peak resident memory (GB)."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--child", kind, "--k", str(k)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--child", choices=["gradient", "search"])
    args = parser.parse_args()
    if args.child:
        out = (score_gradient if args.child == "gradient" else score_search)(args)
        out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(json.dumps(out))
        return
    start = time.perf_counter()
    paths = shards(args.items, args.dim, args.dtype)
    size = sum(p.stat().st_size for p in paths) / 1e9
    print(
        f"features: {args.items:,} x {args.dim} {args.dtype} on disk, {size:.1f} GB "
        f"({time.perf_counter() - start:.0f} s to write or find)"
    )
    peak = peak_gflops()
    print(f"float32 matmul peak here: {peak:.0f} GFLOP/s")
    rows = []
    # the search path once more with a one-slot heap: the same product and pass over every
    # score, without keeping a top-100 -- the floor that selection sets at 64 dimensions
    paths = (("gradient", args.dim, args.k), ("search", 64, args.k), ("search-top1", 64, 1))
    for label, dim, k in paths:
        kind = label.split("-")[0]
        out = child(kind, k)
        bound = 2 * args.targets * args.items * dim / (peak * 1e9)
        rows.append((label, dim, out, bound))
        print(
            f"{kind}: {args.targets:,} targets x {args.items:,} items x {dim}, top-{k}: "
            f"{out['seconds']:.1f} s, peak RSS {out['peak_rss_gb']:.2f} GB; matmul bound "
            f"{bound:.1f} s, ratio {out['seconds'] / bound:.2f}",
            flush=True,
        )
    FOLDER.mkdir(parents=True, exist_ok=True)
    record = {
        "items": args.items,
        "dim": args.dim,
        "targets": args.targets,
        "k": args.k,
        "dtype": args.dtype,
        "peak_gflops": peak,
        "runs": {kind: {**out, "bound_seconds": bound} for kind, _, out, bound in rows},
        "measured": time.strftime("%Y-%m-%d %H:%M"),
    }
    name = f"{args.items}x{args.dim}-{args.targets}.json"
    (FOLDER / name).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
