"""The latent DDPM (model=ldm): the generative-model protocol in latent space, a frozen autoencoder
that is shared by every model of a dataset and never trained, packed or differentiated, a save and
load round trip without the data, packs equal to solo fits, D-TRAK's output, and (slow) samples of
Fashion-MNIST that a classifier labels as the prompted class."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from influence_lab.attribution.example_gradients import n_params, per_example_gradients
from influence_lab.data import load_data
from influence_lab.data.fashion import DEFAULT_PATH, FILES
from influence_lab.errors import InfluenceLabError
from influence_lab.models import LatentDDPM
from influence_lab.models import frozen as frozen_module
from influence_lab.models.build import build_model, load_model, save_model
from influence_lab.settings.model import LDMSettings
from influence_lab.training.batches import batch_of
from influence_lab.training.fit import fit, fit_pack
from tests.conftest import typed

HAVE_FASHION = all(os.path.isfile(os.path.join(DEFAULT_PATH, f)) for p in FILES.values() for f in p)


def _ae_state(model) -> dict[str, torch.Tensor]:
    keep = ("ae.", "latent_mean", "latent_std", "ae_fitted")
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(keep)}


@pytest.fixture
def digits(cfg_factory):
    cfg = cfg_factory("train", model="ldm")
    return cfg, load_data(typed(cfg.data))


def test_protocol_shapes_and_seeded_samples(digits):
    cfg, bundle = digits
    model = build_model(typed(cfg.model), bundle).eval()
    batch = batch_of(bundle.train.select(range(6)))
    loss = model.example_loss(batch, noise_seed=3)
    assert loss.shape == (6,) and bool(torch.isfinite(loss).all()) and bool((loss > 0).all())
    assert torch.equal(loss, model.example_loss(batch, noise_seed=3))
    assert not torch.equal(loss, model.example_loss(batch, noise_seed=4))
    assert model.embed(batch).shape == (6, cfg.model.hidden)
    assert model.prepare(batch)["latent"].shape == (6, cfg.model.latent_dim)
    prompts = [bundle.train[0]["caption"]] * 3
    out = model.sample(prompts, [0, 1, 2])
    assert out.shape == (3, 1, 8, 8)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, model.sample(prompts, [0, 1, 2]))  # deterministic given the seeds
    # output i depends on seed i alone (up to float sums over a different batch size)
    torch.testing.assert_close(out[1], model.sample(prompts[:1], [1])[0], rtol=0, atol=1e-5)
    assert float((out[0] - out[1]).abs().max()) > 1e-3


def test_latents_are_normalised_over_the_pool(digits):
    cfg, bundle = digits
    model = build_model(typed(cfg.model), bundle)
    z = model.encode(torch.as_tensor(np.asarray(bundle.full.with_format("numpy")["image"])))
    assert float(z.mean(0).abs().max()) < 1e-4
    assert float((z.std(0) - 1).abs().max()) < 1e-4


def test_autoencoder_is_shared_frozen_and_outside_the_gradients(digits, tmp_path):
    cfg, bundle = digits
    model = build_model(typed(cfg.model), bundle, seed=1)
    before = _ae_state(model)
    assert len(before) == 15 and bool(before["ae_fitted"])
    assert not any(name.startswith("ae.") for name, _ in model.named_parameters())
    ae_size = sum(v.numel() for k, v in before.items() if k.startswith("ae."))
    own = sum(
        p.numel() for name, p in model.named_parameters() if name.startswith(("net.", "text."))
    )
    assert ae_size > 10_000 and n_params(model) == own
    fit(model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp_path / "run", seed=1)
    after = _ae_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # every model of the dataset (another seed, a retrain without some items, a fresh process's
    # fit of the same autoencoder) gets the same autoencoder; the denoisers differ
    frozen_module.TRAINED.clear()
    removed = typed(
        OmegaConf.merge(cfg.data, {"exclude_ids": list(bundle.train["id"][:40])}), "data"
    )
    other = build_model(typed(cfg.model), load_data(removed), seed=2)
    assert all(torch.equal(before[k], v) for k, v in _ae_state(other).items())
    assert not torch.equal(
        other.net.inp.weight, build_model(typed(cfg.model), bundle, 1).net.inp.weight
    )
    rows = batch_of(bundle.train.select(range(3)))
    grads = torch.cat(list(per_example_gradients(model.eval(), rows, "measured")))
    assert grads.shape == (3, own)


def test_autoencoder_is_fitted_once_per_pool_across_processes(digits, tmp_path, monkeypatch):
    """With an output root, the autoencoder is written under embedders/ and a fresh process (an
    empty in-memory cache) reads it instead of fitting it again."""
    cfg, bundle = digits
    frozen_module.TRAINED.clear()
    first = build_model(typed(cfg.model), bundle, seed=1, cache_root=tmp_path)
    (folder,) = (tmp_path / "embedders").glob("ldm-autoencoder-*")
    assert (folder / "state.pt").stat().st_size > 10_000 and (folder / "done").exists()
    frozen_module.TRAINED.clear()

    def refit(self, x):
        raise AssertionError("the cached autoencoder was fitted again")

    monkeypatch.setattr(LatentDDPM, "_train_autoencoder", refit)
    second = build_model(typed(cfg.model), bundle, seed=2, cache_root=tmp_path)
    assert all(torch.equal(v, _ae_state(second)[k]) for k, v in _ae_state(first).items())
    frozen_module.TRAINED.clear()
    with pytest.raises(AssertionError, match="fitted again"):  # no root: fitted in the process
        build_model(typed(cfg.model), bundle, seed=2)


def test_save_and_load_round_trip_needs_no_data(digits, tmp_path):
    cfg, bundle = digits
    model = build_model(typed(cfg.model), bundle, seed=4)
    fit(model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp_path / "run", seed=4)
    save_model(model.eval(), tmp_path / "saved")
    frozen_module.TRAINED.clear()
    loaded = load_model(tmp_path / "saved")
    batch = batch_of(bundle.val.select(range(5)))
    assert torch.equal(model.example_loss(batch, 2), loaded.example_loss(batch, 2))
    assert torch.equal(model.embed(batch), loaded.embed(batch))
    prompts = list(bundle.val["caption"][:2])
    assert torch.equal(model.sample(prompts, [5, 6]), loaded.sample(prompts, [5, 6]))


def test_a_model_whose_autoencoder_was_never_fitted_says_so(digits):
    cfg, bundle = digits
    model = LatentDDPM(LDMSettings(), [1, 8, 8], ["digit", "one"])
    with pytest.raises(InfluenceLabError, match="model.ae_fitted is False"):
        model.sample(["digit one"], [0])


def test_a_pack_of_two_equals_two_solo_fits(digits, tmp_path):
    """Tolerance as tests/test_pack.py: loss curves within 1e-4 relative, weights within 2e-4."""
    cfg, full = digits
    ids = list(full.train["id"])
    removals, seeds = [[], ids[::4]], [0, 5]
    members = [build_model(typed(cfg.model), full, s) for s in seeds]
    items = [np.array([i for i, x in enumerate(ids) if x not in set(r)]) for r in removals]
    fit_pack(
        members,
        full.train,
        items,
        seeds,
        typed(cfg.model.fit),
        typed(cfg.trainer),
        tmp_path / "pack",
    )
    for m, (removed, seed) in enumerate(zip(removals, seeds, strict=True)):
        bundle = load_data(typed(OmegaConf.merge(cfg.data, {"exclude_ids": removed}), "data"))
        solo = build_model(typed(cfg.model), bundle, seed)
        solo.record_losses = True
        fit(solo, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp_path / f"solo{m}", seed)
        a, b = np.asarray(solo.loss_history), np.asarray(members[m].loss_history)
        assert len(a) == len(b) > 0
        assert float(np.abs(a - b).max() / np.abs(a).max()) < 1e-4
        for key, value in solo.state_dict().items():
            torch.testing.assert_close(members[m].state_dict()[key], value, rtol=1e-3, atol=2e-4)


def test_dtrak_output_and_its_gradients_are_finite(digits):
    cfg, bundle = digits
    model = build_model(typed(cfg.model), bundle).eval()
    rows = batch_of(bundle.train.select(range(4)))
    prepared = model.prepare(rows)
    out = model(prepared, model.measure_noise(4, 0), output="dtrak")
    assert out.shape == (4,) and bool(torch.isfinite(out).all()) and bool((out > 0).all())
    grads = torch.cat(list(per_example_gradients(model, rows, "dtrak", chunk=2)))
    assert grads.shape == (4, n_params(model)) and bool(torch.isfinite(grads).all())
    assert float(grads.norm(dim=1).min()) > 0


@pytest.mark.slow
@pytest.mark.skipif(
    not HAVE_FASHION and os.environ.get("REQUIRE_FASHION") != "1",
    reason="Debian's dataset-fashion-mnist is not installed (make data installs it)",
)
def test_fashion2_samples_are_the_prompted_class(cfg_factory, tmp_path):
    """A small ldm on sneakers and ankle boots (1,800 training items): a CNN fitted on the pool
    labels at least 12 of the 16 samples of each prompt as the prompted class (chance is 1/2; the
    default ldm on all ten classes: docs/data-and-models.md)."""
    from influence_lab.models.classifier import fit_classifier, predict

    cfg = cfg_factory(
        "train",
        "data=fashion2",
        "model.fit.max_epochs=40",
        "model.ae_epochs=15",
        shrink=False,
        model="ldm",
    )
    bundle = load_data(typed(cfg.data))
    model = build_model(typed(cfg.model), bundle, 0)
    fit(model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp_path / "run", 0)
    images = np.asarray(bundle.full.with_format("numpy")["image"], dtype=np.float32)
    labels = (np.asarray(bundle.full["label"]) == 9).astype(np.int64)  # 0 sneaker, 1 ankle boot
    classifier = fit_classifier(images, labels, seed=0)  # 3 epochs judged real items at 0.73
    assert (predict(classifier, images) == labels).mean() >= 0.9  # a judge worth asking (0.97)
    model.eval()
    for label, prompt in enumerate(["a sneaker", "an ankle boot"]):
        samples = model.sample([prompt] * 16, list(range(16))).numpy()
        match = float((predict(classifier, samples) == label).mean())
        assert match >= 0.75, (prompt, match)


def test_the_autoencoder_is_the_same_at_any_thread_count(digits, cfg_factory):
    """Fitted at one thread whatever the caller's count (models.threads), like the other frozen
    parts; a model trained before that has another train signature and is not reused."""
    from influence_lab.entry.stage_entry import settings_of
    from influence_lab.models.threads import FIT_THREADS
    from influence_lab.training.members import train_spec

    _, bundle = digits
    # wide enough that torch splits its matrix products between threads
    cfg = cfg_factory("train", "model.ae_hidden=1024", "model.ae_epochs=2", model="ldm")
    states = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            frozen_module.TRAINED.clear()
            states.append(_ae_state(build_model(typed(cfg.model), bundle, seed=1)))
            assert torch.get_num_threads() == threads  # the caller's count is restored
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())
    spec = train_spec(settings_of(cfg), bundle)
    assert spec["frozen_fit"] == {"ae_threads": FIT_THREADS}
    vae = cfg_factory("train")  # a model without frozen parts: its signature is unchanged
    assert "frozen_fit" not in train_spec(settings_of(vae), load_data(typed(vae.data)))
