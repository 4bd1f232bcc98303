"""Per-example gradients of a model's output function, randomly projected, cached by signature.

Written with `torch.func` (`vmap(grad(functional_call(...)))`) rather than through dattri: dattri's
gradient code is the same `torch.func` construction, but its CPU projector (`BasicProjector`)
draws a dense (parameters x block) Gaussian matrix anew for every batch of examples -- for the
digits DDPM (about 350k parameters, 4,096 dimensions) that is 1.4G random numbers per batch, and
its fast projectors need CUDA. A sparse Johnson-Lindenstrauss sketch (below) preserves inner
products the same way at a cost linear in the number of parameters, which keeps TRAK/TracIn
features of a whole training set at seconds per model on 2 cores.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from ..models.base import GenerativeModel
from ..models.ddpm import DTRAK_TIMESTEPS
from ..store.files import RunDir, write_npy
from ..store.signature import signature
from ..tracking.console import track

OUTPUTS = (
    "measured",
    "dtrak",
)  # the model's example_loss; D-TRAK's squared norm of predicted noise


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
    runs. Every chunk still comes from its own generator: the result does not depend on it."""

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
                out.addmm_(g[:, start : start + self.chunk], self.block(i))
            return out
        ahead = self.draw_threads  # chunks drawn ahead of the product (each 64 MB at 4,096)
        with ThreadPoolExecutor(ahead) as pool:
            drawn = deque(pool.submit(self.block, i) for i in range(min(ahead, len(starts))))
            for i, start in enumerate(starts):
                block = drawn.popleft().result()
                if i + ahead < len(starts):
                    drawn.append(pool.submit(self.block, i + ahead))
                out.addmm_(g[:, start : start + self.chunk], block)
        return out


PROJECTORS = {"sparse": SparseProjector, "normal": NormalProjector}


def make_projector(kind: str, n_params: int, dim: int, seed: int):
    """The projector `kind` (attribution.gradient.projector, resolved: sparse | normal)."""
    return PROJECTORS[kind](n_params, dim, seed)


class IdentityProjector:
    """No projection: the full per-example gradients (for checks against exact references)."""

    def __call__(self, g: torch.Tensor) -> torch.Tensor:  # (B, P) -> (B, P)
        return g


def n_params(model: GenerativeModel) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def per_example_gradients(
    model: GenerativeModel,
    batch: dict,
    output: str = "measured",
    noise_seed: int = 0,
    chunk: int = 64,
    desc: str | None = None,
    dtrak_timesteps: int | None = None,
):
    """Yield (B, P) flattened gradients of `output` for each example of `batch`, in chunks.
    `dtrak_timesteps`: D-TRAK's K (diffusion models; None: the model's default)."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}")
    model = model.eval()
    prepared = model.prepare(batch)
    tensors = {k: v for k, v in prepared.items() if isinstance(v, torch.Tensor)}
    n = len(batch["caption"])
    options = {} if dtrak_timesteps is None else {"dtrak_timesteps": int(dtrak_timesteps)}
    noise = model.measure_noise(n, noise_seed, **options)
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = dict(model.named_buffers())

    def f(p, example, nz):
        one = {k: v.unsqueeze(0) for k, v in example.items()}
        one_noise = {k: v.unsqueeze(0) for k, v in nz.items()}
        return functional_call(model, (p, buffers), (one, one_noise), {"output": output}).sum()

    per_example = vmap(grad(f), in_dims=(None, 0, 0))
    starts = range(0, n, chunk)
    for start in starts if desc is None else track(starts, desc):
        sl = slice(start, start + chunk)
        grads = per_example(
            params, {k: v[sl] for k, v in tensors.items()}, {k: v[sl] for k, v in noise.items()}
        )
        yield torch.cat([grads[k].reshape(grads[k].shape[0], -1) for k in params], 1)


def projected_gradients(
    model: GenerativeModel,
    batch: dict,
    projector,
    output: str = "measured",
    noise_seed: int = 0,
    desc: str | None = None,
    dtrak_timesteps: int | None = None,
) -> np.ndarray:
    """The projected gradients (examples, dim); the gradients reach the projector in groups of
    its `batch_rows` (a dense projection is drawn once per call)."""
    return projected_gradients_many(
        model, [batch], projector, output, noise_seed, desc, dtrak_timesteps
    )[0]


def projected_gradients_many(
    model: GenerativeModel,
    batches: list[dict],
    projector,
    output: str = "measured",
    noise_seed: int = 0,
    desc: str | None = None,
    dtrak_timesteps: int | None = None,
) -> list[np.ndarray]:
    """`projected_gradients` of several batches, each with its own fixed noise (as if projected
    alone), whose gradients share the projector's calls: a dense projection is regenerated once
    per `batch_rows` gradients rather than once per batch (per prompt, in `attribute`)."""

    def every_batch():
        for batch in batches:
            yield from per_example_gradients(
                model, batch, output, noise_seed, desc=desc, dtrak_timesteps=dtrak_timesteps
            )

    rows, pending = [], []
    for g in every_batch():
        pending.append(g.detach())
        if sum(len(p) for p in pending) >= getattr(projector, "batch_rows", 0):
            rows.append(projector(torch.cat(pending)))
            pending = []
    if pending:
        rows.append(projector(torch.cat(pending)))
    out = torch.cat(rows).numpy().astype(np.float32)
    sizes = [len(b["caption"]) for b in batches]
    return np.split(out, np.cumsum(sizes)[:-1])


def train_features(
    root: Path,
    model: GenerativeModel,
    model_key: str,
    train_batch: dict,
    fingerprint: str,
    output: str,
    proj_dim: int,
    proj_seed: int,
    noise_seed: int = 0,
    projector: str = "sparse",
    dtrak_timesteps: int | None = None,
) -> np.ndarray:
    """Projected gradients of every training item, cached under `<root>/features/` by the signature
    of (model weights key, data fingerprint, output function, projection, noise). The projector
    kind enters the key when it is not `sparse` and D-TRAK's K for `dtrak`, so the features
    cached before either existed (sparse; the measured loss) keep their keys."""
    spec = {
        "model": model_key,
        "data": fingerprint,
        "output": output,
        "proj_dim": int(proj_dim),
        "proj_seed": int(proj_seed),
        "noise_seed": int(noise_seed),
    }
    if projector != "sparse":
        spec["projector"] = projector
    if output == "dtrak":
        spec["dtrak_timesteps"] = int(dtrak_timesteps or DTRAK_TIMESTEPS)
    run = RunDir(root, "features", output, signature(spec))
    path = run / "features.npy"
    if run.done and path.exists():
        return np.load(path)
    run.prepare()
    feats = projected_gradients(
        model,
        train_batch,
        make_projector(projector, n_params(model), proj_dim, proj_seed),
        output,
        noise_seed,
        desc=f"gradients ({output})",
        dtrak_timesteps=spec.get("dtrak_timesteps"),
    )
    write_npy(path, feats)
    run.mark_done(spec)
    return feats
