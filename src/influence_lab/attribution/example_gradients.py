"""Per-example gradients of a model's output function, written with `torch.func`
(`vmap(grad(functional_call(...)))`, dattri's construction too), and their random projection.

An output function is one the model declares (`GenerativeModel.output_functions`): `measured`
(its `example_loss`) and every `output_<name>` method (the diffusion models' `dtrak`)."""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from ..console import track
from ..errors import InfluenceLabError
from ..models.protocol import GenerativeModel


def n_params(model: GenerativeModel) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def per_example_gradients(
    model: GenerativeModel,
    batch: dict,
    output: str = "measured",
    noise_seed: int = 0,
    chunk: int = 64,
    desc: str | None = None,
    options: dict | None = None,
    part_of: tuple[int, int] | None = None,
):
    """Yield (B, P) flattened gradients of `output` for each example of `batch`, in chunks.
    `options`: the output function's keyword options to the model's `measure_noise` (D-TRAK's
    `dtrak_timesteps`); none: the model's defaults. `part_of` (start, total): `batch` is rows
    start.. of a batch of `total` examples, and gets those rows of that batch's fixed noise (a
    shard's features are then the whole batch's)."""
    if output not in model.output_functions():
        raise InfluenceLabError(
            f"{type(model).__name__} has no output function '{output}' "
            f"(it has {', '.join(model.output_functions())})."
        )
    model = model.eval()
    prepared = model.prepare(batch)
    device = next(model.parameters()).device  # a chunk's examples and noise go where the model is
    tensors = {k: v for k, v in prepared.items() if isinstance(v, torch.Tensor)}
    n = len(batch["caption"])
    start, total = part_of or (0, n)
    noise = model.measure_noise(total, noise_seed, **(options or {}))
    noise = {k: v[start : start + n] for k, v in noise.items()}
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
            params,
            {k: v[sl].to(device) for k, v in tensors.items()},
            {k: v[sl].to(device) for k, v in noise.items()},
        )
        yield torch.cat([grads[k].reshape(grads[k].shape[0], -1) for k in params], 1)


def per_example_values(model, output, prepared: dict, noise: dict, chunk: int = 256):
    """(examples,) `output(rows, noise rows)` of a prepared batch without gradients, `chunk`
    examples at a time on the model's device: a model function of fixed noise evaluated over a
    training set (the measured loss, DAS's residual)."""
    device = next(model.parameters()).device
    tensors = {k: v for k, v in prepared.items() if isinstance(v, torch.Tensor)}
    n = len(prepared["caption"])
    out = []
    with torch.no_grad():
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            rows = {k: v[sl].to(device) for k, v in tensors.items()}
            out.append(output(rows, {k: v[sl].to(device) for k, v in noise.items()}))
    return torch.cat(out)


def projected_gradients(
    model: GenerativeModel,
    batch: dict,
    projector,
    output: str = "measured",
    noise_seed: int = 0,
    desc: str | None = None,
    options: dict | None = None,
    part_of: tuple[int, int] | None = None,
) -> np.ndarray:
    """The projected gradients (examples, dim); the gradients reach the projector in groups of
    its `batch_rows` (a dense projection is drawn once per call). `part_of`: as for
    `per_example_gradients`."""
    return projected_gradients_many(
        model, [batch], projector, output, noise_seed, desc, options, part_of
    )[0]


def projected_gradients_many(
    model: GenerativeModel,
    batches: list[dict],
    projector,
    output: str = "measured",
    noise_seed: int = 0,
    desc: str | None = None,
    options: dict | None = None,
    part_of: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """`projected_gradients` of several batches, each with its own fixed noise (as if projected
    alone), whose gradients share the projector's calls: a dense projection is regenerated once
    per `batch_rows` gradients rather than once per batch (per prompt, in `attribute`)."""

    def every_batch():
        for batch in batches:
            yield from per_example_gradients(
                model, batch, output, noise_seed, desc=desc, options=options, part_of=part_of
            )

    rows, pending = [], []
    for g in every_batch():
        pending.append(g.detach())
        if sum(len(p) for p in pending) >= getattr(projector, "batch_rows", 0):
            rows.append(projector(torch.cat(pending)))
            pending = []
    if pending:
        rows.append(projector(torch.cat(pending)))
    out = torch.cat(rows).cpu().numpy().astype(np.float32)
    sizes = [len(b["caption"]) for b in batches]
    return np.split(out, np.cumsum(sizes)[:-1])
