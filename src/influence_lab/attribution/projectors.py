"""Random projections of per-example gradients (the `attribution.gradient.projector` kinds).

Written here rather than taken from dattri or traker: dattri's CPU projector (`BasicProjector`)
draws a dense (parameters x block) Gaussian matrix anew for every batch of examples -- for the
digits DDPM (about 350k parameters, 4,096 dimensions) that is 1.4G random numbers per batch, and
its fast projectors (and traker's) need CUDA. A sparse Johnson-Lindenstrauss sketch preserves inner
products the same way at a cost linear in the number of parameters, which keeps TRAK/TracIn
features of a whole training set at seconds per model on 2 cores.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch


class SparseProjector:
    """A sparse JL sketch (Kane & Nelson 2014): every parameter adds its gradient, times a random
    sign / sqrt(s), to s random rows of the projected vector. E[<Px, Py>] = <x, y>."""

    def __init__(self, n_params: int, dim: int, seed: int, nnz: int = 4):
        gen = torch.Generator().manual_seed(int(seed))
        self.dim = int(dim)
        self.rows = torch.randint(0, self.dim, (nnz, n_params), generator=gen)
        self.signs = (
            torch.randint(0, 2, (nnz, n_params), generator=gen).float() * 2 - 1
        ) / math.sqrt(nnz)

    def __call__(self, g: torch.Tensor) -> torch.Tensor:  # (B, P) -> (B, dim)
        if self.rows.device != g.device:  # gradients on a GPU: the sketch moves there once
            self.rows, self.signs = self.rows.to(g.device), self.signs.to(g.device)
        out = g.new_zeros(g.shape[0], self.dim)
        for rows, signs in zip(self.rows, self.signs, strict=True):
            out.index_add_(1, rows, g * signs)
        return out


class NormalProjector:
    """A dense Gaussian projection, P = R / sqrt(dim) with R (parameters x dim) standard normal:
    E[<Px, Py>] = <x, y>. It is D-TRAK's projection (its authors run traker's CudaProjector with
    ProjectionType.normal). R (1.4G numbers for the digits DDPM at 4,096 dimensions) is never held:
    each call regenerates it in chunks of `chunk` parameters, chunk i from a generator seeded by
    (seed, i), and sums the chunks' products -- as traker's CPU `BasicProjector` does (in blocks of
    output columns), written here because traker is a test dependency only. Each call costs one
    draw of R, so callers pass many gradients at once (`batch_rows`).

    Drawing normals is single-threaded in torch and, on a CPU, costs more than the product (2
    cores: 96 ms to draw a 4,096 x 4,096 chunk, 56 ms to multiply 536 gradients by it), so
    `draw_threads` threads (default: torch's thread count) draw the next chunks while the product
    runs. Every chunk still comes from its own generator: the result does not depend on it. The
    chunks are drawn on the CPU (the same numbers on any device) and moved to the gradients'
    device."""

    def __init__(
        self, n_params: int, dim: int, seed: int, chunk: int = 4096, draw_threads: int = 0
    ):
        self.n_params, self.dim, self.seed, self.chunk = int(n_params), int(dim), int(seed), chunk
        self.batch_rows = max(
            64, 2**28 // max(self.n_params, 1)
        )  # gradients per call: 1 GiB of them
        self.draw_threads = int(draw_threads) or torch.get_num_threads()

    def block(self, i: int) -> torch.Tensor:
        """Rows i*chunk.. of P: (parameters of chunk i, dim)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        size = min(self.chunk, self.n_params - i * self.chunk)
        return torch.randn(size, self.dim, generator=gen).div_(math.sqrt(self.dim))

    def __call__(self, g: torch.Tensor) -> torch.Tensor:  # (B, P) -> (B, dim)
        out = g.new_zeros(g.shape[0], self.dim)
        starts = range(0, self.n_params, self.chunk)
        if self.draw_threads <= 1:
            for i, start in enumerate(starts):
                out.addmm_(g[:, start : start + self.chunk], self.block(i).to(g.device))
            return out
        ahead = self.draw_threads  # chunks drawn ahead of the product (each 64 MB at 4,096)
        with ThreadPoolExecutor(ahead) as pool:
            drawn = deque(pool.submit(self.block, i) for i in range(min(ahead, len(starts))))
            for i, start in enumerate(starts):
                block = drawn.popleft().result()
                if i + ahead < len(starts):
                    drawn.append(pool.submit(self.block, i + ahead))
                out.addmm_(g[:, start : start + self.chunk], block.to(g.device))
        return out


PROJECTORS = {"sparse": SparseProjector, "normal": NormalProjector}


def make_projector(kind: str, n_params: int, dim: int, seed: int):
    """The projector `kind` (attribution.gradient.projector, resolved: sparse | normal)."""
    return PROJECTORS[kind](n_params, dim, seed)


class IdentityProjector:
    """No projection: the full per-example gradients (for checks against exact references)."""

    def __call__(self, g: torch.Tensor) -> torch.Tensor:  # (B, P) -> (B, P)
        return g
