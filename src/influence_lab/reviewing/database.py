"""The review database: one versioned schema in SQLAlchemy Core, opened from a URL (a SQLite file by
default, PostgreSQL or any SQLAlchemy URL as an option).

Every write is one transaction (`writing(engine).begin()`); a judgement is unique per (reviewer,
candidate) and written by an upsert, so a submission repeated (a double click, a retry after the
server was killed) or two reviewers submitting at once never store a judgement twice. SQLite runs
in WAL mode with `BEGIN IMMEDIATE` for writes (writers queue for the lock instead of failing on an
upgrade), deferred reads and a busy timeout, so the app's worker threads can read and write at
once.

The schema is versioned by hand (`meta.schema_version`) rather than with alembic: there is one
version so far, and a database of another version is refused with a sentence saying so; the first
change of the schema is the moment to bring in alembic's migrations."""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy import (
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, OperationalError

from ..errors import InfluenceLabError

SCHEMA_VERSION = 1
metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
studies = Table(
    "studies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),  # <model>-<data>
    Column("attribute_signature", String(64), nullable=False, unique=True),
    Column("attribute_dir", Text, nullable=False),
    Column("top_k", Integer, nullable=False),
    Column("created", Float, nullable=False),
)
tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", ForeignKey("studies.id"), nullable=False),
    Column("position", Integer, nullable=False),  # 1-based, the order of the prompts
    Column("target", Integer, nullable=False),  # the attribution table's target
    Column("prompt", Text, nullable=False),
    UniqueConstraint("study_id", "position"),
)
candidates = Table(
    "candidates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", ForeignKey("tasks.id"), nullable=False),
    Column("item_id", String(200), nullable=False),
    Column("caption", Text, nullable=False),
    UniqueConstraint("task_id", "item_id"),  # one candidate per item: duplicates merged
)
# which methods ranked a candidate, at which rank: never shown to a reviewer (blinding)
candidate_ranks = Table(
    "candidate_ranks",
    metadata,
    Column("candidate_id", ForeignKey("candidates.id"), primary_key=True),
    Column("method", String(100), primary_key=True),
    Column("rank", Integer, nullable=False),
)
reviewers = Table(
    "reviewers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", ForeignKey("studies.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),  # reviewer | admin
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 of the token
    Column("created", Float, nullable=False),
    UniqueConstraint("study_id", "name", "role"),
)
judgements = Table(
    "judgements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reviewer_id", ForeignKey("reviewers.id"), nullable=False),
    Column("candidate_id", ForeignKey("candidates.id"), nullable=False),
    Column("grade", Integer, nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("updated", Float, nullable=False),
    UniqueConstraint("reviewer_id", "candidate_id"),
)


def default_url(output_dir: Path) -> str:
    """The SQLite file in the output root: <output_dir>/review/review.sqlite."""
    path = Path(output_dir).resolve() / "review" / "review.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def writing(engine: Engine) -> Engine:
    """The engine for a transaction that writes (`writing(engine).begin()`): in SQLite it begins
    IMMEDIATE, taking the write lock at once, so concurrent writers queue instead of failing on a
    lock upgrade; reads begin deferred and, in WAL mode, never wait for a writer."""
    return engine.execution_options(review_write=True)


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL, a busy timeout, and the transaction's BEGIN emitted by us (SQLAlchemy's documented
    recipe for pysqlite): IMMEDIATE for the transactions of `writing`, deferred for reads."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        write = conn.get_execution_options().get("review_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def open_database(url: str) -> Engine:
    """The engine for `url`, its tables created on first use and its schema version checked."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise InfluenceLabError(
            f"review.database is {url!r}, which SQLAlchemy cannot open ({exc}); give a URL such "
            "as sqlite:///path/review.sqlite or postgresql+psycopg://user@host:port/db."
        ) from exc
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    try:
        metadata.create_all(writing(engine))
        with writing(engine).begin() as conn:
            found = conn.execute(
                select(meta.c.value).where(meta.c.key == "schema_version")
            ).scalar()
            if found is None:
                conn.execute(
                    meta.insert(),
                    [
                        {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                        {"key": "secret", "value": secrets.token_urlsafe(32)},
                    ],
                )
            elif int(found) != SCHEMA_VERSION:
                raise InfluenceLabError(
                    f"the review database {engine.url!r} has schema version {found}; this "
                    f"influence-lab reads version {SCHEMA_VERSION}: use a new review.database."
                )
    except OperationalError as exc:
        raise InfluenceLabError(
            f"the review database {engine.url!r} cannot be opened: {exc.orig}"
        ) from exc
    return engine


def secret_of(engine: Engine) -> str:
    """The database's own random secret (signs the forms' CSRF tokens), made with the schema."""
    with engine.connect() as conn:
        return conn.execute(select(meta.c.value).where(meta.c.key == "secret")).scalar_one()


def upsert(engine: Engine, table: Table, keys: list[str]):
    """An INSERT of `table` that updates the row in place when `keys` already name one (SQLite's
    and PostgreSQL's ON CONFLICT DO UPDATE)."""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(engine.dialect.name)
    if dialect is None:
        raise InfluenceLabError(
            f"the review database's dialect {engine.dialect.name} is not supported; "
            "use SQLite or PostgreSQL."
        )
    stmt = dialect.insert(table)
    changed = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in (*keys, "id")}
    return stmt.on_conflict_do_update(index_elements=keys, set_=changed)
