"""A study: the review of one attribute run. Each prompt is a task; its candidates are the union of
every method's top-k items for that prompt, each item once (duplicates merged), with the methods
and ranks that chose it kept apart from what a reviewer sees (blinding)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from ..errors import InfluenceLabError
from .database import candidate_ranks, candidates, studies, tasks, writing


@dataclass(frozen=True)
class Study:
    id: int
    name: str
    attribute_signature: str
    attribute_dir: Path
    top_k: int


def pooled_candidates(table: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """Per target, the items some method ranked within its top `top_k`, one row per (target, item,
    method) with the method's rank and the item's caption."""
    top = table[table["rank"] <= top_k]
    return top[["target", "prompt", "id", "caption", "method", "rank"]].sort_values(
        ["target", "id", "method"], kind="stable"
    )


def open_study(engine: Engine, name: str, attribute_dir: Path, signature: str, top_k: int) -> Study:
    """The study of the attribute run `attribute_dir` (by its signature), created on first use with
    its tasks and pooled candidates, in one transaction."""
    try:
        with writing(engine).begin() as conn:
            row = _find(conn, signature)
            if row is None:
                table = pd.read_parquet(Path(attribute_dir) / "attribution.parquet")
                study_id = conn.execute(
                    studies.insert().values(
                        name=name,
                        attribute_signature=signature,
                        attribute_dir=str(attribute_dir),
                        top_k=top_k,
                        created=time.time(),
                    )
                ).inserted_primary_key[0]
                _fill(conn, study_id, pooled_candidates(table, top_k))
                row = _find(conn, signature)
    except IntegrityError:  # another process made the same study at the same moment
        with engine.connect() as conn:
            row = _find(conn, signature)
    if row.top_k != top_k:
        raise InfluenceLabError(
            f"review.top_k is {top_k}, but the review of this attribute run ({name}-{signature}) "
            f"was made with top_k {row.top_k} and holds judgements of those candidates; give "
            f"review.top_k={row.top_k}, or a new review.database."
        )
    return Study(row.id, row.name, row.attribute_signature, Path(row.attribute_dir), row.top_k)


def _find(conn, signature: str):
    return conn.execute(select(studies).where(studies.c.attribute_signature == signature)).first()


def _fill(conn, study_id: int, pooled: pd.DataFrame) -> None:
    for position, (target, group) in enumerate(pooled.groupby("target", sort=True), start=1):
        task_id = conn.execute(
            tasks.insert().values(
                study_id=study_id,
                position=position,
                target=int(target),
                prompt=str(group["prompt"].iloc[0]),
            )
        ).inserted_primary_key[0]
        for item_id, rows in group.groupby("id", sort=True):
            candidate_id = conn.execute(
                candidates.insert().values(
                    task_id=task_id, item_id=str(item_id), caption=str(rows["caption"].iloc[0])
                )
            ).inserted_primary_key[0]
            conn.execute(
                candidate_ranks.insert(),
                [
                    {"candidate_id": candidate_id, "method": str(m), "rank": int(r)}
                    for m, r in zip(rows["method"], rows["rank"], strict=True)
                ],
            )
