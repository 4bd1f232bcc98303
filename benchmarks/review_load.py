"""Load on the review app over loopback: N simulated reviewers (default 20) each load a task, grade
every candidate at random and save, task after task, for S seconds (default 60), against the app
served by uvicorn in its own process. Afterwards every reviewer's last grade of every candidate must
be in the database exactly once. Prints the saves, their latency percentiles and that check:

    python -m benchmarks.review_load [--seconds 60] [--reviewers 20] [--postgres] [--record]

(`--postgres` starts a throwaway PostgreSQL cluster from Debian's `postgresql`; the default is the
SQLite file; `--record` runs both and writes them to benchmarks/review_load.json with the date and
the machine, the record tests/test_review_load.py checks.) The slow test runs the same load for a
shorter time (REVIEW_LOAD_SECONDS, 15 s) against both databases on every CI run."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "review_load.json"


def task_form(html: str) -> tuple[str, list[int]]:
    """A task page's CSRF token and its candidates' ids, in the order shown."""
    csrf = re.search(r'name="csrftoken" value="([^"]+)"', html).group(1)
    return csrf, [int(i) for i in re.findall(r'data-candidate="(\d+)"', html)]


def _reviewer(base: str, token: str, seed: int, until: float, tasks: int, out: dict) -> None:
    rng = random.Random(seed)
    last, latencies, errors = {}, [], 0
    with httpx.Client(base_url=base, follow_redirects=False, timeout=60) as client:
        client.get("/join", params={"token": token})
        position = 1
        while time.time() < until:
            page = client.get(f"/task/{position}")
            csrf, ids = task_form(page.text)
            grades = {i: rng.choice((0, 1, 2)) for i in ids}
            data = {"csrftoken": csrf, **{f"grade_{i}": str(g) for i, g in grades.items()}}
            started = time.perf_counter()
            response = client.post(f"/task/{position}", data=data)
            latencies.append(time.perf_counter() - started)
            if response.status_code == 303:
                last.update(grades)
            else:
                errors += 1
            position = position % tasks + 1
    out[seed] = (last, latencies, errors)


def run_load(url: str, folder: Path, reviewers: int = 20, seconds: float = 60.0) -> dict:
    """The load against the study of `folder` in the database `url`; returns the counts, latency
    percentiles (seconds) and whether every last grade is stored exactly once."""
    from influence_lab.reviewing.access import invite
    from influence_lab.reviewing.judgements import judgement_table, rank_table
    from influence_lab.stages.review import free_port
    from tests.review_helpers import build

    engine, study, _ = build(url, folder)
    tokens = [invite(engine, study.id, f"sim-{r:02d}") for r in range(reviewers)]
    pool = rank_table(engine, study.id)
    tasks, candidates = pool.task.nunique(), pool.candidate.nunique()
    port = free_port("127.0.0.1")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.review_helpers", url, str(folder), str(port)], cwd=ROOT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the review server did not start") from None
                time.sleep(0.2)
        out: dict = {}
        until = time.time() + seconds
        threads = [
            threading.Thread(target=_reviewer, args=(base, t, r, until, tasks, out))
            for r, t in enumerate(tokens)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    table = judgement_table(engine, study.id)
    expected = {(f"sim-{r:02d}", c): g for r, (last, _, _) in out.items() for c, g in last.items()}
    stored = {(r.reviewer, r.candidate): r.grade for r in table.itertuples()}
    latencies = np.concatenate([np.asarray(lat) for _, lat, _ in out.values()])
    p50, p90, p99 = np.quantile(latencies, [0.5, 0.9, 0.99])
    return {
        "database": engine.dialect.name,
        "reviewers": reviewers,
        "seconds": seconds,
        "tasks": int(tasks),
        "candidates": int(candidates),
        "saves": int(len(latencies)),
        "errors": int(sum(e for _, _, e in out.values())),
        "judgements": len(table),
        "duplicates": int(table.duplicated(["reviewer", "candidate"]).sum()),
        "exactly_once": stored == expected,
        "p50_ms": 1000 * p50,
        "p90_ms": 1000 * p90,
        "p99_ms": 1000 * p99,
        "max_ms": 1000 * float(latencies.max()),
    }


def load_on(backend: str, reviewers: int, seconds: float) -> dict:
    """One load run against a fresh SQLite file or a throwaway PostgreSQL cluster."""
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "postgresql":
            from tests.postgres_cluster import new_database, throwaway_cluster

            with throwaway_cluster() as prefix:
                return run_load(new_database(prefix), Path(tmp), reviewers, seconds)
        return run_load(f"sqlite:///{tmp}/review.sqlite", Path(tmp), reviewers, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--reviewers", type=int, default=20)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--record", action="store_true", help=f"both databases, into {RECORD}")
    args = parser.parse_args()
    backends = (
        ["sqlite", "postgresql"] if args.record else ["postgresql" if args.postgres else "sqlite"]
    )
    results = [load_on(b, args.reviewers, args.seconds) for b in backends]
    keys = list(results[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for result in results:
        print("| " + " | ".join(f"{v:.0f}" if isinstance(v, float) else str(v)
                                for v in result.values()) + " |")  # fmt: skip
    if args.record:
        record = {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": "python -m benchmarks.review_load --record",
            "runs": results,
        }
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
        print(f"recorded in {RECORD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
