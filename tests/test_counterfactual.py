import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from influence_lab.data import load_data
from influence_lab.errors import InfluenceLabError
from influence_lab.evaluation.removal_plans import jobs_of, make_plan
from influence_lab.evaluation.statistics import (
    arm_table,
    compare,
    effect_ratio,
    experiment_table,
)
from tests.conftest import typed


def _ranking(n_targets=3, n_items=50, methods=("fused", "paper")):
    rows = []
    rng = np.random.default_rng(0)
    for t in range(n_targets):
        for m in methods:
            order = rng.permutation(n_items)[:20]
            rows += [
                {"target": t, "method": m, "rank": r + 1, "id": f"x{i:03d}", "prompt": f"p{t}"}
                for r, i in enumerate(order)
            ]
    return pd.DataFrame(rows)


IDS = [f"x{i:03d}" for i in range(50)]
POOLS = {t: IDS[t * 10 : t * 10 + 15] for t in range(3)}


@pytest.mark.parametrize("grouping", ["per_target", "grouped"])
def test_plans_respect_k_controls_and_seeds(grouping):
    ranking = _ranking()
    arms = ["topk", "bottomk", "random_pool", "random", "none"]
    plan = make_plan(ranking, POOLS, IDS, ["fused", "paper"], arms, [2, 4], [1, 2], grouping)
    again = make_plan(ranking, POOLS, IDS, ["fused", "paper"], arms, [2, 4], [1, 2], grouping)
    assert [m.to_dict() for m in plan] == [m.to_dict() for m in again]  # same seed, same plan
    assert len({m.member_id for m in plan}) == len(plan)
    per_target_count = 3 if grouping == "per_target" else 1
    # (2 methods x (topk, bottomk) + 3 controls) x 2 k x 2 seeds
    assert len(plan) == (2 * 2 + 3) * 2 * 2 * per_target_count
    for m in plan:
        assert len(set(m.removed)) == len(m.removed)
        per_prompt = len(m.removed) / len(m.targets)
        if m.arm == "none":
            assert m.removed == []
        elif grouping == "per_target":
            assert len(m.removed) == m.k
        else:
            assert per_prompt <= m.k
        for t in m.targets:
            ranked = (
                ranking[(ranking.target == t) & (ranking.method == m.method)]
                .sort_values("rank")["id"]
                .tolist()
            )
            if m.arm == "topk" and grouping == "per_target":
                assert m.removed == ranked[: m.k]
            if m.arm == "bottomk" and grouping == "per_target":
                assert m.removed == ranked[-m.k :]
        if m.arm == "random_pool":
            assert set(m.removed) <= set().union(*(POOLS[t] for t in m.targets))
    randoms = {
        m.seed: m.removed for m in plan if m.arm == "random" and m.k == 4 and m.targets[0] == 0
    }
    assert randoms[1] != randoms[2]  # seeds draw different controls
    # units never share a retrained model: per_target, each target's members train with a seed of
    # their own (the same for every arm of the target: common random numbers); one group keeps
    # the configured seed
    by_unit = {}
    for m in plan:
        by_unit.setdefault((m.unit, m.seed), set()).add(m.train_seed)
    assert all(len(seeds) == 1 for seeds in by_unit.values())
    train_seeds = {(u, s): seeds.pop() for (u, s), seeds in by_unit.items()}
    if grouping == "per_target":
        assert len(set(train_seeds.values())) == len(train_seeds) == 3 * 2
    else:
        assert train_seeds == {("all", 1): 1, ("all", 2): 2}
    assert len(jobs_of(plan, 5)) == -(-len(plan) // 5)
    assert sum(len(j) for j in jobs_of(plan, 5)) == len(plan)


def test_plan_bad_inputs():
    ranking = _ranking()
    with pytest.raises(InfluenceLabError, match="counterfactual.arms has \\['top'\\]"):
        make_plan(ranking, POOLS, IDS, ["fused"], ["top"], [2], [1], "grouped")
    with pytest.raises(
        InfluenceLabError, match="ranked only 20 items for target 0, fewer than k=30"
    ):
        make_plan(ranking, POOLS, IDS, ["fused"], ["topk"], [30], [1], "grouped")
    with pytest.raises(InfluenceLabError, match="counterfactual.grouping is 'all'"):
        make_plan(ranking, POOLS, IDS, ["fused"], ["topk"], [2], [1], "all")
    with pytest.raises(InfluenceLabError, match="needs topk"):
        make_plan(ranking, POOLS, IDS, ["fused"], ["random"], [2], [1], "grouped")


def test_removed_ids_never_reach_the_retrained_data(cfg_factory):
    bundle = load_data(typed(cfg_factory("train").data))
    ids = list(bundle.train["id"])
    ranking = pd.DataFrame(
        [
            {"target": 0, "method": "fused", "rank": r + 1, "id": ids[r * 7], "prompt": "p"}
            for r in range(30)
        ]
    )
    plan = make_plan(
        ranking,
        {0: ids[:40]},
        ids,
        ["fused"],
        ["topk", "random_pool", "random"],
        [5],
        [1],
        "grouped",
    )
    for m in plan:
        retrained = load_data(
            typed(cfg_factory("train", f"data.exclude_ids=[{','.join(m.removed)}]").data)
        )
        assert not set(m.removed) & set(retrained.train["id"])
        assert len(retrained.train) == len(bundle.train) - len(m.removed)


def test_statistics_on_a_known_table():
    rows = []
    wobble = [0.02, -0.02, 0.05, -0.05, 0.0, 0.01, -0.01, 0.0]  # the control's per-target noise
    for t in range(8):
        for seed in (1, 2):
            for arm, method, value in (
                ("topk", "fused", 3.0 + 0.1 * t + (0.05 if seed == 1 else -0.05)),
                ("random", "control", 1.0 + 0.1 * t + wobble[t]),
                ("none", "control", 3.0 + 0.1 * t),
            ):
                rows.append(
                    {
                        "member_id": f"t{t:03d}-{method}-{arm}-k5-s{seed}",
                        "method": method,
                        "arm": arm,
                        "k": 5,
                        "metric": "delta_loss",
                        "target": t,
                        "seed": seed,
                        "value": value,
                    }
                )
    stats = compare(pd.DataFrame(rows)).set_index("control")
    diffs = 2.0 - np.array(wobble)  # per target (unit), seeds averaged
    assert stats.loc["random", "mean_diff"] == pytest.approx(diffs.mean())
    half = sps.t.ppf(0.975, 7) * diffs.std(ddof=1) / np.sqrt(8)
    assert stats.loc["random", "ci_low"] == pytest.approx(diffs.mean() - half)
    assert stats.loc["random", "ci_high"] == pytest.approx(diffs.mean() + half)
    assert stats.loc["random", "p"] == pytest.approx(sps.ttest_1samp(diffs, 0).pvalue)
    assert stats.loc["random", "verdict"] == "above" and stats.loc["random", "n_units"] == 8
    assert stats.loc["random", "ratio"] == pytest.approx(3.35 / (1.35 + np.mean(wobble)))
    # a ratio only of changes of one sign: opposite signs or a zero control give none
    assert effect_ratio(-0.4, -0.2) == pytest.approx(2.0)
    assert np.isnan(effect_ratio(0.3, -0.1)) and np.isnan(effect_ratio(0.3, 0.0))
    assert np.isnan(effect_ratio(0.0, 0.2))
    # the same change under `none` in every unit: no difference, no p-value to give
    assert stats.loc["none", "mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert (
        np.isnan(stats.loc["none", "p"]) and stats.loc["none", "verdict"] == "no clear difference"
    )
    arms = arm_table(pd.DataFrame(rows)).set_index("arm")
    assert arms.loc["topk", "mean"] == pytest.approx(3.35) and arms.loc[
        "topk", "min"
    ] == pytest.approx(3.0)
    assert arms.loc["topk", "max"] == pytest.approx(3.7) and arms.loc["topk", "n_targets"] == 8


def test_grouped_plans_split_prompts_into_experiments():
    ranking = _ranking(n_targets=5)
    pools = {t: IDS[t * 5 : t * 5 + 15] for t in range(5)}
    plan = make_plan(
        ranking,
        pools,
        IDS,
        ["fused"],
        ["topk", "random", "none"],
        [3],
        [1],
        "grouped",
        group_size=2,
    )
    topk = [m for m in plan if m.arm == "topk"]
    assert [m.targets for m in topk] == [[0, 1], [2, 3], [4]] and [m.group for m in topk] == [
        0,
        1,
        2,
    ]
    for m in topk:  # each experiment removes the top 3 of each of its prompts, nothing else
        expected = set(
            ranking[
                (ranking.method == "fused")
                & ranking.target.isin(m.targets)
                & (ranking["rank"] <= 3)
            ].id
        )
        assert set(m.removed) == expected
    assert len({m.member_id for m in plan}) == len(plan) == 3 * 3
    with pytest.raises(InfluenceLabError, match="counterfactual.group_size is 0"):
        make_plan(ranking, pools, IDS, ["fused"], ["topk"], [3], [1], "grouped", group_size=0)


def test_experiment_table_is_the_papers_before_after_format():
    rows = []
    for group, targets in ((0, [0, 1]), (1, [2, 3])):
        for t in targets:
            for seed in (1, 2):
                for metric, value in (
                    ("ref_before_autoencoder", 0.5 + 0.1 * t),
                    ("ref_after_autoencoder", 0.4 + 0.1 * t + (0.01 if seed == 1 else -0.01)),
                    ("ref_drop_autoencoder", 0.1),
                ):
                    rows.append(
                        {
                            "method": "fused",
                            "arm": "topk",
                            "k": 10,
                            "group": group,
                            "metric": metric,
                            "target": t,
                            "seed": seed,
                            "value": value,
                        }
                    )
                    rows.append(
                        {
                            "method": "control",
                            "arm": "none",
                            "k": 10,
                            "group": group,
                            "metric": metric,
                            "target": t,
                            "seed": seed,
                            "value": value * 0.9,
                        }
                    )
    every = experiment_table(pd.DataFrame(rows))
    assert set(every.arm) == {"topk", "none"}
    table = every[every.arm == "topk"].set_index("experiment")
    assert table.loc[0, "before_mean"] == pytest.approx(0.55) and table.loc[
        1, "after_mean"
    ] == pytest.approx(0.65)
    assert table.loc[1, "before_min"] == pytest.approx(0.7) and table.loc[
        1, "before_max"
    ] == pytest.approx(0.8)
    assert table.loc[0, "after_std"] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    assert (table["prompts"] == 2).all() and set(table["space"]) == {"autoencoder"}
    assert set(compare(pd.DataFrame(rows)).metric) == {
        "ref_drop_autoencoder"
    }  # levels are not compared


def test_null_arms_are_drawn_like_their_controls_once_per_target():
    ranking = _ranking()
    arms = ["topk", "random_pool", "random", "none"]
    plan = make_plan(
        ranking, POOLS, IDS, ["fused"], arms, [4], [1, 2], "per_target", nulls=True, null_seed=7
    )
    nulls = [m for m in plan if m.method.startswith("null_")]
    assert {m.method for m in nulls} == {"null_random", "null_random_pool", "null_none"}
    assert all(m.arm == "topk" for m in nulls)
    for t in range(3):
        picks = {(m.method, m.seed): m.removed for m in nulls if m.targets == [t]}
        # drawn once per target, shared by the retrain seeds (as a method's top-k is)
        assert picks[("null_random", 1)] == picks[("null_random", 2)]
        assert len(picks[("null_random", 1)]) == 4
        assert set(picks[("null_random_pool", 1)]) <= set(POOLS[t])
        assert picks[("null_none", 1)] == []
        # the controls redraw per seed
        ctrl = {m.seed: m.removed for m in plan if m.arm == "random" and m.targets == [t]}
        assert ctrl[1] != ctrl[2]
        # null_none retrains with another seed than none; null_random with the unit's seed
        seeds = {(m.method, m.arm): m.train_seed for m in plan if m.targets == [t] and m.seed == 1}
        assert seeds[("null_none", "topk")] != seeds[("control", "none")]
        assert seeds[("null_random", "topk")] == seeds[("control", "random")]
    again = make_plan(
        ranking, POOLS, IDS, ["fused"], arms, [4], [1, 2], "per_target", nulls=True, null_seed=8
    )
    other = {m.member_id: m.removed for m in again if m.method == "null_random"}
    assert any(other[m.member_id] != m.removed for m in nulls if m.method == "null_random")
