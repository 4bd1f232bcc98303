"""`calibrate`: how many null runs of a counterfactual design measure its false-positive rate."""

from __future__ import annotations

from .rules import NonNegativeInt, PositiveInt, Settings


class CalibrateSettings(Settings):
    runs: PositiveInt = 40  # null runs, each with every seed of the chain shifted (as a replicate)
    start: NonNegativeInt = 0  # the first run's shift (runs start .. start + runs - 1)
    # attribution methods the null runs rank with (the nulls need only the targets and pools;
    # null = the registry's cheapest, `registry.NULL_RUN_METHODS`)
    methods: list[str] | None = None
    # copy each calibration's tables and picture here (an experiment's folder) + RESULTS.md
    export_dir: str | None = None
