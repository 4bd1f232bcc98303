"""`report`: the HTML report of one model and dataset."""

from __future__ import annotations

from .rules import NonNegativeInt, Settings


class ReportSettings(Settings):
    title: str | None = None  # default: "influence-lab report: <model> on <data>"
    max_grids: NonNegativeInt = 6  # neighbour grids shown (of prompts x methods)
