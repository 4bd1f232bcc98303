"""`das`, the Diffusion Attribution Score: equal to a direct computation on a DDPM small enough
(4,208 parameters) to take every per-example Jacobian of its output one example at a time with
autograd, form the Gauss-Newton kernel of the projected Jacobians exactly, and solve it."""

from pathlib import Path

import numpy as np
import pytest
import torch

from influence_lab.attribution.methods import AttributionContext, Targets, registry
from influence_lab.attribution.projectors import NormalProjector
from influence_lab.data import load_data
from influence_lab.models.build import build_model, save_model
from influence_lab.models.protocol import NOISE_SEED
from influence_lab.settings import AttributionSettings
from influence_lab.training.batches import batch_of, outputs_batch
from influence_lab.training.fit import fit
from tests.conftest import make_cfg, typed

K, DIM, DAMPING = 4, 512, 0.01


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("das")
    cfg = make_cfg("train", tmp, "data.source.max_items=300", "model.hidden=8", model="ddpm")
    bundle = load_data(typed(cfg.data))
    model = build_model(typed(cfg.model), bundle, seed=0)
    fit(model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp / "run", seed=0)
    save_model(model, tmp / "model")
    settings = AttributionSettings.model_validate(
        {"gradient": {"proj_dim": DIM, "ensemble": 1, "damping": DAMPING, "dtrak_timesteps": K}}
    )
    context = AttributionContext(
        settings,
        bundle,
        tmp,
        Path(tmp, "model"),
        "tiny-ddpm",
        ensemble_runs=lambda size: [(Path(tmp, "model"), "tiny-ddpm")],
    )
    method = registry.methods_named(["das"], settings)[0].build()
    method.prepare(context)
    return method, bundle


def jacobians(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(examples, parameters) gradients of `output_das`, one example at a time, and the examples'
    residuals, under the fixed noise of `measure_noise`."""
    prepared = model.prepare(batch)
    n = len(batch["caption"])
    noise = model.measure_noise(n, NOISE_SEED, dtrak_timesteps=K)
    params = [p for p in model.parameters() if p.requires_grad]
    rows, residuals = [], []
    for i in range(n):
        one = {k: v[i : i + 1] for k, v in prepared.items() if isinstance(v, torch.Tensor)}
        eps = {k: v[i : i + 1] for k, v in noise.items()}
        grads = torch.autograd.grad(model(one, eps, output="das").sum(), params, allow_unused=True)
        rows.append(torch.cat([g.flatten() for g in grads]))
        with torch.no_grad():
            residuals.append(model.das_residual(one, eps))
    return torch.stack(rows).double(), torch.cat(residuals).double()


def test_das_equals_the_direct_computation(tiny):
    method, bundle = tiny
    model = method.models[0]
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_params == 4208
    projection = NormalProjector(n_params, DIM, seed=0)(torch.eye(n_params)).double()  # (p, DIM)
    train, residuals = jacobians(model, batch_of(bundle.train))
    phi = (train @ projection).numpy()
    kernel = phi.T @ phi  # the Gauss-Newton Hessian of the output, in the projected space
    lam = DAMPING * np.trace(kernel) / DIM
    images = np.asarray(bundle.train.with_format("numpy")["image"][:3], dtype=np.float32)
    groups = [images[:1], images[1:3]]
    prompts = [bundle.train[0]["caption"], "digit four, thin, upright"]
    ours = method.scores(Targets(prompts, groups)).values
    for g, (prompt, outs) in enumerate(zip(prompts, groups, strict=True)):
        query, _ = jacobians(model, outputs_batch(outs, [prompt] * len(outs)))
        q = (query @ projection).numpy()
        moved = q @ np.linalg.solve(kernel + lam * np.eye(DIM), phi.T)  # (outputs, items)
        direct = ((moved * residuals.numpy()) ** 2).sum(0)
        np.testing.assert_allclose(ours[g], direct, rtol=2e-3, atol=1e-6 * direct.max())
    assert (np.asarray(ours) >= 0).all()  # a squared distance between outputs


def test_the_lds_reads_das_through_its_dense_scores(tiny):
    """Squares are not linear in the features: the LDS's subset sums and damping grid of `das`
    are those of its dense table of scores, not TRAK's streamed sums."""
    from influence_lab.attribution.methods.attributor import subset_sums
    from influence_lab.evaluation.subsets import predictions_of

    method, bundle = tiny
    n = len(bundle.train)
    images = np.asarray(bundle.train.with_format("numpy")["image"][:4], dtype=np.float32)
    targets = Targets(
        list(bundle.train["caption"][:4]), [images[i : i + 1] for i in range(4)], True
    )
    masks = np.random.default_rng(0).random((5, n)) < 0.5
    dense = method.scores(targets).dense(n)
    np.testing.assert_allclose(method.subset_sums(targets, masks), subset_sums(masks, dense))
    ((label, grid),) = predictions_of("das", method, targets, masks, [DAMPING, 1.0], [1])
    assert label == "das@1" and grid.shape == (2, 5, 4)
    np.testing.assert_allclose(grid[0], subset_sums(masks, dense), rtol=1e-9)
