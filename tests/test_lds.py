"""The LDS and memorization code, checked where the answer is known."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from influence_lab.attribution.methods.attributor import subset_sums
from influence_lab.evaluation.lds_score import draw_subsets, lds_of, lds_table, memorization


def lds_per_target(masks, outputs, scores):
    """The LDS per target of a table of scores (T, n) under masks (S, n)."""
    return lds_of(subset_sums(masks, scores), outputs)


def test_subsets_have_exact_sizes_and_are_reproducible():
    a = draw_subsets(101, 20, 0.5, seed=3)
    assert a.shape == (20, 101) and a.dtype == bool
    assert set(a.sum(1)) == {50}
    assert np.array_equal(a, draw_subsets(101, 20, 0.5, seed=3))
    assert not np.array_equal(a, draw_subsets(101, 20, 0.5, seed=4))
    with pytest.raises(ValueError):
        draw_subsets(10, 3, 1.0, 0)


def test_lds_of_a_true_linear_datamodel_is_one_and_of_noise_is_near_zero():
    rng = np.random.default_rng(0)
    masks = draw_subsets(200, 64, 0.5, 0)
    weights = rng.normal(size=(5, 200))  # 5 targets
    outputs = masks @ weights.T  # (64, 5): exactly linear in the included items
    assert np.allclose(lds_per_target(masks, outputs, weights), 1.0)
    assert np.allclose(lds_per_target(masks, outputs, -weights), -1.0)
    random_scores = rng.normal(size=(5, 200))
    assert abs(np.mean(lds_per_target(masks, outputs, random_scores))) < 0.25
    table = lds_table({"true": lds_per_target(masks, outputs, weights)})
    assert table.loc[0, "lds"] == pytest.approx(1.0) and table.loc[0, "targets"] == 5


def test_memorization_is_held_out_minus_trained_on():
    masks = np.array([[True, False], [False, True], [True, True], [False, False]])
    losses = np.array([[1.0, 5.0], [3.0, 2.0], [1.0, 2.0], [3.0, 6.0]])
    mem = memorization(masks, losses)
    assert mem[0] == pytest.approx(3.0 - 1.0)
    assert mem[1] == pytest.approx((5.0 + 6.0) / 2 - 2.0)


def _fit(x, y, lam):
    model = LogisticRegression(C=1.0 / lam, fit_intercept=False, tol=1e-10, max_iter=5000)
    return model.fit(x, y).coef_[0]


def test_lds_of_exact_influence_on_logistic_regression_is_high():
    """A problem whose influence is nearly exact: L2-regularised logistic regression on two digit
    classes, scored with the influence function (exact Hessian). The LDS code must give >= 0.7."""
    digits = load_digits()
    keep = np.isin(digits.target, (3, 8))
    x = np.hstack([digits.data[keep] / 16.0, np.ones((keep.sum(), 1))])
    y = (digits.target[keep] == 8).astype(float)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:240], order[240:270]
    xt, yt, xq, yq = x[train], y[train], x[test], y[test]
    lam = 1.0
    theta = _fit(xt, yt, lam)
    p = expit(xt @ theta)
    hessian = (xt * (p * (1 - p))[:, None]).T @ xt + lam * np.eye(x.shape[1])
    grads_train = (p - yt)[:, None] * xt
    grads_test = (expit(xq @ theta) - yq)[:, None] * xq
    scores = grads_test @ np.linalg.solve(
        hessian, grads_train.T
    )  # (targets, items): removal raises the loss

    masks = draw_subsets(len(train), 48, 0.5, seed=1)
    losses = []
    for mask in masks:
        th = _fit(xt[mask], yt[mask], lam)
        q = expit(xq @ th)
        losses.append(-(yq * np.log(q) + (1 - yq) * np.log(1 - q)))
    values = lds_per_target(masks, -np.array(losses), scores)
    assert np.nanmean(values) >= 0.7, np.nanmean(values)


def test_seed_agreement_is_the_mean_spearman_over_seed_pairs():
    from influence_lab.evaluation.lds_score import reference_rows, seed_agreement

    rng = np.random.default_rng(1)
    signal = rng.normal(size=(40, 1, 6))  # 40 subsets, 6 targets
    same = np.repeat(signal, 3, axis=1)  # three seeds that agree exactly
    assert np.allclose(seed_agreement(same), 1.0)
    assert np.allclose(reference_rows(same)["ceiling"], 1.0)
    three = signal + 0.5 * rng.normal(size=(40, 3, 6))
    pairs = [(0, 1), (0, 2), (1, 2)]
    r = [
        np.mean([stats.spearmanr(three[:, i, t], three[:, j, t])[0] for i, j in pairs])
        for t in range(6)
    ]
    np.testing.assert_allclose(seed_agreement(three), r, atol=1e-12)
    # Spearman-Brown to 3 seeds, by hand: 3r / (1 + 2r); the ceiling its square root
    refs = reference_rows(three)
    np.testing.assert_allclose(refs["retraining"], [3 * x / (1 + 2 * x) for x in r], atol=1e-12)
    np.testing.assert_allclose(refs["ceiling"], [np.sqrt(3 * x / (1 + 2 * x)) for x in r])
    assert np.isnan(seed_agreement(signal)).all()  # one seed: no reference rows
    # seeds that share nothing: a reliability near 0 and a ceiling that is not a negative root
    noise = reference_rows(rng.normal(size=(40, 3, 6)))
    assert abs(np.mean(noise["retraining"])) < 0.3 and (noise["ceiling"] >= 0).all()


def test_on_known_signal_a_perfect_predictor_lands_at_the_ceiling_and_a_retraining_at_its_row():
    """Simulated retrainings: each subset model's output on a target is the sum of the true
    influences of the items it saw plus seed noise (one-seed agreement about 0.4, as the digits
    DDPM's). The ground truth averages 3 seeds. A predictor that knows the true influences is
    scored against it like any method: it lands at the noise ceiling, not at the one-seed
    agreement; an independent 3-seed retraining lands at the `retraining` row."""
    from influence_lab.evaluation.lds_score import reference_rows, seed_agreement

    rng = np.random.default_rng(7)
    subsets, items, targets, seeds = 400, 120, 40, 3
    masks = draw_subsets(items, subsets, 0.5, seed=1)
    influence = rng.normal(size=(targets, items))
    signal = masks.astype(float) @ influence.T  # (subsets, targets)
    noise_sd = signal.std(0) * 1.22  # per target: one-seed agreement r = 1 / (1 + 1.22^2) ~ 0.40

    def retrain():
        return signal[:, None, :] + noise_sd * rng.normal(size=(subsets, seeds, targets))

    outputs = retrain()
    truth = outputs.mean(1)
    refs = {k: float(np.nanmean(v)) for k, v in reference_rows(outputs).items()}
    r = float(np.nanmean(seed_agreement(outputs)))
    assert 0.33 < r < 0.47, r
    perfect = float(np.mean(lds_per_target(masks, truth, influence)))
    another = retrain().mean(1)
    again = float(np.mean([stats.spearmanr(another[:, t], truth[:, t])[0] for t in range(targets)]))
    assert perfect == pytest.approx(refs["ceiling"], abs=0.03), (perfect, refs)
    assert again == pytest.approx(refs["retraining"], abs=0.03), (again, refs)
    # the one-seed agreement, the old ceiling, would have read the perfect predictor as ~1.4x it
    assert perfect > r + 0.2


def test_lds_table_has_a_ceiling_row_and_each_methods_share():
    per_target = {"a": np.array([0.2, 0.4, 0.3]), "b": np.array([0.1, 0.0, 0.2])}
    refs = {"retraining": np.array([0.25, 0.49, 0.36]), "ceiling": np.array([0.5, 0.7, 0.6])}
    table = lds_table(per_target, 200, refs).set_index("method")
    assert list(table.index) == ["a", "b", "retraining", "ceiling"]
    assert table.loc["ceiling", "lds"] == pytest.approx(0.6)
    assert table.loc["retraining", "lds"] == pytest.approx(1.1 / 3)
    assert table.loc["a", "share"] == pytest.approx(0.3 / 0.6)
    assert table.loc["b", "share"] == pytest.approx(0.1 / 0.6)
    empty = {k: np.full(3, np.nan) for k in refs}
    assert "ceiling" not in lds_table(per_target, 200, empty)["method"].values


def test_rank_correlation_of_every_column_at_once_is_scipys_spearman():
    from scipy import stats as sps

    from influence_lab.evaluation.lds_score import _spearman_columns

    rng = np.random.default_rng(4)
    a = rng.integers(0, 5, size=(20, 6)).astype(float)  # ties
    b = rng.normal(size=(20, 6))
    b[:, 2] = 1.0  # a constant column: NaN, as scipy
    got = _spearman_columns(a, b)
    for t in range(6):
        if t == 2:
            assert np.isnan(got[t])
        else:
            assert got[t] == pytest.approx(sps.spearmanr(a[:, t], b[:, t]).statistic, abs=1e-12)


def test_lds_intervals_carry_the_draw_of_subsets():
    from scipy import stats as sps

    from influence_lab.evaluation.lds_score import Redraw, summarise, two_way_interval

    rng = np.random.default_rng(0)
    subsets, targets = 16, 60
    # every target's outputs share one subset-level signal: the per-target LDS values move
    # together with the draw of subsets, which resampling targets alone cannot see
    common = rng.normal(size=(subsets, 1))
    predicted = (
        common + 0.8 * rng.normal(size=(subsets, 1)) + 0.3 * rng.normal(size=(subsets, targets))
    )
    outputs = common + 0.3 * rng.normal(size=(subsets, targets))
    redraw = Redraw(lambda rows: lds_of(predicted[rows], outputs[rows]), subsets)
    values = lds_of(predicted, outputs)
    row = summarise(values, 1000, redraw)
    targets_only = row["ci_high_targets"] - row["ci_low_targets"]
    assert row["ci_high"] - row["ci_low"] > 3 * targets_only
    assert row["ci_low"] < row["lds"] < row["ci_high"]
    # the resampling by hand: the same draws of rows then targets, scipy's Spearman per target
    lo, hi = two_way_interval(redraw, targets, 50, seed=3)
    draw = np.random.default_rng(3)
    means = []
    for _ in range(50):
        rows = draw.integers(0, subsets, subsets)
        cols = draw.integers(0, targets, targets)
        per = [sps.spearmanr(predicted[rows, t], outputs[rows, t]).statistic for t in cols]
        means.append(np.mean(per))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=1e-9)
    # independent targets and many subsets: the subsets add little
    many = 400
    predicted = rng.normal(size=(many, targets))
    outputs = predicted + rng.normal(size=(many, targets)) * rng.uniform(0.5, 3, targets)
    redraw = Redraw(lambda rows: lds_of(predicted[rows], outputs[rows]), many)
    row = summarise(lds_of(predicted, outputs), 400, redraw)
    width, targets_only = (
        row["ci_high"] - row["ci_low"],
        row["ci_high_targets"] - row["ci_low_targets"],
    )
    assert width < 1.5 * targets_only
