"""20 simulated reviewers save tasks for 60 s over loopback against the app in its own process, in
SQLite and in PostgreSQL: every save succeeds, every reviewer's last grade of every candidate is
stored exactly once, and the latency percentiles are recorded (printed and in a JSON file)."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.review_load import run_load

SECONDS = float(os.environ.get("REVIEW_LOAD_SECONDS", 60))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_twenty_reviewers_for_a_minute_store_every_judgement_once(backend, tmp_path, request):
    url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'review.sqlite'}"
    )
    result = run_load(url, tmp_path / "study", reviewers=20, seconds=SECONDS)
    (tmp_path / "load.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    assert result["database"] == backend
    assert result["errors"] == 0 and result["duplicates"] == 0
    assert result["exactly_once"], result
    assert result["saves"] >= 20 * 4  # every reviewer got through the study at least once
    assert result["judgements"] == 20 * result["candidates"]  # each graded every candidate
    assert result["p99_ms"] < 10_000  # no save waited out the lock
