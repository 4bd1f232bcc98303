"""A throwaway PostgreSQL cluster for the review tests: Debian's `postgresql` binaries, a data
folder under /tmp owned by the `postgres` user (PostgreSQL refuses to run as root), trust
authentication on 127.0.0.1 and a free port; stopped and removed afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager

from .review_helpers import free_port


def postgres_bin() -> str | None:
    """The newest installed PostgreSQL's bin folder (Debian's /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return os.path.dirname(found[-1]) if found else None


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextmanager
def throwaway_cluster():
    """Yields a SQLAlchemy URL prefix `postgresql+psycopg://il@127.0.0.1:PORT/`."""
    bin_dir = postgres_bin()
    folder = tempfile.mkdtemp(prefix="il-pg-")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = os.path.join(folder, "data"), free_port()
    run = lambda *a: subprocess.run(_as_postgres(list(a)), check=True, capture_output=True)  # noqa: E731
    try:
        run(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "il")
        run(
            f"{bin_dir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(folder, "log"),
            "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200",
            "start",
        )  # fmt: skip
        yield f"postgresql+psycopg://il@127.0.0.1:{port}/"
    finally:
        subprocess.run(_as_postgres([f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "stop"]),
                       capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def new_database(prefix: str) -> str:
    """A new, empty database in the cluster at `prefix`; its SQLAlchemy URL."""
    import psycopg

    name = f"review_{uuid.uuid4().hex[:12]}"
    plain = prefix.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain + "postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return prefix + name
