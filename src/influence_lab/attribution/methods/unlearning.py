"""Attribution by unlearning, AbU (Wang et al., NeurIPS 2024, "Data Attribution for Text-to-Image
Models by Unlearning Synthesized Images"): unlearn the target's outputs from the attributed model
by loss ascent preconditioned with the inverse diagonal Fisher information of the training set,
then rank the training items by how much their loss rose ("higher = more influential", the
convention of every method here).

One step: theta' = theta + lr (N F + delta)^-1 grad L(x), with L the measured loss of the target's
outputs (summed over the group), N F the sum over the training items of their squared per-example
gradients of the measured loss (the diagonal Fisher times N), and delta = `fisher_damping` x the
mean of N F over each parameter tensor (the authors damp per layer). `steps` > 1 recomputes the
gradient at the current weights. Each training item's measured loss is taken with the same fixed
noise before and after (`NOISE_SEED`, as every measured loss here), and its rise is its score.
As lr -> 0 one step scores item i by lr grad l_i^T (N F + delta)^-1 grad L(x): an influence
function with the damped Fisher diagonal for the Hessian (tests/test_unlearning.py checks it).

Written here: the authors' code (PeterWang512/AttributeByUnlearning) is a script for Stable
Diffusion's cross-attention layers, and neither dattri nor kronfluence has an unlearning
attributor; this one unlearns every trainable parameter of any model with a measured loss.

Cost per target: `steps` gradients of the target's outputs, and one forward pass of the measured
loss over the training set; once per model: one pass of per-example gradients over the training
set (the Fisher, cached under `<root>/fisher/`). The attribute stage prints the time per target.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ...console import console
from ...models.build import load_model
from ...models.protocol import NOISE_SEED
from ...store.files import RunDir, write_npy
from ...store.signature import signature
from ...training.batches import batch_of, outputs_batch
from ..example_gradients import per_example_gradients, per_example_values
from .attributor import Attributor, ScoreTable, Targets, Traits


def fisher_diagonal(model, batch: dict, noise_seed: int = NOISE_SEED) -> torch.Tensor:
    """N F: the sum over the batch's examples of their squared per-example gradients of the
    measured loss, flattened as `parameters_to_vector` orders the trainable parameters."""
    total = None
    for grads in per_example_gradients(model, batch, "measured", noise_seed, desc="fisher"):
        squares = grads.double().pow(2).sum(0)
        total = squares if total is None else total + squares
    return total


def damped_inverse(fisher: torch.Tensor, sizes: list[int], damping: float) -> torch.Tensor:
    """1 / (N F + delta), delta = `damping` x the mean of N F over each parameter tensor (`sizes`:
    the tensors' numbers of elements, in order); a tensor whose Fisher is all zero is damped with
    the mean over every parameter."""
    overall = float(fisher.mean()) or 1.0
    parts = []
    for part in torch.split(fisher, sizes):
        delta = damping * (float(part.mean()) or overall)
        parts.append(1.0 / (part + delta))
    return torch.cat(parts)


def draw_noise(model, n: int, draw: int) -> dict:
    """The fixed noise of draw `draw` for n examples: draw 0 is every measured loss's."""
    noise = model.measure_noise(n, NOISE_SEED + draw)
    return {k: v.to(model.device) for k, v in noise.items()}


def measured_losses(model, prepared: dict, draws: int) -> np.ndarray:
    """(examples,) measured loss of a prepared batch, the mean over `draws` fixed noise draws (the
    same at every call), in chunks, float64."""
    total = np.zeros(len(prepared["caption"]))
    for draw in range(draws):
        noise = draw_noise(model, len(total), draw)
        losses = per_example_values(model, model.measured_loss, prepared, noise)
        total += losses.double().cpu().numpy()
    return total / draws


class Unlearn(Attributor):
    """AbU (module docstring): `attribution.unlearn.steps`, `lr` and `fisher_damping`."""

    traits = Traits(family="gradient")

    def prepare(self, context) -> None:
        super().prepare(context)
        self.cfg = context.attribution.unlearn
        model = self.model = load_model(context.model_dir).to(context.device)
        model.eval()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.theta = parameters_to_vector(self.params).detach().clone()
        train = batch_of(context.bundle.train)
        self.train = model.prepare(train)
        self.before = measured_losses(model, self.train, self.cfg.noise_draws)
        fisher = self.fisher(train)
        sizes = [p.numel() for p in self.params]
        self.precond = damped_inverse(fisher, sizes, self.cfg.fisher_damping).to(self.theta)

    def fisher(self, train: dict) -> torch.Tensor:
        """N F of the attributed model on the training set, computed once (cached by the model's
        signature, the data's fingerprint and the noise)."""
        ctx = self.context
        sig = signature(ctx.model_signature, ctx.bundle.fingerprint, NOISE_SEED)
        run = RunDir(ctx.root, "fisher", f"{self.name}-{ctx.bundle.name}", sig)

        def compute():
            value = fisher_diagonal(self.model, train)
            write_npy(run / "fisher.npy", value.numpy())
            return value

        return run.compute_once(lambda: torch.from_numpy(np.load(run / "fisher.npy")), compute)

    def target_gradient(self, batch: dict) -> torch.Tensor:
        """grad of the summed measured loss of a batch of outputs at the model's current weights,
        the mean over `noise_draws` fixed noise draws (the authors average theirs over many)."""
        model, draws = self.model, self.cfg.noise_draws
        prepared = model.prepare(batch)
        n = len(prepared["caption"])
        tensors = {k: v for k, v in prepared.items() if isinstance(v, torch.Tensor)}
        total = None
        for draw in range(draws):
            loss = model.measured_loss(tensors, draw_noise(model, n, draw)).sum()
            grads = parameters_to_vector(torch.autograd.grad(loss, self.params)).detach()
            total = grads if total is None else total + grads
        return total / draws

    def unlearned_rise(self, batch: dict) -> np.ndarray:
        """(items,) each training item's rise of measured loss once `batch` is unlearned."""
        weights = self.theta.clone()
        try:
            for _ in range(self.cfg.steps):
                vector_to_parameters(weights, self.params)
                weights = weights + self.cfg.lr * self.target_gradient(batch) * self.precond
            vector_to_parameters(weights, self.params)
            return measured_losses(self.model, self.train, self.cfg.noise_draws) - self.before
        finally:
            vector_to_parameters(self.theta, self.params)

    def scores(self, targets: Targets) -> ScoreTable:
        start = time.perf_counter()
        rows = [
            self.unlearned_rise(outputs_batch(outs, [prompt] * len(outs)))
            for prompt, outs in zip(targets.prompts, targets.outputs, strict=True)
        ]
        if rows:
            each = (time.perf_counter() - start) / len(rows)
            console.print(
                f"{self.name}: {each:.2f} s per target ({len(self.before):,} training items, "
                f"{self.cfg.steps} step(s))",
                highlight=False,
            )
        return ScoreTable(np.stack(rows) if rows else np.zeros((0, len(self.before))))
