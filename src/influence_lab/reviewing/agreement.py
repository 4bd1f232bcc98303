"""The analysis of the experts' judgements.

- Agreement: Krippendorff's alpha (ordinal: the grades 0 < 1 < 2), from the `krippendorff`
  package, over reviewers x candidates, with a percentile bootstrap interval that resamples tasks
  (a task's candidates are judged together, so tasks, not candidates, are the independent units).
- The experts' majority: a candidate graded by at least `min_reviewers` is *influential* when more
  than half of its reviewers graded it "partly" or "clearly", *not* when more than half did not,
  and has no majority on a tie (left out of precision); its *gain* (for nDCG) is its mean grade.
- Per method: precision@k (the share of its top-k, among candidates with a majority, that the
  majority calls influential) and nDCG@k (its top-k's gains against the best k of the task's
  pool; a candidate not yet graded by `min_reviewers` gains 0), each averaged over the tasks with
  a majority for some candidate, with a percentile bootstrap interval over those tasks; the same
  resamples for every method, so the rows can be compared. Tasks nobody has graded yet are in no
  mean and no resample (a study half done gives the interval of the half done)."""

from __future__ import annotations

from dataclasses import dataclass

import krippendorff
import numpy as np
import pandas as pd

INFLUENTIAL = 1  # a grade of at least this ("partly") counts as influenced


@dataclass(frozen=True)
class Agreement:
    alpha: float
    low: float
    high: float
    reviewers: int
    tasks: int
    candidates: int

    def row(self) -> dict:
        return {"metric": "krippendorff_alpha_ordinal", **self.__dict__}


def reliability(judged: pd.DataFrame) -> tuple[np.ndarray, list, np.ndarray]:
    """(reviewers x candidates matrix of grades with NaN where not graded, candidate ids, each
    candidate's task)."""
    wide = judged.pivot_table(
        index="reviewer", columns="candidate", values="grade", aggfunc="first"
    )
    task_of = judged.drop_duplicates("candidate").set_index("candidate")["task"]
    cols = list(wide.columns)
    return wide.to_numpy(dtype=float), cols, task_of.loc[cols].to_numpy()


def _alpha(matrix: np.ndarray) -> float:
    graded = (~np.isnan(matrix)).sum(axis=0) >= 2
    matrix = matrix[:, graded]
    values = np.unique(matrix[~np.isnan(matrix)])
    if matrix.shape[1] == 0 or len(values) < 2:
        return float("nan")  # no pairable unit, or a single value: alpha is undefined
    return float(
        krippendorff.alpha(
            reliability_data=matrix, level_of_measurement="ordinal", value_domain=[0, 1, 2]
        )
    )


def task_resamples(tasks: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` bootstrap resamples of the distinct tasks (rows of task labels)."""
    rng = np.random.default_rng(seed)
    return rng.choice(tasks, size=(count, len(tasks)), replace=True)


def agreement(judged: pd.DataFrame, count: int, seed: int) -> Agreement:
    """Krippendorff's alpha of the judgements with its bootstrap interval over tasks."""
    matrix, cols, task_of = reliability(judged)
    alpha = _alpha(matrix)
    pairable = (~np.isnan(matrix)).sum(axis=0) >= 2
    tasks = np.unique(task_of[pairable])  # tasks with a candidate two reviewers graded
    columns_of = {t: np.flatnonzero(task_of == t) for t in tasks}
    draws = []
    for sample in task_resamples(tasks, count, seed) if len(tasks) else []:
        idx = np.concatenate([columns_of[t] for t in sample])
        draws.append(_alpha(matrix[:, idx]))
    draws = np.asarray(draws)
    draws = draws[~np.isnan(draws)]
    low, high = np.quantile(draws, [0.025, 0.975]) if len(draws) else (np.nan, np.nan)
    return Agreement(alpha, float(low), float(high), matrix.shape[0], len(tasks), len(cols))


def majority(judged: pd.DataFrame, min_reviewers: int) -> pd.DataFrame:
    """Per candidate graded by at least `min_reviewers`: task, reviewers, influential (1.0: a
    strict majority graded it at least INFLUENTIAL, 0.0: a strict majority below, NaN: a tie),
    gain (mean grade)."""
    grouped = judged.groupby("candidate")
    share = grouped["grade"].apply(lambda g: float((g >= INFLUENTIAL).mean()))
    table = pd.DataFrame(
        {
            "task": grouped["task"].first(),
            "reviewers": grouped["grade"].size(),
            "influential": np.where(share > 0.5, 1.0, np.where(share < 0.5, 0.0, np.nan)),
            "gain": grouped["grade"].mean(),
        }
    )
    return table[table["reviewers"] >= max(min_reviewers, 1)]


def per_task_scores(ranks: pd.DataFrame, votes: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per (method, task): precision@k (NaN where none of the method's top-k has a
    majority) and nDCG@k (NaN where the task's graded pool has no gain) against the experts."""
    rows = []
    pool_gains = votes.groupby("task")["gain"].apply(lambda g: np.sort(g.to_numpy())[::-1])
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for (method, task), group in ranks[ranks["rank"] <= k].groupby(["method", "task"]):
        top = group.sort_values("rank")
        calls = votes["influential"].reindex(top["candidate"]).dropna()
        precision = float(calls.mean()) if len(calls) else np.nan
        gains = votes["gain"].reindex(top["candidate"]).fillna(0.0).to_numpy()
        ideal = pool_gains.get(task, np.zeros(0))[:k]
        idcg = float((ideal * discount[: len(ideal)]).sum())
        dcg = float((gains * discount[: len(gains)]).sum())
        ndcg = dcg / idcg if idcg > 0 else np.nan
        rows.append({"method": method, "task": task, "precision": precision, "ndcg": ndcg})
    return pd.DataFrame(rows, columns=["method", "task", "precision", "ndcg"])


def method_scores(
    ranks: pd.DataFrame, judged: pd.DataFrame, k: int, min_reviewers: int, count: int, seed: int
) -> pd.DataFrame:
    """Per method: precision@k and nDCG@k averaged over tasks, each with a percentile bootstrap
    interval over tasks, and the number of tasks it rests on."""
    votes = majority(judged, min_reviewers)
    scores = per_task_scores(ranks, votes, k)
    tasks = np.sort(votes.loc[votes["influential"].notna(), "task"].unique())
    scores = scores[scores["task"].isin(tasks)]
    samples = task_resamples(tasks, count, seed) if len(tasks) else np.zeros((0, 0), dtype=int)
    rows = []
    for method, group in scores.groupby("method", sort=True):
        row = {"method": method, "k": k}
        for metric in ("precision", "ndcg"):
            by_task = group.set_index("task")[metric].dropna()
            values = by_task.reindex(tasks).to_numpy()[np.searchsorted(tasks, samples)]
            counts = (~np.isnan(values)).sum(axis=1)
            sums = np.nansum(values, axis=1)
            means = sums[counts > 0] / counts[counts > 0]  # resamples holding a defined value
            row[metric] = float(by_task.mean()) if len(by_task) else np.nan
            row[f"{metric}_low"], row[f"{metric}_high"] = (
                np.quantile(means, [0.025, 0.975]) if len(means) else (np.nan, np.nan)
            )
        row["tasks"] = int(group["precision"].notna().sum())
        rows.append(row)
    columns = ["method", "k"] + [f"{m}{s}" for m in ("precision", "ndcg") for s in ("", "_low",
                                 "_high")] + ["tasks"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
