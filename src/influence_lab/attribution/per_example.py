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
import sys
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from ..models.base import GenerativeModel
from ..store.files import RunDir, write_npy
from ..store.signature import signature

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
):
    """Yield (B, P) flattened gradients of `output` for each example of `batch`, in chunks."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}")
    model = model.eval()
    prepared = model.prepare(batch)
    tensors = {k: v for k, v in prepared.items() if isinstance(v, torch.Tensor)}
    n = len(batch["caption"])
    noise = model.measure_noise(n, noise_seed)
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = dict(model.named_buffers())

    def f(p, example, nz):
        one = {k: v.unsqueeze(0) for k, v in example.items()}
        one_noise = {k: v.unsqueeze(0) for k, v in nz.items()}
        return functional_call(model, (p, buffers), (one, one_noise), {"output": output}).sum()

    per_example = vmap(grad(f), in_dims=(None, 0, 0))
    for start in tqdm(
        range(0, n, chunk), desc=desc, leave=False, disable=desc is None or not sys.stderr.isatty()
    ):
        sl = slice(start, start + chunk)
        grads = per_example(
            params, {k: v[sl] for k, v in tensors.items()}, {k: v[sl] for k, v in noise.items()}
        )
        yield torch.cat([grads[k].reshape(grads[k].shape[0], -1) for k in params], 1)


def projected_gradients(
    model: GenerativeModel,
    batch: dict,
    projector: SparseProjector,
    output: str = "measured",
    noise_seed: int = 0,
    desc: str | None = None,
) -> np.ndarray:
    rows = [
        projector(g.detach())
        for g in per_example_gradients(model, batch, output, noise_seed, desc=desc)
    ]
    return torch.cat(rows).numpy().astype(np.float32)


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
) -> np.ndarray:
    """Projected gradients of every training item, cached under `<root>/features/` by the signature
    of (model weights key, data fingerprint, output function, projection, noise)."""
    spec = {
        "model": model_key,
        "data": fingerprint,
        "output": output,
        "proj_dim": int(proj_dim),
        "proj_seed": int(proj_seed),
        "noise_seed": int(noise_seed),
    }
    run = RunDir(root, "features", output, signature(spec))
    path = run / "features.npy"
    if run.done and path.exists():
        return np.load(path)
    run.prepare()
    projector = SparseProjector(n_params(model), proj_dim, proj_seed)
    feats = projected_gradients(
        model, train_batch, projector, output, noise_seed, desc=f"gradients ({output})"
    )
    write_npy(path, feats)
    run.mark_done(spec)
    return feats
