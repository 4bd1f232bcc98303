"""The attribution spaces do not depend on torch's thread count: the label CNN and the autoencoder
embedder give bitwise-identical weights and vectors at 1 and 2 threads, and the demo's attribute
stage ranks the same top-10 at both (at 2 threads the label CNN used to come out up to 2.5 apart
in a weight, and the `paper` ranking's top-10 shared a mean Jaccard of 0.81)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits

from influence_lab.attribution.embedders import AutoencoderEmbedder
from influence_lab.data import load_data
from influence_lab.models.classifier import classifier_features, fit_classifier
from influence_lab.models.threads import fixed_threads
from influence_lab.settings.attribution import AutoencoderEmbedder as AutoencoderSettings
from influence_lab.stages.attribute import attribute
from tests.conftest import make_cfg, typed

PROMPTS = "digit zero\\, regular\\, upright,digit three\\, regular\\, leaning left"


def _weights(net) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def _assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_fixed_threads_restores_the_callers_count():
    before = torch.get_num_threads()
    with fixed_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_label_cnn_is_the_same_at_one_and_two_threads():
    bunch = load_digits()
    x = (bunch.images[:600] / 16.0).astype(np.float32)[:, None]
    y = bunch.target[:600]
    fitted = {}
    for threads in (1, 2):
        with fixed_threads(threads):  # the caller's count, as OMP_NUM_THREADS would set it
            net = fit_classifier(x, y, epochs=3, seed=0)
            fitted[threads] = (_weights(net), classifier_features(net, x))
    _assert_bitwise(fitted[1][0], fitted[2][0])
    assert np.array_equal(fitted[1][1], fitted[2][1])


def test_the_autoencoder_embedder_is_the_same_at_one_and_two_threads(tmp_path):
    bundle = load_data(typed(make_cfg("train", tmp_path).data))
    cfg = AutoencoderSettings(hidden=64, latent_dim=16, epochs=4, lr=1e-3, seed=0)
    fitted = {}
    for threads in (1, 2):
        with fixed_threads(threads):
            embedder = AutoencoderEmbedder(
                cfg, bundle.full, bundle.full_fingerprint, tmp_path / f"t{threads}"
            )
            images = np.asarray(bundle.train.with_format("numpy")["image"][:200])
            fitted[threads] = (_weights(embedder.net), embedder.embed(images, []))
        assert (embedder.run / "done").exists()  # claimed, written and marked like every cache
    _assert_bitwise(fitted[1][0], fitted[2][0])
    assert np.array_equal(fitted[1][1], fitted[2][1])


def test_the_demos_rankings_are_the_same_at_one_and_two_threads(tmp_path):
    """The demo's attribute stage (paper, fused, raw_only; the classifier and autoencoder spaces at
    their default epochs) at 1 and 2 threads: the same top-10 of every method and prompt, in the
    same order. Scores agree to 1e-6 relative, not bitwise: faiss and torch reduce the content
    similarities across threads (measured: 3e-7 at most)."""
    tables = {}
    for threads in (1, 2):
        cfg = make_cfg(
            "attribute",
            tmp_path / f"t{threads}",
            "attribution.methods=[paper,fused,raw_only]",
            "generate.m=3",
            f"generate.prompts=[{PROMPTS}]",
        )
        with fixed_threads(threads):
            run = attribute(cfg)
        table = pd.read_parquet(run / "attribution.parquet")
        tables[threads] = table[table["rank"] <= 10].sort_values(["method", "target", "rank"])
    one, two = (t.reset_index(drop=True) for t in (tables[1], tables[2]))
    assert len(one) == 3 * 2 * 10
    pd.testing.assert_frame_equal(
        one[["method", "target", "rank", "id"]], two[["method", "target", "rank", "id"]]
    )
    np.testing.assert_allclose(one["score"].to_numpy(), two["score"].to_numpy(), rtol=1e-6)
