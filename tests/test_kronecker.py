"""`kfac` and `ekfac` through kronfluence: the scores are kronfluence's own, computed here with
kronfluence directly on the same model, data and fixed noise (the wrapper adds nothing: not its
grouping of a target's outputs, nor its noise, nor its reuse of cached factors), and planted
canaries rise to the top for the canaries' own pattern."""

from pathlib import Path

import numpy as np
import pytest
import torch

from influence_lab.attribution.methods import Targets
from influence_lab.data.canaries import canary_pattern
from influence_lab.models.build import load_model
from influence_lab.models.protocol import NOISE_SEED
from influence_lab.training.batches import batch_of, outputs_batch
from tests.conftest import prepared_method

PATTERN = canary_pattern((1, 8, 8), 0)[None].astype(np.float32)


@pytest.fixture
def trained(canary_vae):
    return canary_vae


class Rows(torch.utils.data.Dataset):
    """Examples with their fixed noise, written apart from the wrapper's."""

    def __init__(self, model, batch):
        prepared = model.prepare(batch)
        self.x = {k: v for k, v in prepared.items() if isinstance(v, torch.Tensor)}
        self.noise = model.measure_noise(len(batch["caption"]), NOISE_SEED)

    def __len__(self):
        return len(next(iter(self.x.values())))

    def __getitem__(self, i):
        return ({k: v[i] for k, v in self.x.items()}, {k: v[i] for k, v in self.noise.items()})


def kronfluence_directly(trained, strategy: str, groups: list[np.ndarray], tmp: Path):
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments
    from kronfluence.task import Task

    class Loss(Task):
        def compute_train_loss(self, batch, model, sample=False):
            return model.measured_loss(*batch).sum()

        def compute_measurement(self, batch, model):
            return model.measured_loss(*batch).sum()

    root, bundle = trained
    task = Loss()
    model = prepare_model(load_model(Path(root, "model")).eval(), task)
    analyzer = Analyzer("direct", model, task, cpu=True, disable_tqdm=True, output_dir=str(tmp))
    train = Rows(model, batch_of(bundle.train))
    analyzer.fit_all_factors(
        "f",
        train,
        per_device_batch_size=64,
        factor_args=FactorArguments(strategy=strategy, use_empirical_fisher=True),
    )
    out = []
    for g, group in enumerate(groups):
        query = Rows(model, outputs_batch(group, ["zxq pattern"] * len(group)))
        analyzer.compute_pairwise_scores(
            f"s{g}",
            "f",
            query,
            train,
            per_device_query_batch_size=8,
            per_device_train_batch_size=256,
        )
        out.append(analyzer.load_pairwise_scores(f"s{g}")["all_modules"].double().numpy().sum(0))
    return np.stack(out)


@pytest.mark.parametrize("strategy", ["kfac", "ekfac"])
def test_scores_are_kronfluences_own(trained, strategy, tmp_path):
    """A target alone: kronfluence's scores to float precision. Several targets scored in one call
    (their outputs batched together, groups summed): the same to 1e-3 of each row's largest score
    (float32 sums in another order)."""
    groups = [PATTERN, np.concatenate([PATTERN, PATTERN]), np.flip(PATTERN, -1).copy()]
    method = prepared_method(trained, strategy)
    together = method.scores(Targets(["zxq pattern"] * 3, groups)).values
    direct = kronfluence_directly(trained, strategy, groups, tmp_path)
    for g, group in enumerate(groups):
        alone = method.scores(Targets(["zxq pattern"], [group])).values[0]
        np.testing.assert_allclose(alone, direct[g], rtol=1e-5, atol=1e-6 * np.abs(direct[g]).max())
        assert np.abs(together[g] - direct[g]).max() <= 1e-3 * np.abs(direct[g]).max()
    again = prepared_method(
        trained, strategy
    )  # the cached factors, read again by a new process's method
    np.testing.assert_allclose(
        again.scores(Targets(["zxq pattern"], [PATTERN])).values[0], direct[0], rtol=1e-5
    )


@pytest.mark.parametrize("strategy", ["kfac", "ekfac"])
def test_the_canaries_rise_to_the_top(trained, strategy):
    """Of 276 items, the highest score for the canaries' pattern is a canary's, and at least 3 of
    the 6 are in the top 6 (one fixed noise draw per item makes the ranking noisy beyond that)."""
    _, bundle = trained
    scores = (
        prepared_method(trained, strategy).scores(Targets(["zxq pattern"], [PATTERN])).values[0]
    )
    ids = np.asarray(bundle.train["id"])[np.argsort(-scores)]
    assert ids[0].startswith("canary-")
    assert sum(i.startswith("canary-") for i in ids[:6]) >= 3


def test_the_diffusion_models_draw_their_targets_for_the_true_fisher(tmp_path):
    """The DDPM's `sampled_measured_loss` draws its targets from the model itself, so its gradient
    averages to zero over draws (the score of a likelihood at its own samples), which the measured
    loss's gradient does not: the factors then fit the GGN, not the empirical Fisher."""
    from influence_lab.attribution.methods.kronecker import samples_targets
    from influence_lab.data import load_data
    from influence_lab.models.build import build_model
    from influence_lab.models.vae import VAE
    from tests.conftest import make_cfg, typed

    cfg = make_cfg("train", tmp_path, "data.source.max_items=100", "model.hidden=8", model="ddpm")
    bundle = load_data(typed(cfg.data))
    model = build_model(typed(cfg.model), bundle, seed=0).eval()
    assert samples_targets(model) and not samples_targets(VAE)
    rows = model.prepare(batch_of(bundle.train.select(range(4))))
    tensors = {k: v for k, v in rows.items() if isinstance(v, torch.Tensor)}
    noise = model.measure_noise(4, NOISE_SEED)
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient(loss) -> torch.Tensor:
        grads = torch.autograd.grad(loss(tensors, noise).sum(), params, allow_unused=True)
        return torch.cat([g.flatten() for g in grads if g is not None])

    torch.manual_seed(0)
    draws = torch.stack([gradient(model.sampled_measured_loss) for _ in range(200)])
    mean, single = draws.mean(0).norm(), draws.norm(dim=1).mean()
    assert mean < 3 * single / 200**0.5  # zero up to the draws' own spread
    assert gradient(model.measured_loss).norm() > 10 * mean


def test_frozen_parts_are_not_tracked_and_dalle_scores(tmp_path):
    """DALL-E's tokenizer is frozen (its weights are buffers): kronfluence tracks only the layers
    that train, and K-FAC scores the transformer (it failed on the tokenizer's layers before)."""
    from influence_lab.attribution.methods.kronecker import trained_layers
    from influence_lab.data import load_data
    from influence_lab.models.build import build_model, save_model
    from tests.conftest import make_cfg, typed

    cfg = make_cfg("train", tmp_path, "data.source.max_items=100", model="dalle")
    bundle = load_data(typed(cfg.data))
    model = build_model(typed(cfg.model), bundle, seed=0)
    layers = trained_layers(model)
    assert layers and not any(name.startswith("tokenizer") for name in layers)
    assert any(name.startswith("tokenizer") for name, _ in model.named_modules())
    save_model(model, tmp_path / "model")
    images = np.asarray(bundle.train.with_format("numpy")["image"][:2], dtype=np.float32)
    prompts = list(bundle.train["caption"][:2])
    method = prepared_method((tmp_path, bundle), "kfac")
    scores = np.asarray(method.scores(Targets(prompts, [images[:1], images[1:]])).values)
    assert scores.shape == (2, len(bundle.train)) and np.isfinite(scores).all()
