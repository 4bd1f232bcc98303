"""The analysis of expert judgements recovers what simulated experts of a known accuracy imply:
Krippendorff's alpha and each method's precision against the experts' majority fall within the
bootstrap intervals, and the intervals miss a wrong value (a test that can fail)."""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest

from influence_lab.reviewing.agreement import agreement, majority, method_scores, per_task_scores

TASKS, POOL, K, REVIEWERS = 120, 10, 5, 3


def simulated(accuracy: float, precisions: dict[str, float], seed: int = 0):
    """Tasks of POOL candidates, each truly influential or not; each method's top-K holds
    round(precision * K) influential ones; every reviewer grades each candidate right with
    probability `accuracy` (right: 2 for an influential one, 0 otherwise; wrong: the other)."""
    rng = np.random.default_rng(seed)
    judged, ranks, truth_rate = [], [], []
    cid = 0
    for task in range(1, TASKS + 1):
        truth = np.zeros(POOL, dtype=bool)
        truth[: POOL // 2] = True  # half of every pool influential
        ids = np.arange(cid, cid + POOL)
        cid += POOL
        for method, precision in precisions.items():
            hits = int(round(precision * K))
            chosen = np.concatenate(
                [rng.choice(ids[truth], hits, replace=False),
                 rng.choice(ids[~truth], K - hits, replace=False)]
            )  # fmt: skip
            rng.shuffle(chosen)
            ranks += [
                {"task": task, "candidate": int(c), "method": method, "rank": r}
                for r, c in enumerate(chosen, start=1)
            ]
        for reviewer in range(REVIEWERS):
            right = rng.random(POOL) < accuracy
            said = np.where(right, truth, ~truth)
            judged += [
                {"reviewer": f"r{reviewer}", "task": task, "candidate": int(c),
                 "grade": 2 if s else 0}
                for c, s in zip(ids, said, strict=True)
            ]  # fmt: skip
        truth_rate.append(truth.mean())
    return pd.DataFrame(judged), pd.DataFrame(ranks), float(np.mean(truth_rate))


def expected_alpha(accuracy: float, prevalence: float) -> float:
    """Two raters of accuracy a disagree with probability 2a(1-a); by chance (marginal p of
    'influential') 2p(1-p): alpha = 1 - observed / expected disagreement."""
    p = prevalence * accuracy + (1 - prevalence) * (1 - accuracy)
    return 1 - (2 * accuracy * (1 - accuracy)) / (2 * p * (1 - p))


def majority_right(accuracy: float, reviewers: int = REVIEWERS) -> float:
    return sum(
        comb(reviewers, j) * accuracy**j * (1 - accuracy) ** (reviewers - j)
        for j in range(reviewers // 2 + 1, reviewers + 1)
    )


@pytest.mark.parametrize("accuracy", [0.9, 0.75])
def test_alpha_of_simulated_experts_is_recovered(accuracy):
    judged, _, prevalence = simulated(accuracy, {"a": 0.8})
    agreed = agreement(judged, count=300, seed=0)
    truth = expected_alpha(accuracy, prevalence)
    assert agreed.low <= truth <= agreed.high, (agreed, truth)
    assert agreed.high - agreed.low < 0.15  # informative: 120 tasks
    assert agreed.reviewers == REVIEWERS and agreed.tasks == TASKS
    wrong = expected_alpha(accuracy - 0.1, prevalence)
    assert not agreed.low <= wrong <= agreed.high  # the interval rules out another accuracy


def test_each_methods_precision_against_the_majority_is_recovered():
    accuracy, precisions = 0.85, {"good": 0.8, "half": 0.4, "bad": 0.0}
    judged, ranks, _ = simulated(accuracy, precisions, seed=1)
    scores = method_scores(ranks, judged, K, min_reviewers=2, count=400, seed=0).set_index("method")
    q = majority_right(accuracy)
    for method, precision in precisions.items():
        expected = precision * q + (1 - precision) * (1 - q)
        row = scores.loc[method]
        assert row.precision_low <= expected <= row.precision_high, (method, row, expected)
        assert row.tasks == TASKS
    assert scores.loc["good", "precision_low"] > scores.loc["half", "precision_high"]
    assert scores.loc["good", "ndcg"] > scores.loc["half", "ndcg"] > scores.loc["bad", "ndcg"]


def test_majority_and_ndcg_on_a_hand_made_case():
    judged = pd.DataFrame(
        {
            "reviewer": ["a", "b", "c"] * 3 + ["a"],
            "task": [1] * 10,
            "candidate": [1, 1, 1, 2, 2, 2, 3, 3, 3, 4],
            "grade": [2, 2, 1, 0, 1, 0, 2, 0, 0, 2],
        }
    )
    votes = majority(judged, min_reviewers=2)
    assert list(votes.index) == [1, 2, 3]  # candidate 4 has one reviewer: left out
    assert votes["influential"].tolist() == [True, False, False]
    assert votes["gain"].round(3).tolist() == [1.667, 0.333, 0.667]
    ranks = pd.DataFrame(
        {"task": 1, "candidate": [1, 3, 3, 1], "method": ["best", "best", "worst", "worst"],
         "rank": [1, 2, 1, 2]}
    )  # fmt: skip
    scores = per_task_scores(ranks, votes, k=2).set_index("method")
    assert scores.loc["best", "ndcg"] == pytest.approx(1.0)
    assert scores.loc["best", "precision"] == scores.loc["worst", "precision"] == 0.5
    disc = 1 / np.log2([2, 3])
    assert scores.loc["worst", "ndcg"] == pytest.approx(
        (0.667 * disc[0] + 1.667 * disc[1]) / (1.667 * disc[0] + 0.667 * disc[1]), abs=1e-3
    )


def test_a_tie_has_no_majority_and_counts_in_no_precision():
    judged = pd.DataFrame(
        {
            "reviewer": ["a", "b"] * 3,
            "task": [1] * 6,
            "candidate": [1, 1, 2, 2, 3, 3],
            "grade": [2, 0, 2, 1, 0, 0],  # 1: a tie; 2: influential; 3: not
        }
    )
    votes = majority(judged, min_reviewers=2)
    assert np.isnan(votes.loc[1, "influential"]) and votes.loc[2, "influential"] == 1.0
    ranks = pd.DataFrame({"task": 1, "candidate": [1, 2, 1, 3], "method": ["x", "x", "y", "y"],
                          "rank": [1, 2, 1, 2]})  # fmt: skip
    scores = per_task_scores(ranks, votes, k=2).set_index("method")
    assert scores.loc["x", "precision"] == 1.0 and scores.loc["y", "precision"] == 0.0


def test_tasks_nobody_graded_change_no_number():
    """A study half done: the tasks not yet graded are in no mean and no resample, so the
    intervals are those of the graded half (they would otherwise shift with the ungraded count)."""
    judged, ranks, _ = simulated(0.85, {"a": 0.6, "b": 0.2}, seed=2)
    judged = judged[judged.task <= 20]
    graded_only = method_scores(ranks[ranks.task <= 20], judged, K, 2, 300, 0)
    with_ungraded = method_scores(ranks, judged, K, 2, 300, 0)
    pd.testing.assert_frame_equal(graded_only, with_ungraded)
    assert (with_ungraded.tasks == 20).all()
    young = judged[judged.reviewer == "r0"]  # one reviewer so far: nothing has a majority
    empty = method_scores(ranks, young, K, 2, 300, 0)
    assert empty.empty and "precision_low" in empty  # no row: no method has a defined score
    assert np.isnan(agreement(young, count=50, seed=0).alpha)


def test_alpha_is_ordinal_a_near_miss_counts_less_than_a_far_one():
    """Grades one step apart (clearly vs partly) disagree less than two apart: the ordinal alpha of
    reviewers who miss by one step exceeds the nominal alpha of the same grades, and falls when
    the same number of misses are two steps."""
    import krippendorff

    rng = np.random.default_rng(0)
    truth = rng.choice([0, 1, 2], size=400)

    def grades(step: int) -> pd.DataFrame:
        rows = []
        for r in range(3):
            miss = rng.random(400) < 0.3
            said = np.where(miss, np.clip(truth + np.where(truth == 2, -step, step), 0, 2), truth)
            rows += [{"reviewer": r, "task": c // 10, "candidate": c, "grade": int(g)}
                     for c, g in enumerate(said)]  # fmt: skip
        return pd.DataFrame(rows)

    near, far = grades(1), grades(2)
    ordinal_near = agreement(near, count=50, seed=0).alpha
    matrix = near.pivot(index="reviewer", columns="candidate", values="grade").to_numpy(float)
    nominal_near = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    assert ordinal_near > nominal_near + 0.05
    assert agreement(far, count=50, seed=0).alpha < ordinal_near - 0.1
