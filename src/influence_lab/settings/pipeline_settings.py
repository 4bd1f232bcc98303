"""`pipeline`: train -> generate -> attribute -> counterfactual, for one config or several runs."""

from __future__ import annotations

from .rules import Settings
from .runs import Runs


class PipelineSettings(Settings):
    # each a list of overrides, e.g. [[model=vae], [model=ddpm]]; empty = this config alone
    runs: Runs = []
    export_dir: str | None = None  # copy every run's tables and figures here + RESULTS.md
