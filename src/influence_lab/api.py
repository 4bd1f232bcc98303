"""The Python API: every CLI stage as a function, for notebooks and scripts.

    import influence_lab as il

    run = il.attribute(model="vae", data="digits", generate__m=4)
    run.rankings.head()                      # the attribution table as a DataFrame
    sweep = il.counterfactual("counterfactual.k=[5]", model="vae")
    sweep.stats                              # top-k against each control, with intervals

A stage function takes the CLI's overrides, as strings (`"model.fit.max_epochs=3"`, or one list
of them) and as keyword arguments, where `__` stands for a dot (`model__fit__max_epochs=3`) and
values are Python values (lists, bools, None, numbers, strings with spaces or commas). `experiment`
is appended (`+experiment=NAME`); `config_dir` adds a user's config folder, like `--config-dir`.
The config is composed and validated exactly as the CLI does it, so the signatures, and with them
the cached results, are shared: a result made here is reused by the CLI and back. A bad setting
raises `InfluenceLabError` (one sentence naming it) instead of exiting.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

APPENDED = ("experiment",)  # config groups that are not in a stage's defaults list
_PLAIN = re.compile(r"^[A-Za-z0-9_./:@+-]+$")


def hydra_value(value: Any) -> str:
    """A Python value as a Hydra override value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.match(text) and text not in ("null", "true", "false"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides_of(args: tuple, kwargs: dict) -> list[str]:
    """The override strings of a stage call's positional strings (or lists) and keywords."""
    out: list[str] = []
    for arg in args:
        out += [str(a) for a in arg] if isinstance(arg, (list, tuple)) else [str(arg)]
    for key, value in kwargs.items():
        dotted = key.replace("__", ".")
        out.append(f"{'+' if dotted in APPENDED else ''}{dotted}={hydra_value(value)}")
    return out


def settings(stage: str, *args, config_dir: str | Path | None = None, **kwargs):
    """The validated settings a stage would run with (composed as the CLI composes them)."""
    from hydra.errors import HydraException

    from .entry.stage_entry import compose_stage, validate
    from .errors import InfluenceLabError

    overrides = overrides_of(args, kwargs)
    try:
        cfg = compose_stage(stage, overrides, str(config_dir) if config_dir else None)
    except HydraException as exc:  # an unknown key, a malformed value: Hydra's own words
        raise InfluenceLabError(f"the {stage} config cannot be composed: {exc}") from None
    return validate(cfg, overrides)


@dataclass
class Result:
    """One stage result: its folder (`path`), its signature and its files."""

    stage: str
    path: Path

    @property
    def signature(self) -> str:
        return self.path.name.rsplit("-", 1)[-1]

    def file(self, name: str) -> Path:
        path = self.path / name
        if not path.exists():
            raise FileNotFoundError(f"{self.stage} result {self.path} has no {name}")
        return path

    def table(self, name: str) -> pd.DataFrame:
        """A table of the result (`.parquet` or `.csv`) as a DataFrame."""
        path = self.file(name)
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)

    def json(self, name: str) -> dict:
        return json.loads(self.file(name).read_text())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path})"


class TrainResult(Result):
    @cached_property
    def metrics(self) -> dict:
        return self.json("metrics.json")

    @property
    def samples(self) -> Path:
        return self.file("samples.png")

    def model(self):
        """The trained model (a GenerativeModel, in eval mode)."""
        from .models.build import load_model

        return load_model(self.path)


class GenerateResult(Result):
    @cached_property
    def outputs(self) -> pd.DataFrame:
        return self.table("outputs.parquet")

    @cached_property
    def quality(self) -> dict:
        return self.json("quality.json")

    @property
    def grid(self) -> Path:
        return self.file("grid.png")


class AttributeResult(Result):
    @cached_property
    def rankings(self) -> pd.DataFrame:
        return self.table("attribution.parquet")

    @property
    def neighbours(self) -> list[Path]:
        return sorted((self.path / "neighbours").glob("*.png"))

    def top(self, method: str, k: int = 10) -> pd.DataFrame:
        """Each target's k best-ranked training items by `method`."""
        table = self.rankings
        return table[(table["method"] == method) & (table["rank"] <= k)]  # ranks start at 1


class CounterfactualResult(Result):
    @cached_property
    def results(self) -> pd.DataFrame:
        return self.table("results.parquet")

    @cached_property
    def stats(self) -> pd.DataFrame:
        return self.table("stats.csv")

    @cached_property
    def arms(self) -> pd.DataFrame:
        return self.table("arms.csv")

    @property
    def chart(self) -> Path:
        return self.file("chart.png")

    @property
    def forest(self) -> Path:
        """The forest plot of the finding (top-k minus each control, with intervals)."""
        return self.file("forest.png")


class LDSResult(Result):
    @cached_property
    def lds(self) -> pd.DataFrame:
        """The LDS table: one row per method and the reference rows `retraining` and `ceiling`,
        with intervals and each method's share of the ceiling."""
        return self.table("lds.csv")

    @cached_property
    def per_target(self) -> pd.DataFrame:
        return self.table("lds_targets.parquet")

    @cached_property
    def dampings(self) -> dict:
        path = self.path / "damping.json"
        return json.loads(path.read_text())["dampings"] if path.exists() else {}


class ReportResult(Result):
    @property
    def html(self) -> Path:
        return self.file("report.html")

    @property
    def markdown(self) -> Path:
        return self.file("report.md")


def _run(stage: str, function, args, kwargs):
    config_dir = kwargs.pop("config_dir", None)
    return function(settings(stage, *args, config_dir=config_dir, **kwargs))


def train(*args, **kwargs) -> TrainResult:
    """`influence-lab train`: fit the model (or reuse the fitted one)."""
    from .stages.train import train as stage

    return TrainResult("train", _run("train", stage, args, kwargs).path)


def generate(*args, **kwargs) -> GenerateResult:
    """`influence-lab generate`: m outputs per prompt with fixed seeds."""
    from .stages.generate import generate as stage

    return GenerateResult("generate", _run("generate", stage, args, kwargs).path)


def attribute(*args, **kwargs) -> AttributeResult:
    """`influence-lab attribute`: rank the training items behind each prompt's outputs."""
    from .stages.attribute import attribute as stage

    return AttributeResult("attribute", _run("attribute", stage, args, kwargs).path)


def featurise(*args, **kwargs) -> dict[str, int]:
    """`influence-lab featurise`: the gradient methods' training-set features, cached for
    `attribute` and `lds` (`shard=i`: that shard alone); {method: feature rows written or found}."""
    from .stages.featurise import featurise as stage

    return _run("featurise", stage, args, kwargs)


def counterfactual(*args, **kwargs) -> CounterfactualResult:
    """`influence-lab counterfactual`: retrain without each method's top-k and the controls."""
    from .stages.counterfactual import counterfactual as stage

    return CounterfactualResult("counterfactual", _run("counterfactual", stage, args, kwargs).path)


def lds(*args, **kwargs) -> LDSResult | dict[str, LDSResult]:
    """`influence-lab lds`: every method's linear datamodeling score (a dict of results, one per
    run, when the config lists `lds.runs`)."""
    from .stages.lds import lds_stage

    runs = _run("lds", lds_stage, args, kwargs)
    results = {label: LDSResult("lds", run.path) for label, run in runs.items()}
    return next(iter(results.values())) if len(results) == 1 else results


def pipeline(*args, **kwargs) -> CounterfactualResult | dict[str, CounterfactualResult]:
    """`influence-lab pipeline`: train -> generate -> attribute -> counterfactual."""
    from .stages.pipeline import pipeline as stage

    runs = _run("pipeline", stage, args, kwargs)
    results = {label: CounterfactualResult("counterfactual", path) for label, path in runs.items()}
    return next(iter(results.values())) if len(results) == 1 else results


def report(*args, **kwargs) -> ReportResult:
    """`influence-lab report`: the HTML report (and its markdown twin) of one model and dataset."""
    from .stages.report import report as stage

    return ReportResult("report", Path(_run("report", stage, args, kwargs)).parent)
