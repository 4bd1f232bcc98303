"""The LDS's predictions without the targets x items table: each method's `subset_sums` (each
subset's sum of its items' scores) equals masks @ scores^T of the method's full table of scores,
for TRAK (dual, primal, streamed over shards), D-TRAK, TracIn and the search methods."""

import numpy as np
import pytest

from influence_lab.attribution.feature_store import Features
from influence_lab.attribution.methods.attributor import ScoreTable, subset_sums
from influence_lab.attribution.methods.gradient import as_table, query_batches
from influence_lab.attribution.spectrum import Spectrum
from influence_lab.data import load_data


def by_hand(masks, scores):
    """masks (S, n), scores (T, n) -> (S, T), one subset and one target at a time."""
    out = np.zeros((len(masks), len(scores)))
    for s, mask in enumerate(masks):
        for t, row in enumerate(scores):
            out[s, t] = float(np.sum(np.asarray(row, dtype=np.float64)[mask]))
    return out


def test_subset_sums_of_a_table_by_hand():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 30)) < 0.5
    scores = rng.normal(size=(4, 30))
    np.testing.assert_allclose(subset_sums(masks, scores), by_hand(masks, scores), rtol=1e-12)
    grid = rng.normal(size=(3, 4, 30))
    got = subset_sums(masks, grid)
    assert got.shape == (3, 5, 4)
    for d in range(3):
        np.testing.assert_allclose(got[d], by_hand(masks, grid[d]), rtol=1e-12)


@pytest.mark.parametrize("items,dim", [(40, 60), (60, 40), (1000, 40)])  # dual, primal x2
def test_spectrum_subset_sums_equal_the_masked_scores(items, dim):
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(items, dim)).astype(np.float32)
    q = rng.normal(size=(7, dim))
    masks = rng.random((9, items)) < 0.5
    cuts = [0, items // 3, 2 * items // 3, items]
    feats = Features([phi[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)])
    spectra = [Spectrum(phi), Spectrum(feats)]
    assert spectra[0].dual == spectra[1].dual == (dim > items)
    assert spectra[1].streamed == (dim <= items)
    np.testing.assert_allclose(feats.sums_over(masks), masks @ phi.astype(np.float64), rtol=1e-9)
    for spectrum in spectra:
        dampings = [1e-3, 1.0, 100.0]
        sums = spectrum.subset_sums(masks, q, dampings)
        for d, got in zip(dampings, sums, strict=True):
            want = by_hand(masks, spectrum.scores(q, d))
            assert np.abs(got - want).max() <= 1e-9 * np.abs(want).max()


@pytest.mark.parametrize("shards", [False, True])
def test_every_method_subset_sums_equal_its_table(cfg_factory, shards):
    """Through the methods as the LDS stage prepares them: the gradient methods' streamed sums
    (per ensemble model and their mean, at a damping grid) and the search methods' one-target-
    at-a-time sums equal masks @ scores^T of each method's own table."""
    from influence_lab.attribution.methods import Targets, registry
    from influence_lab.attribution.preparation import context_for, prepared
    from influence_lab.attribution.scoring import evaluate, subset_sums_of
    from influence_lab.settings import from_config
    from influence_lab.stages.train import train

    overrides = ["data.source.max_items=300", "attribution.gradient.proj_dim=64"]
    overrides += ["attribution.gradient.ensemble=2", "embedders.autoencoder.epochs=2"]
    overrides += ["+attribution.gradient.shard_size=64"] if shards else []
    settings = from_config(cfg_factory("attribute", *overrides, model="ddpm"))
    bundle = load_data(settings.data)
    run = train(settings, bundle)
    context = context_for(settings, bundle, str(run.path), run.signature, ensemble_size=2)
    methods = ["trak", "dtrak", "tracin", "raw_only", "fused"]
    attributors = prepared(registry.methods_named(methods, settings.attribution), context)
    n = len(bundle.train)
    rng = np.random.default_rng(2)
    images = rng.random((5, 1, 8, 8)).astype(np.float32)
    targets = Targets(["digit zero"] * 5, [images[i : i + 1] for i in range(5)], joint=True)
    masks = rng.random((6, n)) < 0.5
    grid = [1e-2, 1.0]

    trak = attributors["trak"]
    assert all(s.streamed for s in trak.spectra) == shards
    for name in ("trak", "dtrak"):
        method = attributors[name]
        tables = method.per_model(targets, grid)
        sums = method.per_model_subset_sums(targets, masks, grid)
        assert len(sums) == 2
        for table, got in zip(tables, sums, strict=True):
            dense = table.dense(n)
            for d in range(len(grid)):
                want = by_hand(masks, dense[d])
                assert np.abs(got[d] - want).max() <= 1e-8 * np.abs(want).max(), name
        mean = method.subset_sums(targets, masks, grid)
        np.testing.assert_allclose(mean, np.mean(sums, axis=0), rtol=1e-12)
        grid_table = method.damped_scores(targets, grid).dense(n)  # the DampingGrid protocol
        per_model_mean = np.mean([t.dense(n) for t in tables], axis=0)
        np.testing.assert_allclose(grid_table, per_model_mean, rtol=1e-10, atol=1e-12)
    tracin = attributors["tracin"]
    want = by_hand(masks, as_table(tracin.scores_many(query_batches(targets)), targets).dense(n))
    got = tracin.subset_sums(targets, masks)
    assert np.abs(got - want).max() <= 1e-8 * np.abs(want).max()

    search = {k: attributors[k] for k in ("raw_only", "fused")}
    got = subset_sums_of(context, search, targets, masks)
    rows = {k: [] for k in search}
    for _, _, _, scored in evaluate(context, search, targets):
        for k, (cand, values) in scored.items():
            rows[k].append(ScoreTable([values], [cand]).dense(n)[0])
    for k in search:
        np.testing.assert_allclose(got[k], by_hand(masks, np.stack(rows[k])), rtol=1e-10)
