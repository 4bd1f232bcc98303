"""The small DALL-E (model=dalle): a tokenizer fitted once per pool and frozen, the measured loss
(the image tokens' negative log-likelihood under the caption) against an autoregressive hand
computation, sampling fixed by the seeds and gradients of the transformer alone (its packs:
tests/test_pack.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from influence_lab.data import load_data
from influence_lab.errors import InfluenceLabError
from influence_lab.models import frozen as frozen_module
from influence_lab.models import tokenizer as tokenizer_module
from influence_lab.models.build import build_model, load_model, save_model
from influence_lab.models.dalle import DALLE
from influence_lab.training.batches import batch_of
from influence_lab.training.fit import fit
from tests.conftest import typed


@pytest.fixture
def digits(cfg_factory):
    cfg = cfg_factory("train", model="dalle")
    return cfg, load_data(typed(cfg.data))


def _tok_state(model):
    return {k: v for k, v in model.state_dict().items() if k.startswith("tokenizer.")}


def test_tokenizer_is_fitted_once_per_pool_and_frozen(digits, tmp_path, monkeypatch):
    cfg, bundle = digits
    frozen_module.TRAINED.clear()
    model = build_model(typed(cfg.model), bundle, seed=1, cache_root=tmp_path)
    assert model.tokenizer.grid == (4, 4)  # 8x8 digits -> 4x4 tokens
    # its reconstructions beat the mean image (what a tokenizer that learnt nothing would give)
    pixels = torch.as_tensor(np.asarray(bundle.full.with_format("numpy")["image"]))
    mean_image_mse = float((pixels - pixels.mean(0)).pow(2).mean())
    assert 0 < float(model.tok_mse) < 0.8 * mean_image_mse, (float(model.tok_mse), mean_image_mse)
    (folder,) = (tmp_path / "embedders").glob("dalle-tokenizer-*")
    assert (folder / "done").exists() and (folder / "state.pt").stat().st_size > 5_000
    # frozen: no tokenizer weight is a parameter (optimisers, packs, gradients never see it)
    assert not [n for n, _ in model.named_parameters() if n.startswith("tokenizer.")]
    before = _tok_state(model)
    fit(model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp_path / "run", seed=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    # another process (empty in-memory cache) reads it, for a retrain without some items too
    frozen_module.TRAINED.clear()

    def refit(*args, **kwargs):
        raise AssertionError("the cached tokenizer was fitted again")

    monkeypatch.setattr("influence_lab.models.dalle.fit_tokenizer", refit)
    removed = typed(
        OmegaConf.merge(cfg.data, {"exclude_ids": list(bundle.train["id"][:40])}), "data"
    )
    retrain = build_model(typed(cfg.model), load_data(removed), seed=2, cache_root=tmp_path)
    assert all(torch.equal(v, _tok_state(retrain)[k]) for k, v in before.items())
    monkeypatch.undo()

    # tok_refit: the retrain's tokenizer is fitted on its own training set, so it differs
    frozen_module.TRAINED.clear()
    refit_cfg = OmegaConf.merge(cfg.model, {"tok_refit": True})
    own = build_model(typed(refit_cfg, "model"), load_data(removed), seed=2, cache_root=tmp_path)
    assert len(list((tmp_path / "embedders").glob("dalle-tokenizer-*"))) == 2
    assert not torch.equal(own.tokenizer.codebook, model.tokenizer.codebook)


def test_tokenizer_round_trip_and_its_grid(digits):
    cfg, bundle = digits
    model = build_model(typed(cfg.model), bundle, seed=0)
    images = torch.as_tensor(np.asarray(bundle.val.with_format("numpy")["image"][:16]))
    tokens = model.image_tokens(images)
    assert tokens.shape == (16, 16) and int(tokens.max()) < 32
    # encode is the nearest codebook entry of each cell, by brute force
    z = model.tokenizer.features(images)
    nearest = torch.cdist(z, model.tokenizer.codebook[None].expand(16, -1, -1)).argmin(-1)
    assert torch.equal(tokens, nearest)
    decoded = model.tokenizer.decode(tokens)
    assert decoded.shape == images.shape and 0 <= float(decoded.min()) <= float(decoded.max()) <= 1
    with pytest.raises(InfluenceLabError, match="model.downsample is 3"):
        tokenizer_module.downsample_factor((1, 28, 28), 3)
    assert tokenizer_module.downsample_factor((1, 28, 28), None) == 4  # 7x7 tokens
    assert tokenizer_module.downsample_factor((3, 64, 32), None) == 8


def test_measured_loss_is_the_autoregressive_nll_of_the_image_tokens(digits, tmp_path):
    """Token by token, with only the caption and the earlier image tokens visible: a broken
    causal mask or an off-by-one between inputs and targets changes the sum."""
    cfg, bundle = digits
    model = build_model(typed(cfg.model), bundle, seed=0)
    fit(model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp_path / "run", seed=0)
    model.eval()
    batch = model.prepare(batch_of(bundle.val.select(range(3))))
    measured = model.example_loss(batch, noise_seed=0)
    txt, img = batch["txt"], batch["img"]
    by_hand = torch.zeros(3)
    with torch.no_grad():
        for t in range(img.shape[1]):
            logits = model.head(model.hidden(txt, img[:, :t])[:, -1])[:, model.n_text :]
            by_hand -= F.log_softmax(logits, -1).gather(1, img[:, t : t + 1])[:, 0]
    torch.testing.assert_close(measured.detach(), by_hand, rtol=1e-5, atol=1e-4)
    # one item's loss does not depend on the batch it is in; a caption changes it
    alone = model.example_loss(batch_of(bundle.val.select([1])))
    torch.testing.assert_close(alone.detach(), measured[1:2].detach(), rtol=1e-5, atol=1e-4)
    other = batch_of(bundle.val.select([1]))
    other["caption"] = ["digit seven, bold, slanted"]
    assert abs(float(model.example_loss(other)) - float(alone)) > 1e-3


def test_sampling_is_fixed_by_the_seeds(digits, tmp_path):
    cfg, bundle = digits
    model = build_model(typed(cfg.model), bundle, seed=0)
    fit(model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp_path / "run", seed=0)
    model.eval()
    prompts = ["digit three", "digit eight", "digit three"]
    a = model.sample(prompts, [5, 6, 7])
    assert a.shape == (3, 1, 8, 8)
    assert torch.equal(a, model.sample(prompts, [5, 6, 7]))
    assert not torch.equal(a[0], a[2])  # same prompt, other seed
    # output i depends on its own prompt and seed only, not on the others in the call
    torch.testing.assert_close(model.sample(prompts[1:2], [6]), a[1:2])
    # a saved model samples the same without the data
    save_model(model, tmp_path / "saved")
    frozen_module.TRAINED.clear()
    assert torch.equal(load_model(tmp_path / "saved").sample(prompts, [5, 6, 7]), a)
    with pytest.raises(InfluenceLabError, match="model.text_len is 8"):
        model.sample([" ".join(["digit"] * 9)], [0])


def test_top_k_filter_and_temperature_follow_dalle(digits):
    """filter_thres 0.99 keeps the top 1% of the 32 codes (one): sampling is then the argmax."""
    cfg, bundle = digits
    model = build_model(
        typed(OmegaConf.merge(cfg.model, {"filter_thres": 0.99}), "model"), bundle, seed=0
    )
    model.eval()
    a = model.sample(["digit one"] * 2, [0, 1])
    torch.testing.assert_close(a[0], a[1])  # every seed draws the same greedy tokens


def test_gradients_see_the_transformer_only(digits):
    from influence_lab.attribution.example_gradients import per_example_gradients

    cfg, bundle = digits
    model = build_model(typed(cfg.model), bundle, seed=0).eval()
    own = sum(p.numel() for p in model.parameters())
    rows = batch_of(bundle.train.select(range(3)))
    grads = torch.cat(list(per_example_gradients(model, rows, "measured")))
    assert grads.shape == (3, own) and torch.isfinite(grads).all()
    assert DALLE.output_functions() == ["measured"]


def test_a_caption_longer_than_text_len_is_refused_at_build(cfg_factory):
    cfg = cfg_factory("train", "model.text_len=2", model="dalle")
    with pytest.raises(InfluenceLabError, match="model.text_len is 2 but the caption"):
        build_model(typed(cfg.model), load_data(typed(cfg.data)), seed=0)
