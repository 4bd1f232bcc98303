"""The LDS and memorization code, checked where the answer is known."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from influence_lab.counterfactual.lds import draw_subsets, lds_per_target, lds_table, memorization


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


def test_ceiling_is_seed_against_the_other_seeds():
    from influence_lab.counterfactual.lds import ceiling_per_target

    rng = np.random.default_rng(1)
    signal = rng.normal(size=(40, 1, 6))  # 40 subsets, 6 targets
    same = np.repeat(signal, 3, axis=1)  # three seeds that agree exactly
    assert np.allclose(ceiling_per_target(same), 1.0)
    noise = rng.normal(size=(40, 3, 6))  # seeds that share nothing
    assert abs(np.mean(ceiling_per_target(noise))) < 0.2
    # two seeds: each against the other, the same Spearman both ways
    two = signal + 0.5 * rng.normal(size=(40, 2, 6))
    expected = [stats.spearmanr(two[:, 0, t], two[:, 1, t]).statistic for t in range(6)]
    np.testing.assert_allclose(ceiling_per_target(two), expected, atol=1e-12)
    # three seeds: the mean over seeds of seed j against the mean of the other two
    three = signal + 0.5 * rng.normal(size=(40, 3, 6))
    mine = np.mean(
        [
            [
                stats.spearmanr(three[:, j, t], np.delete(three[:, :, t], j, axis=1).mean(1))[0]
                for t in range(6)
            ]
            for j in range(3)
        ],
        0,
    )
    np.testing.assert_allclose(ceiling_per_target(three), mine, atol=1e-12)
    assert np.isnan(ceiling_per_target(signal)).all()  # one seed: no ceiling


def test_lds_table_has_a_ceiling_row_and_each_methods_share():
    per_target = {"a": np.array([0.2, 0.4, 0.3]), "b": np.array([0.1, 0.0, 0.2])}
    table = lds_table(per_target, 200, ceiling=np.array([0.5, 0.7, 0.6])).set_index("method")
    assert list(table.index) == ["a", "b", "ceiling"]
    assert table.loc["ceiling", "lds"] == pytest.approx(0.6)
    assert table.loc["a", "share"] == pytest.approx(0.3 / 0.6)
    assert table.loc["b", "share"] == pytest.approx(0.1 / 0.6)
    assert "ceiling" not in lds_table(per_target, 200, ceiling=np.full(3, np.nan))["method"].values
