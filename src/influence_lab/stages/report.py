"""`influence-lab report`: a self-contained HTML report and its markdown twin for the results of one
model and dataset under `paths.output_dir` (the newest finished attribute, counterfactual and lds
results of `<model>-<data>`): the configuration, the finding in words, neighbour grids, the
counterfactual table and bars with intervals, the LDS table, memorization and training dynamics.

Writes `<output_dir>/report/<model>-<data>/report.html` (open it in any browser; no server, no
network) and `report.md` with `images/`."""

from __future__ import annotations

from pathlib import Path

from ..entry.stage_entry import console, output_dir, settings_of, stage_entry
from ..errors import InfluenceLabError
from ..reporting.document import write_report
from ..reporting.sections import STAGES, calibration_of, newest, report_sections
from ..settings import ReportStageSettings, run_name


def report(settings: ReportStageSettings) -> Path:
    settings = settings_of(settings)
    root = output_dir(settings)
    name = run_name(settings)
    found = {stage: newest(root, stage, name) for stage in STAGES}
    found["calibration"] = calibration_of(root, name, found["counterfactual"])
    if not any(found.values()):
        raise InfluenceLabError(
            f"no finished attribute, counterfactual or lds results for {name} "
            f"under {root}; "
            f"run influence-lab pipeline (or lds) with the same model and data first."
        )
    title = (
        settings.report.title
        or f"influence-lab report: {settings.model.name} on {settings.data.name}"
    )
    subtitle = (
        "Which training examples made the model produce its outputs, "
        "and does removing them change them?"
    )
    folder = root / "report" / name
    html, md = write_report(
        folder, title, subtitle, report_sections(found, settings.report.max_grids, folder)
    )
    console.print(f"[green]report[/]: {html}\n  markdown: {md}", highlight=False)
    return html


run = stage_entry(report)
