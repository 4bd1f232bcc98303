"""`paths`: where every result goes. Whether the directory can be made is a question for the
machine, checked by `store.paths.check_output_dir` at a stage's entry."""

from __future__ import annotations

from .rules import Settings


class PathsSettings(Settings):
    output_dir: str = "outputs"  # every stage writes under <output_dir>/<stage>/<name>-<signature>/
