"""`review`: domain experts grade, blinded, the training items an attribute run's methods ranked
highest for each prompt, in a local web app whose judgements live in a database."""

from __future__ import annotations

from typing import Annotated

from .rules import NonNegativeInt, PositiveInt, Seed, Settings, one_of, rule

REVIEW_ACTIONS = ("serve", "invite", "admin", "results")

Port = Annotated[
    int,
    rule(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535,
        "{key} {is} {value}; give a TCP port from 0 to 65535 (0: any free port).",
    ),
]

ReviewerName = Annotated[
    str | None,
    rule(
        lambda v: (
            v is None
            or (
                isinstance(v, str)
                and 0 < len(v) <= 100
                and v.strip() == v
                and v.isprintable()
                and "\\" not in v
            )
        ),
        "{key} {is} {value}; give a name of 1 to 100 printable characters without a backslash, "
        "e.g. 'Ada Lovelace'.",
    ),
]


class ReviewSettings(Settings):
    # serve: the web app; invite: a reviewer's link (review.reviewer); admin: the admin page's link;
    # results: agreement and each method's precision against the experts
    action: Annotated[str, one_of(REVIEW_ACTIONS)] = "serve"
    reviewer: ReviewerName = None  # invite: the reviewer's name
    # a SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db); null: the SQLite file
    # <output_dir>/review/review.sqlite
    database: str | None = None
    host: str = "127.0.0.1"  # the address the app binds to (only this machine by default)
    port: Port = 8765
    top_k: PositiveInt = 5  # each method's top items pooled (duplicates merged) into a task
    bootstrap: PositiveInt = 2000  # resamples of tasks behind every interval of `results`
    seed: Seed = 0  # the bootstrap's seed (a reviewer's order is seeded by reviewer and task)
    min_reviewers: NonNegativeInt = 2  # results: a candidate counts once this many graded it
