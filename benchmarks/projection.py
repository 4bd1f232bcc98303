"""D-TRAK's dense Gaussian projection on a CPU: drawing the chunks on one thread against drawing
them ahead on `torch.get_num_threads()` threads while the product runs, alternated in one run.

    .venv/bin/python -m benchmarks.projection [--params 350000] [--dim 4096] [--repeats 3]

One call projects `batch_rows` gradients (what the projector takes per call: 1 GiB of them), as
the TRAK/D-TRAK training features do; the two variants must give the same numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from influence_lab.attribution.projectors import NormalProjector


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=int, nargs="+", default=[350_000])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=None, help="default: batch_rows")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"{threads} threads")
    print("| parameters | rows per call | one thread (s) | drawn ahead (s) | speed-up | same |")
    print("|---|---|---|---|---|---|")
    for n in args.params:
        serial = NormalProjector(n, args.dim, seed=0, draw_threads=1)
        ahead = NormalProjector(n, args.dim, seed=0)
        rows = args.rows or serial.batch_rows
        g = torch.randn(rows, n, generator=torch.Generator().manual_seed(1))
        times = {"serial": [], "ahead": []}
        outs = {}
        for _ in range(args.repeats):
            for name, projector in (("serial", serial), ("ahead", ahead)):
                start = time.perf_counter()
                outs[name] = projector(g)
                times[name].append(time.perf_counter() - start)
        a, b = (statistics.median(times[k]) for k in ("serial", "ahead"))
        same = torch.equal(outs["serial"], outs["ahead"])
        print(f"| {n:,} | {rows} | {a:.2f} | {b:.2f} | {a / b:.2f}x | {same} |")


if __name__ == "__main__":
    main()
