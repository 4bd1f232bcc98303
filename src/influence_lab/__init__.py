"""influence-lab: which training examples made a generative model produce a given output, and
does removing them change it. `import influence_lab as il` gives the stages as functions
(`il.train`, `il.generate`, `il.attribute`, `il.featurise`, `il.counterfactual`, `il.lds`,
`il.report`, `il.pipeline`; see `influence_lab.api`), imported on first use so that the CLI
starts without them. No subpackage is named like a stage function (the report code is
`influence_lab.reporting`, the sweeps and LDS `influence_lab.evaluation`, the experts' review
`influence_lab.reviewing`), so `il.report` is the function."""

from __future__ import annotations

API = (
    "train",
    "generate",
    "attribute",
    "featurise",
    "counterfactual",
    "lds",
    "report",
    "pipeline",
)
__all__ = [*API, "InfluenceLabError"]


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    if name == "InfluenceLabError":
        from .errors import InfluenceLabError

        return InfluenceLabError
    raise AttributeError(f"module 'influence_lab' has no attribute '{name}'")
