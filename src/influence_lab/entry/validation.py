"""Every check of a stage's config that needs no data, run at the stage's entry before any
directory is created: no resolver that runs code, an output directory that can be made, every
setting against its schema (`settings.from_config`, the one conversion to typed settings) and what
the machine must offer (a GPU when asked for, the Hydra launcher, a pretrained embedder's weights
file). The checks that need the machine live beside what they check; this module only calls them."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from ..errors import InfluenceLabError
from ..settings import ReportStageSettings, StageSettings, from_config
from ..store.paths import check_output_dir
from .plan import plan_of


def validate(
    cfg: DictConfig, overrides: list[str] | None = None
) -> StageSettings | ReportStageSettings:
    """A stage's config checked and returned as typed settings (remembering the `overrides` it was
    composed with); the first bad setting raises one sentence naming it (an InfluenceLabError)."""
    check_resolvers(cfg)
    if "paths" in cfg:
        check_output_dir(cfg.paths.output_dir)
    settings = from_config(cfg)
    if isinstance(settings, StageSettings):
        # imported here: these pull in torch and Lightning, which `report` (ReportStageSettings)
        # does not need; every other stage imports them anyway
        from ..attribution.embedders import check_weights
        from ..evaluation.launch import check_launcher
        from ..models.build import allow_plugins
        from ..training.devices import check_accelerator

        check_accelerator(settings.trainer)
        if settings.counterfactual is not None:
            check_launcher(settings.counterfactual.launcher)
        for name in settings.embedders_used():
            check_weights(name, settings.embedders[name])
        settings._overrides = list(overrides or [])
        allow_plugins(settings.plugins)
        plan_of(settings)  # the model class and the methods, resolved and checked once
    return settings


# OmegaConf's and Hydra's own resolvers; none of them runs code. influence-lab registers none.
SAFE_RESOLVERS = (
    "oc.env",
    "oc.select",
    "oc.decode",
    "oc.create",
    "oc.deprecated",
    "oc.dict.keys",
    "oc.dict.values",
    "now",
    "hydra",
    "python_version",
)
_RESOLVER = re.compile(r"(?<!\\)\$\{\s*([^\s:{}]+)\s*:")


def check_resolvers(cfg: DictConfig) -> None:
    """Refuse any interpolation `${name:...}` whose resolver is not one of SAFE_RESOLVERS, before
    anything is resolved (OmegaConf would refuse an unregistered one too, with a traceback)."""

    def walk(node, key: str):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, str):
            bad = [r for r in _RESOLVER.findall(node) if r not in SAFE_RESOLVERS]
            if bad:
                raise InfluenceLabError(
                    f"{key} uses the resolver '{bad[0]}' ({node}); "
                    "influence-lab evaluates no code in its "
                    f"config, and the resolvers allowed are {', '.join(SAFE_RESOLVERS)}."
                )

    walk(OmegaConf.to_container(cfg, resolve=False), "")
