"""The terminal console every stage and piece writes its messages to (stderr; 130 columns when
stderr is not a terminal, so that logs and captured output wrap the same way everywhere), and the
one progress system: rich bars on a terminal, nothing when stderr is a log file or a pipe."""

from __future__ import annotations

import logging
import sys
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


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over `items`, with a transient rich bar when stderr is a terminal."""
    if not show_progress():
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(
        items, description=description, total=total, console=console, transient=True
    )
