"""Fits whose weights do not depend on the machine's thread count.

torch's CPU kernels (GEMM, convolutions, reductions) split their work across the intra-op threads,
and the split changes the order in which floats are added: the same fit at 1 and at 2 threads
gives weights that differ in the last bits, and a long fit amplifies them. The small nets that
define the attribution spaces (the autoencoder embedder, the label CNN) decide near-tied rankings,
so they are fitted at one thread: the same weights at any `OMP_NUM_THREADS` on one machine.
What can still differ across processors is documented in docs/reproducibility.md.

`FIT_THREADS` is the thread count of those fits. It is part of their cache signatures, so a net
fitted before the count was fixed (at whatever the machine's default was) is fitted again, not
reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

FIT_THREADS = 1


@contextmanager
def fixed_threads(n: int = FIT_THREADS) -> Iterator[None]:
    """Run the block at `n` intra-op threads, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
