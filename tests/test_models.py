import numpy as np
import pytest
import torch

from influence_lab.data import load_data
from influence_lab.models.build import build_model, load_model, save_model
from influence_lab.training.batches import batch_of
from influence_lab.training.fit import fit
from tests.conftest import typed

MODELS = ["vae", "ddpm", "ldm", "chargpt"]


@pytest.fixture(params=MODELS)
def setup(request, cfg_factory):
    cfg = cfg_factory("train", model=request.param)
    bundle = load_data(typed(cfg.data))
    return cfg, bundle


def test_protocol_shapes(setup):
    cfg, bundle = setup
    model = build_model(typed(cfg.model), bundle).eval()
    batch = batch_of(bundle.train.select(range(6)))
    loss = model.example_loss(batch, noise_seed=3)
    assert loss.shape == (6,) and torch.isfinite(loss).all() and (loss > 0).all()
    assert torch.equal(loss, model.example_loss(batch, noise_seed=3))  # fixed noise
    emb = model.embed(batch)
    assert emb.ndim == 2 and emb.shape[0] == 6
    prompts = [bundle.train[0]["caption"]] * 3
    out = model.sample(prompts, [0, 1, 2])
    again = model.sample(prompts, [0, 1, 2])
    if bundle.kind == "image":
        assert out.shape == (3, 1, 8, 8)
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, again)
        assert not torch.equal(out[0], out[1])  # different seeds, different outputs
    else:
        assert isinstance(out, list) and len(out) == 3 and all(isinstance(t, str) for t in out)
        assert out == again


def test_unconditional_model_ignores_captions(cfg_factory):
    cfg = cfg_factory("train", "model.conditional=false")
    bundle = load_data(typed(cfg.data))
    model = build_model(typed(cfg.model), bundle).eval()
    a = model.sample(["digit one, thin, upright"], [5])
    b = model.sample(["digit eight, bold, upright"], [5])
    assert torch.equal(a, b)


def test_training_twice_with_one_seed_gives_identical_weights(setup, tmp_path):
    cfg, bundle = setup
    states = []
    for i in range(2):
        model = build_model(typed(cfg.model), bundle, seed=7)
        metrics = fit(
            model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp_path / f"run{i}", seed=7
        )
        states.append(model.state_dict())
        assert metrics["epochs"] == cfg.model.fit.max_epochs
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_save_and_load_round_trip(setup, tmp_path):
    cfg, bundle = setup
    model = build_model(typed(cfg.model), bundle).eval()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    batch = batch_of(bundle.train.select(range(4)))
    assert torch.allclose(model.example_loss(batch, 1), loaded.example_loss(batch, 1))


def test_model_for_the_wrong_kind_of_data_is_an_error(cfg_factory):
    from influence_lab.errors import InfluenceLabError

    cfg = cfg_factory("train", "data=names", model="vae")
    with pytest.raises(
        InfluenceLabError, match="model=vae needs image data but data=names holds text"
    ):
        build_model(typed(cfg.model), load_data(typed(cfg.data)))


def test_the_lds_ground_truth_averages_over_noise_draws(setup):
    """lds.noise_draws: the mean of example_loss under seeds 0, 1, 2 (models with noise); one
    draw is example_loss itself."""
    from influence_lab.evaluation.subsets import averaged_loss

    cfg, bundle = setup
    model = build_model(typed(cfg.model), bundle).eval()
    batch = batch_of(bundle.train.select(range(6)))
    draws = [model.example_loss(batch, s).detach().numpy() for s in range(3)]
    np.testing.assert_allclose(averaged_loss(model, batch, 1), draws[0], rtol=1e-6)
    if model.measure_noise(1, 0):  # vae, ddpm: the draws differ and are averaged
        assert not np.allclose(draws[0], draws[1])
        np.testing.assert_allclose(averaged_loss(model, batch, 3), np.mean(draws, 0), rtol=1e-6)
    else:  # chargpt: no noise, one evaluation
        np.testing.assert_allclose(averaged_loss(model, batch, 3), draws[0], rtol=1e-6)
