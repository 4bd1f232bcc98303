"""`influence-lab pipeline`: train -> generate -> attribute -> counterfactual, then a short summary
(the table and the chart) under `<output_dir>/pipeline/`.

An experiment config (`+experiment=NAME`, `conf/experiment/`) may list several `pipeline.runs`
(each a list of overrides, e.g. `[model=ddpm]`) and a `pipeline.export_dir`: every run's tables
and figures are then copied there, with a generated RESULTS.md, and the block between
`<!-- results:start -->` and `<!-- results:end -->` of the folder's README is rewritten."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..entry.stage_entry import (
    compose_stage,
    console,
    output_dir,
    settings_of,
    stage_entry,
    validate,
)
from ..errors import InfluenceLabError
from ..reporting.exports import export
from ..settings import StageSettings, run_name
from ..store.files import write_text
from .counterfactual import counterfactual


def run_configs(
    settings: StageSettings, config_name: str = "pipeline", runs=None
) -> list[tuple[str, StageSettings]]:
    """(label, settings) of every run: these settings alone, or one per entry of `runs` (each a list
    of overrides added to this call's own). Every run's config is composed and validated (as at a
    stage's entry) before the first run starts; the entries themselves are the schema's
    (`settings.runs`), checked at this stage's entry."""
    runs = settings.pipeline.runs if runs is None else runs
    if not runs:
        return [(run_name(settings), settings)]
    key = f"{config_name}.runs"
    configs = []
    for i, extra in enumerate(runs):
        run_cfg = compose_stage(config_name, [*settings._overrides, *(str(o) for o in extra)])
        try:  # every run's settings before the first run starts
            run_settings = validate(run_cfg)
        except InfluenceLabError as exc:
            raise InfluenceLabError(f"{key} entry {i} ({' '.join(extra)}): {exc}") from exc
        configs.append((run_name(run_settings), run_settings))
    return configs


def pipeline(settings: StageSettings):
    settings = settings_of(settings)
    summaries = {}
    for label, run_settings in run_configs(settings):
        console.print(f"[bold]pipeline run {label}[/]", highlight=False)
        sweep = counterfactual(run_settings)
        out = output_dir(run_settings) / "pipeline" / label
        out.mkdir(parents=True, exist_ok=True)
        for picture in ("forest.png", "chart.png"):
            shutil.copy(sweep / picture, out / picture)
        text = (sweep / "summary.md").read_text()
        write_text(out / "summary.md", text + f"\nFull results: {sweep.path}\n")
        summaries[label] = sweep.path
        console.print(
            f"[green]pipeline done[/]: summary {out / 'summary.md'}, "
            f"forest plot {out / 'forest.png'}",
            highlight=False,
        )
    if settings.pipeline.export_dir:
        export(Path(settings.pipeline.export_dir), summaries, settings.group)
    return summaries


run = stage_entry(pipeline)
