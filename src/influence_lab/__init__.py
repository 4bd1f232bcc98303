"""influence-lab: which training examples made a generative model produce a given output, and
does removing them change it. `import influence_lab as il` gives the stages as functions
(`il.train`, `il.generate`, `il.attribute`, `il.featurise`, `il.counterfactual`, `il.lds`,
`il.report`, `il.pipeline`; see `influence_lab.api`), imported on first use so that the CLI
starts without them."""

from __future__ import annotations

import importlib
import sys
import types

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


class _StageAndPackage:
    """`il.report` and `il.counterfactual` name a stage function and a subpackage at once: called,
    this runs the stage (`influence_lab.api`); otherwise it is the subpackage
    (`influence_lab.report.figures` resolves as before)."""

    def __init__(self, name: str):
        self.__name__ = f"{__name__}.{name}"  # the import system's fallback reads it
        self._stage = name

    def __call__(self, *args, **kwargs):
        from . import api

        return getattr(api, self._stage)(*args, **kwargs)

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self.__name__), attr)

    def __repr__(self) -> str:
        return f"<influence-lab stage {self._stage}() and package {self.__name__}>"


class _Package(types.ModuleType):
    """The package: importing a subpackage sets it as an attribute of its parent, which would
    replace the stage functions named like the subpackages; these properties keep them."""

    counterfactual = property(lambda self: _StageAndPackage("counterfactual"), lambda s, v: None)
    report = property(lambda self: _StageAndPackage("report"), lambda s, v: None)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    if name == "InfluenceLabError":
        from .errors import InfluenceLabError

        return InfluenceLabError
    raise AttributeError(f"module 'influence_lab' has no attribute '{name}'")
