"""The terminal console every stage and piece writes its messages to (stderr; 130 columns when
stderr is not a terminal, so that logs and captured output wrap the same way everywhere)."""

from __future__ import annotations

import sys

from rich.console import Console

console = Console(stderr=True, width=None if sys.stderr.isatty() else 130)
