"""Generation quality judged by the label CNN: real images of the prompted class match their
prompt and shuffled ones match at chance; the Fréchet distance is small for real images and large
for noise; the judge is trained once and shared with the `classifier` embedder; `generate` writes
the numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influence_lab.data import load_data
from influence_lab.reporting.quality import prompt_labels, quality
from tests.conftest import make_cfg, prompt_match_by_hand, typed


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits bundle, the preset's ten prompts (one per digit) and an output root whose
    classifier is trained by the first test that needs it."""
    root = tmp_path_factory.mktemp("quality")
    cfg = make_cfg("generate", root)
    return load_data(typed(cfg.data)), [str(p) for p in cfg.data.prompts], root


def real_images(bundle, labels: list[int], m: int, seed: int) -> np.ndarray:
    """(prompts, m, C, H, W): m training images of each prompt's class."""
    images = np.asarray(bundle.train.with_format("numpy", columns=["image"])[:]["image"])
    train_labels = np.asarray(bundle.train["label"])
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(train_labels == c), m, replace=False) for c in labels]
    return np.stack([images[r] for r in rows]).astype(np.float32)


def test_prompt_match_is_one_for_real_images_and_chance_for_shuffled(digits):
    bundle, prompts, root = digits
    labels = prompt_labels(bundle, prompts)
    assert labels == list(range(10))  # "digit zero, ..." -> 0, ..., "digit nine, ..." -> 9
    real = real_images(bundle, labels, m=16, seed=1)
    scores = quality(bundle, prompts, real, root)
    assert scores["prompt_match"] >= 0.95, scores  # 0.99 measured (158 of 160)
    flat = real.reshape(-1, *real.shape[2:])
    shuffled = flat[np.random.default_rng(2).permutation(len(flat))].reshape(real.shape)
    chance = quality(bundle, prompts, shuffled, root)["prompt_match"]
    assert 0.03 < chance < 0.2, chance  # 1 in 10 by chance; 0.11 measured


def test_frechet_is_small_for_real_images_and_large_for_noise(digits):
    bundle, prompts, root = digits
    real = real_images(bundle, list(range(10)), m=16, seed=1)
    scores = quality(bundle, prompts, real, root)
    noise = quality(bundle, prompts, np.random.default_rng(0).random(real.shape), root)
    # real training images vs the held-out digits: 2.6 measured; the reference draw of real images
    # (frechet_train) 3.6; uniform noise 255
    assert scores["frechet"] < 8 and scores["frechet_train"] < 8, scores
    assert noise["frechet"] > 50, noise
    assert noise["frechet"] > 10 * max(scores["frechet"], scores["frechet_train"])
    assert noise["frechet_train"] == pytest.approx(scores["frechet_train"])  # same real draw
    assert noise["prompt_match"] < 0.3  # noise is not a digit of the prompted kind


def test_classifier_is_trained_once_and_shared_with_the_embedder(digits, tmp_path, monkeypatch):
    import influence_lab.models.classifier as classifier
    from influence_lab.attribution.embedders import build_embedder
    from influence_lab.settings.attribution import ClassifierEmbedder

    bundle, prompts, _ = digits
    fits = []
    fit = classifier.fit_classifier
    monkeypatch.setattr(
        classifier, "fit_classifier", lambda *a, **k: fits.append(1) or fit(*a, **k)
    )
    real = real_images(bundle, list(range(10)), m=4, seed=3)
    first = quality(bundle, prompts, real, tmp_path)
    (run,) = (tmp_path / "embedders").glob("classifier-*")
    written = (run / "weights.pt").stat().st_mtime_ns
    again = quality(bundle, prompts, real, tmp_path)
    assert len(fits) == 1 and again == first
    embedder = build_embedder(
        "classifier",
        ClassifierEmbedder(),  # the default epochs and seed: the same network
        model=None,
        model_signature="",
        bundle=bundle,
        root=tmp_path,
    )
    assert len(fits) == 1 and embedder.run.path == run
    assert (run / "weights.pt").stat().st_mtime_ns == written


def test_generate_writes_prompt_match_and_frechet(tmp_path):
    from influence_lab.stages.generate import generate

    run = generate(make_cfg("generate", tmp_path, "generate.m=4"))
    scores = json.loads((run / "quality.json").read_text())
    assert set(scores) == {"prompt_match", "frechet", "frechet_train"}
    assert scores["prompt_match"] == prompt_match_by_hand(tmp_path, run.path)
    # a 3-epoch VAE is far from the data, farther than real training images are
    assert scores["frechet"] > scores["frechet_train"] > 0, scores
    assert len(list((tmp_path / "embedders").glob("classifier-*/weights.pt"))) == 1
