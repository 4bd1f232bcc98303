"""The statistical core on data whose answer is known another way: the unit test against scipy and
statsmodels on mixed-sign data, units (not targets, not seeds) as what is resampled, the pooling of
replicates against hand computations, and simulated sweeps with a known retrain-level noise: no
effect gives about 5% false positives, a known effect the power the design promises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from influence_lab.evaluation.removal_plans import CONTROLS
from influence_lab.evaluation.replicates import SEED_STRIDE, replicate_changes, topk_overlap
from influence_lab.evaluation.statistics import (
    MIN_UNITS,
    bootstrap_ci,
    compare,
    detectable_effect,
    prompt_effects,
    unit_effects,
    unit_test,
)

MIXED = np.array([0.9, -0.4, 1.3, 0.2, -0.8, 0.6, 1.1, -0.1, 0.5, 0.7, -0.3, 1.6, 0.05, 0.4])


def test_bootstrap_interval_matches_scipy_percentile_bootstrap_on_mixed_signs():
    lo, hi = bootstrap_ci(MIXED, n_boot=20000, seed=1)
    ref = sps.bootstrap(
        (MIXED,), np.mean, n_resamples=20000, method="percentile", random_state=2
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.03) and hi == pytest.approx(ref.high, abs=0.03)
    se = MIXED.std() / np.sqrt(len(MIXED))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_unit_test_is_the_student_t_of_scipy_and_the_power_of_statsmodels():
    out = unit_test(MIXED)
    n, sd = len(MIXED), MIXED.std(ddof=1)
    half = sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n)  # by hand: mean -/+ t(0.975, n-1) * se
    assert out["mean_diff"] == pytest.approx(MIXED.mean())
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(
        (MIXED.mean() - half, MIXED.mean() + half)
    )
    t = MIXED.mean() / (sd / np.sqrt(n))
    assert out["p"] == pytest.approx(2 * sps.t.sf(abs(t), n - 1))
    assert out["verdict"] == ("above" if out["p"] < 0.05 else "no clear difference")
    # the smallest detectable effect has 80% power: the noncentral t's mass beyond the critical
    # value, computed with scipy, not with the statsmodels solver the code uses
    mde = out["mde"]
    crit = sps.t.ppf(0.975, n - 1)
    nc = mde / sd * np.sqrt(n)
    power = sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)
    assert power == pytest.approx(0.8, abs=1e-3)
    assert detectable_effect(n, sd) == pytest.approx(mde)


def test_too_few_units_are_undecided_whatever_the_p_value():
    # five units that agree closely: the t test's p is tiny, but below 6 units no test free of a
    # normality assumption can reach p < 0.05, so the verdict is undecided
    five = np.array([1.0, 1.01, 0.99, 1.02, 0.98])
    out = unit_test(five)
    assert out["p"] < 1e-6 and out["verdict"] == "undecided" and MIN_UNITS == 6
    assert unit_test(np.append(five, 1.0))["verdict"] == "above"
    assert unit_test(-np.append(five, 1.0))["verdict"] == "below"
    one = unit_test(np.array([0.5]))
    assert one["verdict"] == "undecided" and np.isnan(one["p"]) and np.isnan(one["mde"])


def _rows(values: dict, method="fused", units=None) -> list[dict]:
    """Result rows {(arm, target, seed): value} of one metric, one member per (arm, target, seed)
    (per_target), or per (arm, unit, seed) with `units` {target: unit}."""
    rows = []
    for (arm, t, seed), v in values.items():
        unit = units[t] if units else f"t{t:03d}"
        name = method if arm == "topk" else "control"
        rows.append(
            {
                "member_id": f"{unit}-{name}-{arm}-k5-s{seed}",
                "method": name,
                "arm": arm,
                "k": 5,
                "metric": "delta_loss",
                "target": t,
                "seed": seed,
                "unit": unit,
                "own": True,
                "value": v,
            }
        )
    return rows


def test_compare_averages_seeds_inside_units_then_tests_the_units():
    rng = np.random.default_rng(3)
    top = rng.normal(0.2, 1.0, size=(12, 1)) + 0.1 * rng.normal(size=(12, 3))
    ctrl = 0.1 * rng.normal(size=(12, 3))
    values = {("topk", t, s): top[t, s] for t in range(12) for s in range(3)}
    values.update({("random", t, s): ctrl[t, s] for t in range(12) for s in range(3)})
    row = compare(pd.DataFrame(_rows(values))).iloc[0]
    per_target = top.mean(1) - ctrl.mean(1)  # seeds averaged first: 12 paired differences
    ref = sps.ttest_1samp(per_target, 0.0)
    assert row.n_targets == 12 and row.n_units == 12 and row.units == "12 targets x 1 replicate"
    assert row.mean_diff == pytest.approx(per_target.mean())
    assert row.p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval()
    assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high))
    # the 36 (target, seed) values taken as independent would give a narrower interval
    every = sps.ttest_1samp((top - ctrl).ravel(), 0.0).confidence_interval()
    assert row.ci_high - row.ci_low > (every.high - every.low) * 1.4


def test_targets_that_share_a_retrained_model_are_one_unit():
    # 12 targets in 2 groups: each group's targets share one retrained model per arm and seed, so
    # the test has 2 units, not 12, and cannot decide, however tightly the targets agree
    units = {t: f"g{t // 6:02d}" for t in range(12)}
    values = {("topk", t, s): 1.0 + 0.01 * t for t in range(12) for s in (1, 2)}
    values.update({("random", t, s): 0.0 for t in range(12) for s in (1, 2)})
    row = compare(pd.DataFrame(_rows(values, units=units))).iloc[0]
    assert row.n_units == 2 and row.units == "2 groups x 1 replicate"
    assert row.verdict == "undecided" and row.n_targets == 12
    g0, g1 = (
        np.mean([1.0 + 0.01 * t for t in range(6)]),
        np.mean([1.0 + 0.01 * t for t in range(6, 12)]),
    )
    assert row.mean_diff == pytest.approx((g0 + g1) / 2)


def test_the_within_retrain_baseline_cancels_the_shift_a_retrain_gives_every_target():
    # each member also measured the other targets (own False): the did estimate is the own change
    # minus the others' mean change in the same model, so a shift common to every target cancels
    rows = []
    for arm, name, effect in (("topk", "fused", 0.3), ("random", "control", 0.0)):
        for t in range(3):
            shift = {"topk": 5.0, "random": -2.0}[arm] + t  # each member its own common shift
            for other in range(3):
                rows.append(
                    {
                        "member_id": f"t{t:03d}-{name}-{arm}-k5-s1",
                        "method": name,
                        "arm": arm,
                        "k": 5,
                        "metric": "delta_loss",
                        "target": other,
                        "seed": 1,
                        "unit": f"t{t:03d}",
                        "own": other == t,
                        "value": shift + (effect if other == t else 0.0),
                    }
                )
    units = unit_effects(pd.DataFrame(rows)).set_index(["unit", "arm"])
    assert units.loc[("t001", "topk"), "plain"] == pytest.approx(6.3)
    assert units.loc[("t001", "topk"), "did"] == pytest.approx(0.3)
    assert units.loc[("t002", "random"), "did"] == pytest.approx(0.0)
    row = compare(pd.DataFrame(rows)).iloc[0]
    # the verdict's estimate is the change beyond the other prompts; the total change beside it
    assert row.estimate == "beyond other prompts" and row.mean_diff == pytest.approx(0.3)
    assert row.total_mean_diff == pytest.approx(7.3)


def _null_sweep(rng, grouping: str, effect: float = 0.0, targets: int = 10, seeds: int = 2):
    """One simulated sweep: a method's top-k and a random control, each member a retrained model
    with a shift common to all its targets (sd 0.3) and a target-level noise (sd 0.1); the method
    adds `effect` to its own targets."""
    rows = []
    if grouping == "per_target":
        layout = [(f"t{t:03d}", [t]) for t in range(targets)]
    else:
        layout = [("all", list(range(targets)))]
    for arm, name in (("topk", "fused"), ("random", "control")):
        for s in range(seeds):
            for unit, own in layout:
                shift = rng.normal(0, 0.3)
                for t in range(targets):
                    mine = t in own
                    rows.append(
                        {
                            "member_id": f"{unit}-{name}-{arm}-k10-s{s}",
                            "method": name,
                            "arm": arm,
                            "k": 10,
                            "metric": "delta_loss",
                            "target": t,
                            "seed": s,
                            "unit": unit,
                            "own": mine,
                            "value": shift
                            + rng.normal(0, 0.1)
                            + (effect if mine and arm == "topk" else 0),
                        }
                    )
    return pd.DataFrame(rows)


def test_simulated_null_sweeps_give_about_five_percent_false_positives():
    rng = np.random.default_rng(11)
    runs = [compare(_null_sweep(rng, "per_target")).iloc[0] for _ in range(300)]
    excluded = np.mean([(r.ci_low > 0) or (r.ci_high < 0) for r in runs])
    # 300 null runs: a calibrated 5% lands in [2%, 8.5%] with probability > 0.99
    assert 0.02 <= excluded <= 0.085
    assert sps.kstest([r.p for r in runs], "uniform").pvalue > 0.01
    # the test of the own targets' total change (the retrain's shift in it) is calibrated too
    total = np.mean([r.total_p < 0.05 for r in runs])
    assert 0.02 <= total <= 0.085
    # the old analysis of a grouped sweep (targets as independent units, the shared shift in no
    # interval) on the same kind of data: most null runs "find" an effect; ours says undecided
    old, grouped = [], []
    for _ in range(40):
        table = _null_sweep(rng, "grouped")
        own = table[table.own]
        d = (
            own[own.arm == "topk"].groupby("target").value.mean()
            - own[own.arm == "random"].groupby("target").value.mean()
        )
        old.append(sps.ttest_1samp(d, 0.0).pvalue < 0.05)
        grouped.append(compare(table).iloc[0].verdict)
    assert np.mean(old) > 0.5
    assert set(grouped) == {"undecided"}


def test_simulated_sweeps_with_a_known_effect_have_the_power_the_design_promises():
    rng = np.random.default_rng(5)
    # the unit sd of this design: the shift common to a member's targets cancels, a member's own
    # target minus the mean of the 9 others has variance 0.1^2 (1 + 1/9), two seeds averaged, two
    # arms; a true effect equal to its detectable effect is found in about 80% of runs
    sd = np.sqrt(2 * 0.1**2 * (1 + 1 / 9) / 2)
    effect = detectable_effect(10, sd)
    runs = [compare(_null_sweep(rng, "per_target", effect)).iloc[0] for _ in range(200)]
    power = np.mean([r.verdict == "above" for r in runs])
    assert 0.7 <= power <= 0.9
    assert np.median([r.mde for r in runs]) == pytest.approx(effect, rel=0.15)


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
    row = compare(pd.DataFrame(rows)).iloc[0]
    d = np.array([[np.mean(top[r][t]) - np.mean(ctrl[r][t]) for t in range(4)] for r in (0, 1)])
    # d = [[0.8, 0.2, 1.5, -0.2], [-0.1, -0.2, 1.0, -0.2]]: replicate means 0.575 and 0.125; the
    # 8 (replicate, target) units are independent (each its own retrained models)
    assert row.mean_diff == pytest.approx(d.mean()) and row.mean_diff == pytest.approx(0.35)
    assert row.p == pytest.approx(sps.ttest_1samp(d.ravel(), 0.0).pvalue)
    assert row.n_units == 8 and row.units == "4 targets x 2 replicates"
    assert row.replicate_diffs == "0.575;0.125"
    assert row.replicates == 2 and bool(row.stable) is True
    assert row.topk_mean == pytest.approx(np.mean([np.mean(top[r]) for r in (0, 1)]))
    flipped = pd.DataFrame(rows)
    flipped.loc[(flipped.replicate == 1) & (flipped.arm == "topk"), "value"] -= 1.0
    assert bool(compare(flipped).iloc[0].stable) is False
    # one replicate: no stability to speak of
    alone = compare(pd.DataFrame(rows).query("replicate == 0")).iloc[0]
    assert alone.replicates == 1 and np.isnan(alone.stable) and alone.n_units == 4


def test_a_null_arm_is_compared_only_with_the_control_it_mimics():
    values = {("topk", t, 1): float(t % 3) for t in range(6)}
    values.update({(arm, t, 1): 0.1 * t for arm in ("random", "random_pool") for t in range(6)})
    table = compare(pd.DataFrame(_rows(values, method="null_random")))
    assert list(table.control) == ["random"]


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
    from influence_lab.entry.stage_entry import settings_of

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


def test_the_finding_reads_the_verdicts_and_says_when_an_effect_goes_the_other_way():
    from influence_lab.reporting.sections import counterfactual_finding

    def row(control, verdict, stable=True, replicates=3, units=12):
        return {
            "method": "fused",
            "k": 10,
            "metric": "delta_loss",
            "control": control,
            "topk_mean": 0.2,
            "mean_diff": 0.1,
            "ci_low": 0.05,
            "ci_high": 0.3,
            "verdict": verdict,
            "n_units": units,
            "units": f"{units} targets x 3 replicates",
            "replicates": replicates,
            "stable": stable,
        }

    stats = pd.DataFrame([row("random_pool", "above"), row("random", "above", stable=False)])
    text = counterfactual_finding(stats)
    assert text.startswith("Pooled over 3 replicates")
    assert "more than random_pool; not clearly differently from random" in text
    single = stats.assign(replicates=1)
    assert "more than every control (random_pool and random)" in counterfactual_finding(single)
    below = pd.DataFrame([row("none", "below", replicates=1)])
    assert "less than none (the effect goes the other way)" in counterfactual_finding(below)
    few = pd.DataFrame([row("random", "undecided", replicates=1, units=2)])
    assert "the design cannot decide (2 independent units" in counterfactual_finding(few)


def _canary_sweep(replicates: int, rng) -> pd.DataFrame:
    """A per-target sweep whose first prompt alone moves when its top-k goes (by 5 nats), the
    others not; 2 seeds, every control; retrain noise 0.1 per member."""
    rows = []
    for r in range(replicates):
        for seed in (1, 2):
            for t in range(3):
                for method, arm in [("fused", "topk"), *[("control", c) for c in CONTROLS]]:
                    effect = 5.0 if (t == 0 and arm == "topk") else 0.0
                    rows.append(
                        dict(
                            method=method, arm=arm, k=10, seed=seed, target=t, prompt=f"p{t}",
                            unit=f"t{t:03d}", replicate=r, own=True, metric="delta_loss",
                            value=effect + rng.normal(0, 0.1),
                        )
                    )  # fmt: skip
    return pd.DataFrame(rows)


def test_each_prompt_effect_is_paired_by_seed_and_tested_over_replicates():
    rng = np.random.default_rng(4)
    results = _canary_sweep(3, rng)
    table = prompt_effects(results)
    assert len(table) == 3 * 3  # prompts x controls
    canary = table[(table.prompt == "p0") & (table.control == "random")].iloc[0]
    assert canary.n_retrains == 6 and canary.n_units == 3
    assert canary.verdict == "undecided"  # 3 replicates: too few units, however clear
    # by hand: the six paired differences, and the t test over the replicates' means
    top = results[(results.target == 0) & (results.arm == "topk")].set_index(["replicate", "seed"])
    ctrl = results[(results.target == 0) & (results.arm == "random")]
    diff = top.value - ctrl.set_index(["replicate", "seed"]).value
    assert canary.mean_diff == pytest.approx(diff.mean(), rel=1e-12)
    assert canary.min_diff == pytest.approx(diff.min(), rel=1e-12)
    reps = diff.groupby(level="replicate").mean()
    assert canary.p == pytest.approx(sps.ttest_1samp(reps, 0.0).pvalue, rel=1e-9)
    assert 4.5 < canary.min_diff and canary.control_sd < 0.3
    others = table[table.prompt != "p0"]
    assert (others.mean_diff.abs() < 0.3).all()
    six = prompt_effects(_canary_sweep(6, rng))
    verdicts = six.groupby("prompt").verdict.agg(set)
    assert verdicts["p0"] == {"above"}
    assert (six[six.prompt != "p0"].p > 0.001).all()  # the unmoved prompts: no strong effect
