"""What a reviewer sees and records: the study's tasks with their progress, a task's candidates in
the reviewer's own order (shuffled per reviewer and task, the same on every reload), and one task's
grades written in one transaction (an upsert per candidate: a repeated submission updates, never
doubles). A reviewer reads and writes only their own judgements: the reviewer id comes from the
session, never from the request's form."""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine, and_, func, select

from ..errors import InfluenceLabError
from .database import candidate_ranks, candidates, judgements, reviewers, tasks, upsert, writing

# the grades a reviewer gives, best first: value, label, keyboard key
GRADES = ((2, "clearly influenced", "1"), (1, "partly", "2"), (0, "not influenced", "3"))
GRADE_VALUES = tuple(g for g, _, _ in GRADES)
MAX_NOTE = 2000  # characters kept of a note


@dataclass(frozen=True)
class Progress:
    position: int
    task_id: int
    prompt: str
    candidates: int
    graded: int

    @property
    def done(self) -> bool:
        return self.graded >= self.candidates


def offered_counts():
    """The subquery (task_id, offered): how many candidates each task offers."""
    return (
        select(candidates.c.task_id, func.count().label("offered"))
        .group_by(candidates.c.task_id)
        .subquery()
    )


def progress(engine: Engine, study_id: int, reviewer_id: int) -> list[Progress]:
    """Every task of the study, in order, with how many of its candidates this reviewer graded."""
    graded = (
        select(candidates.c.task_id, func.count().label("n"))
        .join(judgements, judgements.c.candidate_id == candidates.c.id)
        .where(judgements.c.reviewer_id == reviewer_id)
        .group_by(candidates.c.task_id)
        .subquery()
    )
    counts = offered_counts()
    query = (
        select(tasks.c.position, tasks.c.id, tasks.c.prompt, counts.c.offered, graded.c.n)
        .join(counts, counts.c.task_id == tasks.c.id)
        .outerjoin(graded, graded.c.task_id == tasks.c.id)
        .where(tasks.c.study_id == study_id)
        .order_by(tasks.c.position)
    )
    with engine.connect() as conn:
        return [Progress(p, t, pr, int(n), int(g or 0)) for p, t, pr, n, g in conn.execute(query)]


def next_task(items: list[Progress]) -> int | None:
    """The first task this reviewer has not finished (where a reload resumes), or None."""
    return next((p.position for p in items if not p.done), None)


def shuffled(ids: list[int], reviewer_id: int, task_id: int) -> list[int]:
    """`ids` in this reviewer's order for this task: a shuffle seeded by both, so two reviewers see
    different orders and one reviewer the same order on every visit."""
    seed = int.from_bytes(hashlib.sha256(f"{reviewer_id}:{task_id}".encode()).digest()[:8], "big")
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return order


def task_view(engine: Engine, study_id: int, reviewer_id: int, position: int) -> dict | None:
    """A task as its page shows it: the prompt and the candidates in the reviewer's order with this
    reviewer's grades and notes (None when the study has no such task). No method, rank or score."""
    with engine.connect() as conn:
        task = conn.execute(
            select(tasks).where(tasks.c.study_id == study_id, tasks.c.position == position)
        ).first()
        if task is None:
            return None
        rows = conn.execute(
            select(
                candidates.c.id,
                candidates.c.item_id,
                candidates.c.caption,
                judgements.c.grade,
                judgements.c.note,
            )
            .outerjoin(
                judgements,
                and_(
                    judgements.c.candidate_id == candidates.c.id,
                    judgements.c.reviewer_id == reviewer_id,
                ),
            )
            .where(candidates.c.task_id == task.id)
        ).all()
    by_id = {r.id: r for r in rows}
    order = shuffled(list(by_id), reviewer_id, task.id)
    return {
        "task_id": task.id,
        "position": task.position,
        "target": task.target,
        "prompt": task.prompt,
        "candidates": [
            {
                "id": cid,
                "item_id": by_id[cid].item_id,
                "caption": by_id[cid].caption,
                "grade": by_id[cid].grade,
                "note": by_id[cid].note or "",
            }
            for cid in order
        ],
    }


def record(
    engine: Engine, reviewer_id: int, task_id: int, grades: dict[int, tuple[int, str]]
) -> int:
    """Write a task's grades ({candidate id: (grade, note)}) for this reviewer in one transaction;
    every candidate must be the task's and every grade one of GRADE_VALUES. Returns how many."""
    if any(g not in GRADE_VALUES for g, _ in grades.values()):
        raise InfluenceLabError(f"a grade must be one of {GRADE_VALUES}.")
    now = time.time()
    with writing(engine).begin() as conn:
        own = set(
            conn.execute(select(candidates.c.id).where(candidates.c.task_id == task_id)).scalars()
        )
        foreign = set(grades) - own
        if foreign:
            raise InfluenceLabError(
                f"candidates {sorted(foreign)} are not part of task {task_id}; nothing was saved."
            )
        if grades:
            conn.execute(
                upsert(engine, judgements, ["reviewer_id", "candidate_id"]),
                [
                    {
                        "reviewer_id": reviewer_id,
                        "candidate_id": cid,
                        "grade": grade,
                        "note": note[:MAX_NOTE],
                        "updated": now,
                    }
                    for cid, (grade, note) in sorted(grades.items())
                ],
            )
    return len(grades)


def admin_progress(engine: Engine, study_id: int) -> pd.DataFrame:
    """One row per (reviewer, task): candidates graded of candidates offered."""
    graded = (
        select(judgements.c.reviewer_id, candidates.c.task_id, func.count().label("graded"))
        .join(candidates, candidates.c.id == judgements.c.candidate_id)
        .group_by(judgements.c.reviewer_id, candidates.c.task_id)
        .subquery()
    )
    offered = offered_counts()
    query = (
        select(reviewers.c.name, tasks.c.position, offered.c.offered, graded.c.graded)
        .select_from(reviewers)
        .join(tasks, tasks.c.study_id == reviewers.c.study_id)
        .join(offered, offered.c.task_id == tasks.c.id)
        .outerjoin(
            graded,
            and_(graded.c.reviewer_id == reviewers.c.id, graded.c.task_id == tasks.c.id),
        )
        .where(reviewers.c.study_id == study_id, reviewers.c.role == "reviewer")
        .order_by(reviewers.c.name, tasks.c.position)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    table = pd.DataFrame(rows, columns=["reviewer", "task", "offered", "graded"])
    table["graded"] = table["graded"].fillna(0).astype(int)
    return table


def judgement_table(engine: Engine, study_id: int) -> pd.DataFrame:
    """Every judgement of the study: reviewer, task, target, prompt, candidate, item, grade,
    note."""
    query = (
        select(
            reviewers.c.name.label("reviewer"),
            tasks.c.position.label("task"),
            tasks.c.target,
            tasks.c.prompt,
            candidates.c.id.label("candidate"),
            candidates.c.item_id.label("id"),
            judgements.c.grade,
            judgements.c.note,
            judgements.c.updated,
        )
        .select_from(judgements)
        .join(reviewers, reviewers.c.id == judgements.c.reviewer_id)
        .join(candidates, candidates.c.id == judgements.c.candidate_id)
        .join(tasks, tasks.c.id == candidates.c.task_id)
        .where(tasks.c.study_id == study_id, reviewers.c.role == "reviewer")
        .order_by(tasks.c.position, candidates.c.id, reviewers.c.name)
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=list(query.selected_columns.keys()))


def rank_table(engine: Engine, study_id: int) -> pd.DataFrame:
    """Which method ranked which candidate where: task, target, candidate, id, method, rank."""
    query = (
        select(
            tasks.c.position.label("task"),
            tasks.c.target,
            candidates.c.id.label("candidate"),
            candidates.c.item_id.label("id"),
            candidate_ranks.c.method,
            candidate_ranks.c.rank,
        )
        .select_from(candidate_ranks)
        .join(candidates, candidates.c.id == candidate_ranks.c.candidate_id)
        .join(tasks, tasks.c.id == candidates.c.task_id)
        .where(tasks.c.study_id == study_id)
        .order_by(tasks.c.position, candidate_ranks.c.method, candidate_ranks.c.rank)
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=list(query.selected_columns.keys()))
