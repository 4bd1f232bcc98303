"""D-TRAK as its authors run it (sail-sg/D-TRAK, grad_unconditional.py; docs/gradients.md, "D-TRAK
as its authors run it"): our features against a direct autograd computation of their definition,
the shared noise, the measured loss left as it was, and the Gaussian projector."""

import json
import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from influence_lab.attribution.example_gradients import n_params, projected_gradients
from influence_lab.attribution.feature_store import train_features
from influence_lab.attribution.projectors import IdentityProjector, NormalProjector, make_projector
from influence_lab.data import load_data
from influence_lab.entry.validation import validate
from influence_lab.errors import InfluenceLabError
from influence_lab.models.build import build_model
from influence_lab.models.ddpm import dtrak_seed
from influence_lab.models.protocol import seeded_normal
from influence_lab.training.batches import batch_of
from tests.conftest import make_cfg, typed

TINY = {  # T = 20 (the tests' shrink); a few thousand parameters
    "ddpm": ["model.hidden=16", "model.depth=1", "model.cond_dim=4"],
    "ldm": ["model.hidden=16", "model.depth=1", "model.cond_dim=4"],
}
N = 6


def _compose(stage: str, *overrides: str):
    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        return compose(config_name=stage, overrides=list(overrides))


@pytest.fixture(scope="module", params=list(TINY))
def tiny(request, tmp_path_factory):
    model = request.param
    cfg = make_cfg("train", tmp_path_factory.mktemp(model), *TINY[model], model=model)
    bundle = load_data(typed(cfg.data))
    net = build_model(typed(cfg.model), bundle, 0).eval()
    return model, net, batch_of(bundle.train.select(range(N)))


def _clean(model: str, net, rows) -> torch.Tensor:
    """The clean tensor the model diffuses: pixels in [-1, 1], or the autoencoder's latents."""
    return rows["content"] * 2 - 1 if model == "ddpm" else net.encode(rows["content"])


def authors_gradients(model: str, net, rows, K: int, seed: int = 0) -> torch.Tensor:
    """(n, P): for each example i, the gradient of (1/K) sum_k mean_pixels(eps_theta(sqrt(ab_t)
    x_i + sqrt(1 - ab_t) eps_k, t, c_i)^2) over t in range(0, T, T // K), with the SAME eps_k
    for every i, one example at a time with torch.autograd.grad."""
    T = net.hparams.timesteps
    timesteps = list(range(0, T, T // K))[:K]
    noise = [seeded_normal(dtrak_seed(seed, t), net.space) for t in timesteps]
    params = [p for p in net.parameters() if p.requires_grad]
    x0, out = _clean(model, net, rows), []
    for i in range(len(rows["caption"])):
        c = net.condition([rows["caption"][i]])
        f = 0.0
        for t, eps in zip(timesteps, noise, strict=True):
            ab = net.alphas_bar[t]
            xt = ab.sqrt() * x0[i : i + 1] + (1 - ab).sqrt() * eps[None]
            pred = net.net(xt, torch.tensor([t]), c)
            f = f + pred.pow(2).mean()
        grads = torch.autograd.grad(f / K, params, allow_unused=True)
        out.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).flatten()
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    return torch.stack(out)


@pytest.mark.parametrize("K", [4, 10])
def test_features_equal_the_authors_definition(tiny, K):
    model, net, rows = tiny
    assert net.hparams.timesteps == 20
    ours = torch.as_tensor(
        projected_gradients(net, rows, IdentityProjector(), "dtrak", options={"dtrak_timesteps": K})
    )
    ref = authors_gradients(model, net, rows, K)
    assert ours.shape == (N, n_params(net))
    error = float(torch.linalg.norm(ours - ref) / torch.linalg.norm(ref))
    print(f"{model} K={K}: relative error {error:.2e}")
    assert error <= 1e-5
    for i in range(N):  # each example on its own too
        assert torch.linalg.norm(ours[i] - ref[i]) <= 1e-5 * torch.linalg.norm(ref[i])


def test_the_timesteps_are_the_authors(tiny):
    _, net, _ = tiny
    assert net.dtrak_timestep_grid(10).tolist() == list(range(0, 20, 2))
    assert net.dtrak_timestep_grid(4).tolist() == [0, 5, 10, 15]
    assert net.dtrak_timestep_grid(3).tolist() == [0, 6, 12]  # range(0, 20, 6) has 4: we keep K
    assert net.dtrak_timestep_grid(20).tolist() == list(range(20))
    with pytest.raises(InfluenceLabError, match=r"^attribution.gradient.dtrak_timesteps is 21; "):
        net.dtrak_timestep_grid(21)


def test_the_noise_is_shared_by_every_example(tiny):
    model, net, rows = tiny
    noise = net.measure_noise(5, 0, dtrak_timesteps=4)["eps_dtrak"]
    assert noise.shape == (5, 4, *net.space)
    assert all(torch.equal(noise[i], noise[0]) for i in range(5))
    # the train and the query features draw the same noise (the fixed seed), whatever their n
    assert torch.equal(net.measure_noise(2, 0, dtrak_timesteps=4)["eps_dtrak"][1], noise[0])
    assert not torch.equal(net.measure_noise(2, 1, dtrak_timesteps=4)["eps_dtrak"][0], noise[0])
    # the draw at a timestep does not depend on K (one seed per timestep, as the authors')
    assert torch.equal(net.measure_noise(1, 0, dtrak_timesteps=2)["eps_dtrak"][0, 1], noise[0, 2])
    # two copies of one example: identical D-TRAK features; with per-example noise (the
    # measured loss) they differ
    twice = {
        k: torch.cat([v[:1], v[:1]]) if torch.is_tensor(v) else [v[0]] * 2 for k, v in rows.items()
    }
    dtrak = projected_gradients(
        net, twice, IdentityProjector(), "dtrak", options={"dtrak_timesteps": 4}
    )
    assert np.array_equal(dtrak[0], dtrak[1]) and float(np.abs(dtrak[0]).max()) > 0
    measured = projected_gradients(net, twice, IdentityProjector(), "measured")
    assert float(np.linalg.norm(measured[0] - measured[1]) / np.linalg.norm(measured[0])) > 1e-2


def test_the_measured_loss_is_unchanged(tiny):
    """`measured_loss` (the counterfactual/LDS ground truth, TRAK's output) as it was defined:
    linspace(0, T - 1, L).round() timesteps, each example its own noise from one draw of
    (L, n, *space) at the seed."""
    model, net, rows = tiny
    L, T, seed = net.hparams.loss_timesteps, net.hparams.timesteps, 7
    draw = seeded_normal(seed, (L, N, *net.space))
    x0, c = _clean(model, net, rows), net.cond(net.prepare(rows))
    expected = torch.zeros(N)
    with torch.no_grad():
        for k, t in enumerate(torch.linspace(0, T - 1, L).round().long().tolist()):
            ab = net.alphas_bar[t]
            pred = net.net(ab.sqrt() * x0 + (1 - ab).sqrt() * draw[k], torch.full((N,), t), c)
            expected += (pred - draw[k]).pow(2).flatten(1).mean(1)
        got = net.example_loss(rows, seed)
    assert torch.equal(net.measure_noise(N, seed)["eps"], draw.transpose(0, 1))
    assert torch.allclose(got, expected / L, rtol=1e-6, atol=0)


def test_the_normal_projector_preserves_inner_products_in_expectation():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=3000), dtype=torch.float32)
    y = 0.6 * x + torch.as_tensor(rng.normal(size=3000), dtype=torch.float32)
    dim, seeds = 64, 300
    both = torch.stack([x, y])
    products = []
    for seed in range(seeds):
        p = NormalProjector(3000, dim, seed, chunk=1024)(both)  # three chunks, the last partial
        products.append(float(p[0] @ p[1]))
    exact = float(x @ y)
    spread = math.sqrt((float(x @ x) * float(y @ y) + exact**2) / dim / seeds)
    print(f"mean <Px,Py> {np.mean(products):.1f}, <x,y> {exact:.1f}, standard error {spread:.1f}")
    assert abs(np.mean(products) - exact) < 4 * spread
    # one seed at a higher dimension: norms within JL's sqrt(2 / dim)
    wide = NormalProjector(3000, 2048, seed=5)(both)
    assert torch.allclose(wide.norm(dim=1) ** 2 / both.norm(dim=1) ** 2, torch.ones(2), atol=0.12)


def test_the_normal_projector_is_one_matrix_per_seed():
    g = torch.randn(5, 2500)
    proj = NormalProjector(2500, 32, seed=3, chunk=1000)
    dense = torch.cat([proj.block(i) for i in range(3)])
    assert dense.shape == (2500, 32)
    assert float(dense.std()) == pytest.approx(1 / math.sqrt(32), rel=0.05)
    assert torch.allclose(proj(g), g @ dense, rtol=1e-5, atol=1e-5)
    assert torch.equal(proj(g), NormalProjector(2500, 32, seed=3, chunk=1000)(g))
    assert torch.allclose(proj(g[:2]), proj(g)[:2], rtol=1e-5, atol=1e-5)  # nor on its batch
    assert not torch.allclose(proj(g), NormalProjector(2500, 32, seed=4, chunk=1000)(g))
    assert isinstance(make_projector("normal", 2500, 32, 3), NormalProjector)


def test_the_feature_cache_keys_hold_the_projector_and_K(tiny, tmp_path):
    _, net, rows = tiny
    runs = {}
    for output, projector, K in [
        ("measured", "sparse", None),
        ("dtrak", "sparse", 4),
        ("dtrak", "normal", 4),
        ("dtrak", "normal", 5),
    ]:
        before = set((tmp_path / "features").rglob("done"))
        feats = train_features(
            tmp_path,
            net,
            "tiny",
            rows,
            "fp",
            output,
            16,
            0,
            0,
            projector,
            K and {"dtrak_timesteps": K},
        )
        assert feats.shape == (N, 16)
        (done,) = set((tmp_path / "features").rglob("done")) - before
        runs[(output, projector, K)] = (json.loads(done.read_text()), feats)
    spec, _ = runs[("measured", "sparse", None)]
    assert "projector" not in spec and "dtrak_timesteps" not in spec  # the keys of old caches
    assert runs[("dtrak", "normal", 4)][0]["projector"] == "normal"
    assert runs[("dtrak", "normal", 5)][0]["dtrak_timesteps"] == 5
    a, b = runs[("dtrak", "sparse", 4)][1], runs[("dtrak", "normal", 4)][1]
    assert not np.allclose(a, b)


def test_more_timesteps_than_the_schedule_is_one_sentence():
    cfg = _compose(
        "attribute", "model=ddpm", "model.timesteps=5", "attribution.methods=[fused,dtrak]"
    )
    with pytest.raises(InfluenceLabError) as info:
        validate(cfg)
    assert str(info.value) == (
        "attribution.gradient.dtrak_timesteps is 10 but model.timesteps is 5; "
        "D-TRAK's timesteps are the model's, so it must be at most 5."
    )
    # without dtrak the setting is not used, and not checked
    validate(_compose("attribute", "model=ddpm", "model.timesteps=5"))
