"""The statistical core on data whose answer is known another way: mixed-sign differences against
scipy and hand values, resampling over targets (not seeds), and the pooling of replicates (two-level
bootstrap, stable flag, top-k overlap) against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from influence_lab.counterfactual.replicates import (
    SEED_STRIDE,
    pooled_compare,
    replicate_changes,
    topk_overlap,
    two_level_bootstrap,
)
from influence_lab.counterfactual.statistics import bootstrap_ci, compare, wilcoxon_p

MIXED = np.array([0.9, -0.4, 1.3, 0.2, -0.8, 0.6, 1.1, -0.1, 0.5, 0.7, -0.3, 1.6, 0.05, 0.4])


def test_bootstrap_interval_matches_scipy_percentile_bootstrap_on_mixed_signs():
    lo, hi = bootstrap_ci(MIXED, n_boot=20000, seed=1)
    ref = sps.bootstrap(
        (MIXED,), np.mean, n_resamples=20000, method="percentile", random_state=2
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.03) and hi == pytest.approx(ref.high, abs=0.03)
    # a 95% interval: about mean -/+ 1.96 standard errors (the 40%/60% quantiles would be ~4x
    # narrower, the mean twice a point)
    se = MIXED.std() / np.sqrt(len(MIXED))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert lo < MIXED.mean() < hi


def test_wilcoxon_on_mixed_signs_against_the_exact_hand_value():
    # |d| ranks 1..6; the negative one has rank 2, so W- = 2 and W+ = 19. Exact two-sided p:
    # 2 * P(W <= 2) = 2 * #{subsets of 1..6 summing to <= 2} / 2^6 = 2 * 3 / 64
    assert wilcoxon_p(np.array([1.0, -2.0, 3.0, 4.0, 5.0, 6.0])) == pytest.approx(6 / 64)
    assert wilcoxon_p(MIXED) == pytest.approx(sps.wilcoxon(MIXED).pvalue)
    assert np.isnan(wilcoxon_p(np.zeros(5)))


def _rows(values: dict, method="fused") -> list[dict]:
    """Result rows {(arm, target, seed): value} of one metric."""
    return [
        {
            "method": method if arm == "topk" else "control",
            "arm": arm,
            "k": 5,
            "metric": "delta_loss",
            "target": t,
            "seed": seed,
            "value": v,
        }
        for (arm, t, seed), v in values.items()
    ]


def test_compare_averages_seeds_then_resamples_targets():
    rng = np.random.default_rng(3)
    # 12 targets x 3 seeds, mixed signs; the targets differ much more than the seeds do
    top = rng.normal(0.2, 1.0, size=(12, 1)) + 0.1 * rng.normal(size=(12, 3))
    ctrl = 0.1 * rng.normal(size=(12, 3))
    values = {("topk", t, s): top[t, s] for t in range(12) for s in range(3)}
    values.update({("random", t, s): ctrl[t, s] for t in range(12) for s in range(3)})
    row = compare(pd.DataFrame(_rows(values))).iloc[0]
    per_target = top.mean(1) - ctrl.mean(1)  # seeds averaged first: 12 paired differences
    assert row.n_targets == 12
    assert row.mean_diff == pytest.approx(per_target.mean())
    assert (row.ci_low, row.ci_high) == pytest.approx(bootstrap_ci(per_target))
    assert row.wilcoxon_p == pytest.approx(sps.wilcoxon(per_target).pvalue)
    # resampling the 36 (target, seed) values as if independent would give a narrower interval
    every = (top - ctrl).ravel()
    assert row.ci_high - row.ci_low > (np.subtract(*bootstrap_ci(every)[::-1])) * 1.4


def test_two_level_bootstrap_carries_the_spread_between_replicates():
    rng = np.random.default_rng(0)
    # replicate A: every prompt +1, replicate B: every prompt -1 (tiny noise): the prompts agree
    # within a replicate, the replicates disagree. Resampling replicates draws AA, AB or BB
    # (1/4, 1/2, 1/4), so the interval spans about [-1, 1]; prompts alone would give ~[-0.02, 0.02]
    diffs = np.stack([1 + 0.01 * rng.normal(size=20), -1 + 0.01 * rng.normal(size=20)])
    lo, hi = two_level_bootstrap(diffs, n_boot=4000)
    assert lo < -0.9 and hi > 0.9
    flat = bootstrap_ci(diffs.ravel())
    assert flat[1] - flat[0] < 0.9
    # replicates that agree exactly: the interval of one replicate's prompts (the same prompts
    # in every replicate, so agreeing replicates are not counted as more prompts)
    same = np.stack([MIXED, MIXED, MIXED])
    lo2, hi2 = two_level_bootstrap(same, n_boot=20000)
    ref = bootstrap_ci(MIXED, n_boot=20000)
    assert lo2 == pytest.approx(ref[0], abs=0.03) and hi2 == pytest.approx(ref[1], abs=0.03)
    # a prompt missing in one replicate is skipped there, not counted as 0
    holed = same.copy()
    holed[1, 0] = np.nan
    assert np.isfinite(two_level_bootstrap(holed, n_boot=200)).all()


def test_pooled_statistics_by_hand():
    # 2 replicates x 4 targets x 2 seeds; topk and a random control
    top = {
        0: [[1.0, 1.2], [0.5, 0.7], [2.0, 1.8], [-0.2, 0.0]],
        1: [[0.4, 0.6], [0.3, 0.1], [1.0, 1.2], [0.2, 0.2]],
    }
    ctrl = {
        0: [[0.2, 0.4], [0.4, 0.4], [0.5, 0.3], [0.1, 0.1]],
        1: [[0.5, 0.7], [0.5, 0.3], [0.2, 0.0], [0.3, 0.5]],
    }
    rows = []
    for r in (0, 1):
        values = {("topk", t, s): top[r][t][s] for t in range(4) for s in range(2)}
        values.update({("random", t, s): ctrl[r][t][s] for t in range(4) for s in range(2)})
        rows += [{**row, "replicate": r} for row in _rows(values)]
    row = pooled_compare(pd.DataFrame(rows)).iloc[0]
    d = np.array([[np.mean(top[r][t]) - np.mean(ctrl[r][t]) for t in range(4)] for r in (0, 1)])
    # d = [[0.8, 0.2, 1.5, -0.2], [-0.1, -0.2, 1.0, -0.2]]: replicate means 0.575 and 0.125
    assert row.mean_diff == pytest.approx(d.mean()) and row.mean_diff == pytest.approx(0.35)
    assert row.replicate_diffs == "0.575;0.125"
    assert row.replicates == 2 and bool(row.stable) is True
    assert row.wilcoxon_p == pytest.approx(sps.wilcoxon(d.mean(0)).pvalue)
    assert row.topk_mean == pytest.approx(np.mean([np.mean(top[r]) for r in (0, 1)]))
    # one replicate turned negative: not stable
    flipped = pd.DataFrame(rows)
    flipped.loc[(flipped.replicate == 1) & (flipped.arm == "topk"), "value"] -= 1.0
    assert bool(pooled_compare(flipped).iloc[0].stable) is False
    # one replicate: the single sweep's statistics, unchanged
    alone = pd.DataFrame(rows)
    alone = alone[alone.replicate == 0]
    single = compare(alone.drop(columns="replicate")).iloc[0]
    pooled = pooled_compare(alone).iloc[0]
    assert (pooled.mean_diff, pooled.ci_low, pooled.ci_high) == (
        single.mean_diff,
        single.ci_low,
        single.ci_high,
    )


def test_topk_overlap_is_the_mean_pairwise_jaccard_over_prompts():
    def ranking(per_target: dict) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"method": "paper", "target": t, "rank": i + 1, "id": item}
                for t, items in per_target.items()
                for i, item in enumerate(items)
            ]
        )

    a = ranking({0: ["x", "y", "z", "q"], 1: ["u", "v", "w", "q"]})
    b = ranking({0: ["x", "y", "w", "q"], 1: ["u", "v", "w", "q"]})
    c = ranking({0: ["a", "b", "c", "q"], 1: ["u", "v", "w", "q"]})
    # top-3: prompt 0 pairs ab 2/4, ac 0, bc 0; prompt 1 all 1 -> (1/6 + 1) / 2
    row = topk_overlap([a, b, c], 3).iloc[0]
    assert row.topk_jaccard == pytest.approx((1 / 6 + 1) / 2)
    assert row.min_prompt_jaccard == pytest.approx(1 / 6)
    assert np.isnan(topk_overlap([a], 3).iloc[0].topk_jaccard)


def test_replicates_shift_every_seed_and_never_meet(cfg_factory):
    from influence_lab.stages.common import settings_of

    settings = settings_of(cfg_factory("counterfactual", "counterfactual.seeds=[1,2]"))
    assert replicate_changes(settings, 0) == {}
    seen = {settings.seed, *settings.counterfactual.seeds}
    for r in (1, 2):
        changes = replicate_changes(settings, r)
        shifted = settings.replaced(changes)
        assert shifted.seed == settings.seed + r * SEED_STRIDE
        assert shifted.generate.seed == settings.generate.seed + r * SEED_STRIDE
        assert shifted.embedders["autoencoder"].seed == settings.embedders["autoencoder"].seed + r
        assert shifted.embedders["classifier"].seed == settings.embedders["classifier"].seed + r
        assert (
            shifted.given("embedders", "autoencoder")["seed"]
            == shifted.embedders["autoencoder"].seed
        )
        assert shifted.attribution.gradient.proj_seed == r
        now = {shifted.seed, *shifted.counterfactual.seeds}
        assert not now & seen and shifted.seed not in shifted.counterfactual.seeds
        seen |= now


def test_a_pooled_finding_beats_a_control_only_where_it_is_stable():
    from influence_lab.report.sections import counterfactual_finding

    def row(control, lo, stable):
        return {
            "method": "fused",
            "k": 10,
            "metric": "delta_loss",
            "control": control,
            "topk_mean": 0.2,
            "mean_diff": 0.1,
            "ci_low": lo,
            "ci_high": 0.3,
            "replicates": 3,
            "stable": stable,
        }

    stats = pd.DataFrame([row("random_pool", 0.05, True), row("random", 0.01, False)])
    text = counterfactual_finding(stats)
    assert text.startswith("Pooled over 3 replicates")
    assert "more than random_pool but not clearly more than random" in text
    single = stats.assign(replicates=1)
    assert "more than every control" in counterfactual_finding(single)
