"""`influence-lab pipeline`: train -> generate -> attribute -> counterfactual, then a short summary
(the table and the chart) under `<output_dir>/pipeline/`."""

from __future__ import annotations

import shutil

from omegaconf import DictConfig

from ..orchestration.store import write_text
from .common import console, output_dir, stage_entry
from .counterfactual import counterfactual


def pipeline(cfg: DictConfig):
    sweep = counterfactual(cfg)
    out = output_dir(cfg) / "pipeline" / f"{cfg.model.name}-{cfg.data.name}"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(sweep / "chart.png", out / "chart.png")
    text = (sweep / "summary.md").read_text()
    write_text(out / "summary.md", text + f"\nFull results: {sweep.path}\n")
    console.print(f"[green]pipeline done[/]: summary {out / 'summary.md'}, chart {out / 'chart.png'}", highlight=False)
    return out


run = stage_entry(pipeline)
