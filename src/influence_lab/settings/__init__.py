"""Typed settings of every component, declared once with their defaults (equal to the YAML in conf/)
and validated once at a stage's entry. The bottom layer: imports nothing of the package but
`errors`; it owns the vocabularies (model names, methods, arms, index types, ...) that the
components implementing them import.

One module per component: data, model, trainer, logger, paths, generate, attribution (with index,
gradient and embedders), counterfactual, lds, report, pipeline; `stage` composes them for a stage's
whole config and holds the one conversion from a Hydra config (`from_config`)."""

from .attribution import AttributionSettings, EmbedderSettings, GradientSettings, IndexSettings
from .counterfactual_settings import CounterfactualSettings, PlanSettings, check_plan
from .data import DataSettings
from .generate_settings import GenerateSettings
from .lds_settings import LDSSettings
from .logger import LoggerSettings
from .model import FitSettings, ModelSettings
from .paths_settings import PathsSettings
from .pipeline_settings import PipelineSettings
from .report_settings import ReportSettings
from .review_settings import ReviewSettings
from .rules import Settings, show, validated
from .stage import (
    ReportStageSettings,
    StageSettings,
    from_config,
    not_set,
    run_name,
    section,
)
from .trainer import TrainerSettings

__all__ = [
    "AttributionSettings",
    "EmbedderSettings",
    "GradientSettings",
    "IndexSettings",
    "Settings",
    "show",
    "validated",
    "CounterfactualSettings",
    "PlanSettings",
    "check_plan",
    "DataSettings",
    "GenerateSettings",
    "LDSSettings",
    "LoggerSettings",
    "FitSettings",
    "ModelSettings",
    "PathsSettings",
    "PipelineSettings",
    "ReportSettings",
    "ReportStageSettings",
    "ReviewSettings",
    "StageSettings",
    "from_config",
    "not_set",
    "section",
    "run_name",
    "TrainerSettings",
]
