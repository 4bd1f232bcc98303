"""The cache-or-compute sequence every stage runs on its signature-named result directory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..console import console
from ..settings import run_name
from .files import RunDir
from .paths import output_dir
from .signature import signature


def reused(run: RunDir) -> None:
    console.print(
        f"[green]reusing[/] {run.stage} result {run.path} (signature {run.signature}); "
        f"force=true recomputes it",
        highlight=False,
    )


def cached(
    run: RunDir,
    force: bool,
    compute: Callable[[RunDir], dict[str, Any] | None],
    *,
    reuse: Callable[[RunDir], Any] | None = None,
    check: Callable[[], Any] | None = None,
) -> RunDir:
    """`run`, computed once. Under the run's claim (a second process asking for the same result
    waits, then reuses it): a complete result is reused (announced, then `reuse(run)`) unless
    `force`; otherwise `check()` runs (checks that must pass before anything is written), the
    directory is prepared (cleared with `force`), `compute(run)` writes the result's files
    (provenance included) and returns the extra fields of the `done` marker, which records the
    SHA-256 of every file."""
    with run.claim():
        if run.done and not force:
            reused(run)
            if reuse is not None:
                reuse(run)
            return run
        if check is not None:
            check()
        run.prepare(force=force)
        run.mark_done(compute(run))
    return run


def result_dir(settings, stage: str, spec, suffix: str = "") -> RunDir:
    """Where the result of `stage` for these settings lives: `<output_dir>/<stage>/<model>-<data>
    <suffix>-<signature of spec>` (`spec`: what determines the result)."""
    return RunDir(output_dir(settings), stage, run_name(settings) + suffix, signature(spec))
