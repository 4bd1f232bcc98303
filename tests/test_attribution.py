import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from skimage.metrics import structural_similarity

from influence_lab.attribution import raw
from influence_lab.attribution.embedders import AutoencoderEmbedder, ModelEmbedder
from influence_lab.attribution.index import EmbeddingCache, build_index, search
from influence_lab.attribution.methods import AttributionContext, Targets, registry
from influence_lab.attribution.prompt_filter import PromptFilter
from influence_lab.attribution.scoring import attribute_prompts
from influence_lab.data import load_data
from influence_lab.errors import InfluenceLabError
from influence_lab.models.build import build_model
from influence_lab.settings import AttributionSettings, IndexSettings, section
from influence_lab.settings.attribution import AutoencoderEmbedder as AutoencoderSettings
from influence_lab.training.fit import fit
from tests.conftest import typed

INDEX = IndexSettings(type="flat", metric="ip", nlist=8, nprobe=8, hnsw_m=16, ef_search=64)


def attribution_cfg(**over):
    base = {
        "methods": ["raw_only", "latent:model", "latent:autoencoder", "fused", "caption_only"],
        "filter": "tfidf",
        "pool_size": 100,
        "embedders": ["model", "autoencoder"],
        "paper_embedder": "autoencoder",
        "fused_weights": {},
        "index": INDEX.plain(),
        "search_k": None,
        "keep": 20,
        "grid_top": 10,
    }
    base.update(over)
    return OmegaConf.create(base)


def rank(bundle, prompts, outputs, embedders, caches, cfg, root=None):
    """The attribution table of `cfg.methods` over the given search spaces."""
    context = AttributionContext(
        attribution=section(AttributionSettings, cfg, "attribution"),
        bundle=bundle,
        root=root,
        spaces={k: (embedders[k], caches[k]) for k in embedders},
    )
    methods = list(context.attribution.methods)
    attributors = {m.label: m.build() for m in registry.methods_named(methods, context.attribution)}
    for attributor in attributors.values():
        attributor.prepare(context)
    return attribute_prompts(context, attributors, Targets(prompts, outputs))


@pytest.fixture(scope="module")
def digits_setup(tmp_path_factory):
    from tests.conftest import make_cfg

    tmp = tmp_path_factory.mktemp("attr")
    cfg = make_cfg("train", tmp)
    bundle = load_data(typed(cfg.data))
    model = build_model(typed(cfg.model), bundle, seed=0)
    fit(model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp / "run", seed=0)
    ae_cfg = AutoencoderSettings(hidden=64, latent_dim=16, epochs=5, lr=1e-3, seed=0)
    embedders = {
        "model": ModelEmbedder(model.eval(), "sig"),
        "autoencoder": AutoencoderEmbedder(ae_cfg, bundle.full, bundle.full_fingerprint, tmp),
    }
    caches = {k: EmbeddingCache(tmp, e, bundle, INDEX) for k, e in embedders.items()}
    return bundle, embedders, caches


def test_planted_copies_rank_first_in_every_space(digits_setup):
    bundle, embedders, caches = digits_setup
    images = np.asarray(bundle.train.with_format("numpy")["image"])
    rng = np.random.default_rng(0)
    picks = [3, 250, 777, 1200]
    prompts, outputs = [], []
    for i in picks:
        exact = images[i]
        noisy = np.clip(exact + rng.normal(0, 0.03, exact.shape), 0, 1).astype(np.float32)
        prompts.append(bundle.train[i]["caption"])
        outputs.append(np.stack([exact, noisy]))
    table = rank(bundle, prompts, outputs, embedders, caches, attribution_cfg())
    for target, i in enumerate(picks):
        want = bundle.train[i]["id"]
        for method in ("raw_only", "latent:model", "latent:autoencoder", "fused"):
            top = table[(table.target == target) & (table.method == method) & (table["rank"] == 1)]
            assert top["id"].item() == want, (method, target)
    # the exact copy's per-space similarities are (near) maximal
    first = table[(table.method == "raw_only") & (table["rank"] == 1)]
    assert (first["raw_ssim"] > 0.95).all() and (first["raw_cosine"] > 0.99).all()


def test_same_inputs_give_the_same_ranking(digits_setup):
    bundle, embedders, caches = digits_setup
    images = np.asarray(bundle.train.with_format("numpy")["image"])
    args = (
        bundle,
        ["digit four, regular, upright"],
        [images[10:14]],
        embedders,
        caches,
    )
    a = rank(*args, attribution_cfg())
    b = rank(*args, attribution_cfg())
    assert a.equals(b)
    assert set(a.method) == {
        "raw_only",
        "latent:model",
        "latent:autoencoder",
        "fused",
        "caption_only",
    }


def test_fused_pool_only_holds_matching_captions(digits_setup):
    bundle, embedders, caches = digits_setup
    images = np.asarray(bundle.train.with_format("numpy")["image"])
    table = rank(
        bundle,
        ["digit seven, bold, leaning right"],
        [images[:2]],
        embedders,
        caches,
        attribution_cfg(pool_size=20, keep=20),
    )
    fused = table[table.method == "fused"]
    assert len(fused) == 20
    assert all("seven" in c for c in fused.caption)
    from influence_lab.attribution.prompt_filter import PromptFilter

    pool, b = PromptFilter(list(bundle.train["caption"])).pool(
        "digit seven, bold, leaning right", 20
    )
    exact = [
        i for i, c in enumerate(bundle.train["caption"]) if c == "digit seven, bold, leaning right"
    ]
    assert len(pool) >= 20 and set(exact) <= set(pool.tolist())  # ties at the cut are kept


def test_bad_sizes_and_methods(digits_setup):
    bundle, embedders, caches = digits_setup
    images = np.asarray(bundle.train.with_format("numpy")["image"])
    args = (bundle, ["digit one"], [images[:1]], embedders, caches)
    with pytest.raises(
        InfluenceLabError, match="attribution.pool_size is 5000 but the training set has 1617"
    ):
        rank(*args, attribution_cfg(pool_size=5000))
    with pytest.raises(
        InfluenceLabError, match="attribution.methods has 'nearest'; allowed values are paper"
    ):
        rank(*args, attribution_cfg(methods=["nearest"]))
    with pytest.raises(InfluenceLabError, match="names embedder 'clip'"):
        rank(*args, attribution_cfg(methods=["latent:clip"]))


def test_identity_is_maximal_and_ssim_matches_scikit_image():
    rng = np.random.default_rng(1)
    a = rng.random((5, 1, 8, 8))
    b = rng.random((6, 1, 8, 8))
    for name, fn in raw.IMAGE_METRICS.items():
        self_sim = fn(a, a)
        if name in raw.IMAGE_DISTANCES:
            assert np.allclose(np.diag(self_sim), 0, atol=1e-6)
            assert (self_sim.min(1) == np.diag(self_sim)).all()
        else:
            assert np.allclose(np.diag(self_sim), 1)
            assert (self_sim.argmax(1) == np.arange(5)).all()
    ours = raw.ssim(a, b)
    ref = np.array([[structural_similarity(x[0], y[0], data_range=1.0) for y in b] for x in a])
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    # known pairs: identical = 1, image against its inverse is strongly negative
    img = rng.random((1, 1, 16, 16))
    assert raw.ssim(img, img)[0, 0] == pytest.approx(1.0)
    assert raw.ssim(img, 1 - img)[0, 0] == pytest.approx(
        structural_similarity(img[0, 0], 1 - img[0, 0], data_range=1)
    )
    rgb = rng.random((2, 3, 12, 12))
    ref_rgb = structural_similarity(
        rgb[0].transpose(1, 2, 0), rgb[1].transpose(1, 2, 0), data_range=1.0, channel_axis=2
    )
    assert raw.ssim(rgb[:1], rgb[1:])[0, 0] == pytest.approx(ref_rgb, abs=1e-10)


def test_text_metrics():
    sims = raw.edit_similarity(["Mary", "John"], ["Mary", "Marya", "Jon"])
    assert (
        sims[0, 0] == 1.0 and sims[0, 1] == pytest.approx(0.8) and sims[1, 2] == pytest.approx(0.75)
    )
    ng = raw.ngram_cosine(["Mary"], ["Mary", "Zoe"])
    assert ng[0, 0] == pytest.approx(1.0) and ng[0, 1] < 0.3


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_faiss_equals_brute_force(metric, kind):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(20, 16)).astype(np.float32)
    cfg = INDEX.model_copy(update={"type": kind, "metric": metric, "ef_search": 300})
    scores, idx = search(build_index(x, cfg), q, 10, cfg)
    if metric == "ip":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        brute = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ xn.T
    else:
        brute = -((q[:, None, :] - x[None]) ** 2).sum(2)
    want = np.argsort(-brute, axis=1)[:, :10]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, want, 1), rtol=1e-4, atol=1e-4)
    subset = np.arange(0, 300, 3)
    _, sub_idx = search(build_index(x, cfg), q, 5, cfg, subset=subset)
    assert np.isin(sub_idx, subset).all()


@pytest.mark.parametrize("method", ["tfidf", "bm25"])
def test_prompt_filter_keeps_matching_captions(method):
    captions = [
        "digit seven, bold, upright",
        "digit one, thin, upright",
        "digit seven, thin, leaning left",
        "female first name",
        "digit three, bold, upright",
    ]
    pf = PromptFilter(captions, method)
    pool, b = pf.pool("digit seven", 2)
    assert sorted(pool.tolist()) == [0, 2]
    assert b[0] >= b[1] > 0
    scores = pf.scores("digit seven, bold")
    assert scores.argmax() == 0 and scores[3] == 0
    assert (PromptFilter(["", ""], method).scores("anything") == 1).all()
    tied, _ = PromptFilter(["a b", "a b", "a b", "c"], method).pool("a b", 1)
    assert sorted(tied.tolist()) == [0, 1, 2]
    with pytest.raises(InfluenceLabError, match="attribution.filter is 'grep'"):
        PromptFilter(captions, "grep")


def test_paper_space_is_the_classifier_where_labels_exist():

    from influence_lab.settings import AttributionSettings
    from influence_lab.settings.attribution import paper_space

    assert paper_space("auto", labelled=True) == "classifier"
    assert paper_space("auto", labelled=False) == "autoencoder"
    assert paper_space("model", labelled=True) == "model"
    att = AttributionSettings()
    assert att.paper_embedder == "auto"

    def spaces(names, labelled):
        return registry.spaces(att, registry.methods_named(names, att), labelled)

    assert spaces(["paper", "fused"], True) == [
        "model",
        "autoencoder",
        "classifier",
    ]
    assert spaces(["fused"], True) == ["model", "autoencoder"]
    assert spaces(["paper"], False) == ["model", "autoencoder"]


def test_paper_scorer_reads_the_classifier_space_without_searching_it(digits_setup, tmp_path):
    from influence_lab.attribution.embedders import ClassifierEmbedder
    from influence_lab.settings.attribution import ClassifierEmbedder as ClassifierSettings

    bundle, embedders, caches = digits_setup
    classifier = ClassifierEmbedder(
        ClassifierSettings(epochs=1, seed=0), bundle.full, bundle.full_fingerprint, tmp_path
    )
    spaces = {**embedders, "classifier": classifier}
    all_caches = {**caches, "classifier": EmbeddingCache(tmp_path, classifier, bundle, INDEX)}
    images = np.asarray(bundle.train.with_format("numpy")["image"])
    args = (bundle, ["digit four, regular, upright"], [images[10:14]])
    auto = rank(
        *args,
        spaces,
        all_caches,
        attribution_cfg(methods=["paper", "fused"], paper_embedder="auto"),
    )
    by_ae = rank(*args, spaces, all_caches, attribution_cfg(methods=["paper", "fused"]))
    assert "latent_classifier" not in auto.columns  # not a searched space: fused is unchanged
    fused = [t[t.method == "fused"].reset_index(drop=True) for t in (auto, by_ae)]
    assert fused[0][["id", "score"]].equals(fused[1][["id", "score"]])
    paper = [t[t.method == "paper"].score.to_numpy() for t in (auto, by_ae)]
    assert not np.allclose(paper[0], paper[1])  # the embedding features came from another space


def test_raw_similarities_outside_the_pool_only_when_a_method_ranks_every_item(digits_setup):
    bundle, embedders, caches = digits_setup
    images = np.asarray(bundle.train.with_format("numpy")["image"])
    args = (bundle, ["digit four, regular, upright"], [images[10:14]])
    pool_only = rank(*args, embedders, caches, attribution_cfg(methods=["fused"]))
    every = rank(*args, embedders, caches, attribution_cfg(methods=["fused", "raw_only"]))
    fused = every[every.method == "fused"].reset_index(drop=True)
    pd.testing.assert_frame_equal(pool_only.reset_index(drop=True), fused)  # same ranks, scores
    raw_rows = every[every.method == "raw_only"]
    assert raw_rows.raw_ssim.notna().all() and len(raw_rows) == 20
