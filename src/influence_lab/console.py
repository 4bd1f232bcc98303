"""The terminal console every stage and piece writes its messages to (stderr; 130 columns when
stderr is not a terminal, so that logs and captured output wrap the same way everywhere), and the
one progress system: rich bars on a terminal; when stderr is a log file or a pipe, nothing, or for
the long loops that ask for it (`log_tenths`: the search over prompts, scoring over feature blocks)
one line per tenth, done / total and the seconds so far."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console

console = Console(stderr=True, width=None if sys.stderr.isatty() else 130)

# faiss announces at INFO which of its builds it loaded (three lines per process under Hydra's
# logging): not news to a user
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

T = TypeVar("T")


def show_progress() -> bool:
    """Whether progress bars are drawn: only on a terminal (CI logs, SLURM logs and captured output
    stay clean)."""
    return console.is_terminal


def track(
    items: Iterable[T], description: str, total: int | None = None, log_tenths: bool = False
) -> Iterator[T]:
    """Iterate over `items`, with a transient rich bar when stderr is a terminal; in a log, with
    `log_tenths`, a line after each tenth of them ('scores (trak): 3/10 (42 s)')."""
    if not show_progress():
        if log_tenths:
            yield from _tenths(items, description, total)
        else:
            yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(
        items, description=description, total=total, console=console, transient=True
    )


def _tenths(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    if total is None:
        items = list(items)
        total = len(items)
    step, start = max(1, total // 10), time.time()
    for done, item in enumerate(items, 1):
        yield item
        if done % step == 0 or done == total:
            console.print(
                f"{description}: {done:,}/{total:,} ({time.time() - start:.0f} s)", highlight=False
            )
