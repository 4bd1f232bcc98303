"""A stage's whole config as typed settings, and the one conversion from a Hydra config to them.

`from_config(cfg)` is the only place a `DictConfig` becomes settings: a setting left at Hydra's
`???` is named first, then every section is validated by its schema and the checks across
sections run (`StageSettings`). The report stage reads only names and `report.*`
(`ReportStageSettings`), so a report of `data=imagefolder` needs no folder.

The settings keep the resolved config they were validated from (`StageSettings.given`): signatures
and the config.yaml a result records are made from it, so they stay what the user's config gave.
`replaced` makes a typed copy with some settings changed (upstream stages, members of a sweep), in
the settings and in that config alike."""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ..errors import InfluenceLabError
from .attribution import AttributionSettings, EmbedderSettings, method_list
from .calibrate_settings import CalibrateSettings
from .counterfactual_settings import CounterfactualSettings
from .data import DataSettings
from .generate_settings import GenerateSettings
from .lds_settings import LDSSettings
from .logger import LoggerSettings, WandbLogger
from .model import ModelSettings, VAESettings
from .paths_settings import PathsSettings
from .pipeline_settings import PipelineSettings
from .report_settings import ReportSettings
from .review_settings import ReviewSettings
from .rules import (
    Bool,
    NonNegativeIntOrNull,
    PositiveInt,
    Seed,
    Settings,
    a_list,
    fail,
    rule,
    validated,
)
from .trainer import TrainerSettings

# replicate r (and calibrate's null run r) shifts the model, generation and retrain seeds by
# r * SEED_STRIDE (counterfactual.replicates)
SEED_STRIDE = 1000

STAGES = (
    "train",
    "generate",
    "attribute",
    "counterfactual",
    "retrain",
    "featurise",
    "lds",
    "report",
    "pipeline",
    "calibrate",
    "review",
)
MISSING = "???"
# what to say about a required setting that is not set (Hydra's `???`)
NOT_SET_HINTS = {
    "data.source.path": "point it at a folder of images, e.g. data.source.path=/path/to/folder",
    "data.prompts": "give the prompts to sample, e.g. data.prompts='[a red circle]'",
    "data.source.name": "name a Hugging Face dataset, e.g. data.source.name=ylecun/mnist",
    "sweep_dir": "influence-lab counterfactual launches retrain with the sweep directory",
}
IGNORED = ("hydra",)  # Hydra's own node, when a config carries it


MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")  # a dotted Python module path
ModulePrefix = Annotated[
    str,
    rule(
        lambda v: isinstance(v, str) and MODULE_PATH.fullmatch(v),
        "{key} {is} {value}; give a Python module path, e.g. mylab.models.",
    ),
]


class StageSettings(Settings):
    """Every section a stage's config may hold; the sections a stage does not use are absent
    (None)."""

    stage: str = "train"
    seed: Seed = 0  # training seed (initialisation, batch order, noise)
    force: Bool = False  # true: recompute even if a complete result with the same signature exists
    group: str = "default"  # W&B group (an experiment config sets its own name)
    # module prefixes whose GenerativeModel classes `model._target_` may name (besides
    # influence_lab.models); nothing outside them is imported
    plugins: Annotated[list[ModulePrefix], a_list("[mylab.models]")] = []
    # counterfactual, pipeline: rerun everything random in the chain this many times (replicate r
    # shifts the model, generation and retrain seeds by r * 1000 and the embedder and projection
    # seeds by r) and pool the statistics over replicates, then prompts
    replicates: PositiveInt = 1
    paths: PathsSettings = Field(default_factory=PathsSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    logger: LoggerSettings = Field(default_factory=WandbLogger)
    model: ModelSettings = Field(default_factory=VAESettings)
    data: DataSettings = Field(default_factory=DataSettings)
    generate: GenerateSettings = Field(
        default_factory=GenerateSettings.model_construct
    )  # prompts: data.prompts
    attribution: AttributionSettings | None = None
    embedders: dict[str, EmbedderSettings] | None = None
    counterfactual: CounterfactualSettings | None = None
    lds: LDSSettings | None = None
    pipeline: PipelineSettings | None = None
    calibrate: CalibrateSettings | None = None
    review: ReviewSettings | None = None
    report: ReportSettings | None = None
    sweep_dir: str | None = (
        None  # retrain: the counterfactual run directory holding plan.json and config.yaml
    )
    job: int | None = None  # retrain: which job of plan.json to run
    # featurise: which shard of attribution.gradient.shard_size items (None: every shard)
    shard: NonNegativeIntOrNull = None

    # The resolved config these settings were validated from, as plain values (set by from_config).
    # Signatures hash sections of it (a train result's data and model) and config.yaml records it,
    # never a dump of the settings: a dump fills in the schema's defaults for keys the YAML leaves
    # out and turns an int given for a float field into a float (`model.lr=1` -> 1.0), so a default
    # added to a schema later, or a coercion, would change the signatures every cached result on
    # users' disks is found by.
    _given: dict | None = PrivateAttr(default=None)
    # The overrides the config was composed with (the command line's, or the Python API's): the
    # runs of an experiment (`pipeline.runs`, `lds.runs`) add theirs to them.
    _overrides: list[str] = PrivateAttr(default_factory=list)
    # What these settings resolve to (entry/plan.Plan: the model class, the methods' classes), set
    # at the stage's entry; a copy made by `replaced` resolves its own.
    _plan: Any = PrivateAttr(default=None)

    def given(self, *keys: str) -> Any:
        """A copy of the config at `keys` (e.g. `given("data")`, `given("embedders", "model")`,
        all of it without keys) as it was given, resolved; settings not made by `from_config`
        give their own values instead."""
        node = self._given if self._given is not None else self.model_dump(by_alias=True)
        for key in keys:
            node = node[key]
        return copy.deepcopy(node)

    def replaced(self, changes: dict[str, Any]) -> StageSettings:
        """A copy with the settings at dotted keys changed (e.g. `{"seed": 1, "data.exclude_ids":
        [...]}`): in the typed settings (a nested `model_copy`; nothing is validated again) and in
        the config they were given as. A value may be settings (e.g. `NoLogger()`): the config
        records its plain values."""
        out = self
        for key, value in changes.items():
            out = _replace(out, key.split("."), value)
        if self._given is not None:
            given = copy.deepcopy(self._given)
            for key, value in changes.items():
                *parents, last = key.split(".")
                node = given
                for part in parents:
                    node = node[part]
                node[last] = value.plain() if isinstance(value, Settings) else copy.deepcopy(value)
            out._given = given
        out._plan = None
        return out

    def config_yaml(self) -> str:
        """The config as YAML, resolved, as a result records it (`config.yaml`)."""
        from omegaconf import OmegaConf

        return OmegaConf.to_yaml(OmegaConf.create(self.given()))

    @model_validator(mode="after")
    def _across_sections(self):
        if self.attribution is not None:
            self._check_attribution()
        if self.counterfactual is not None:
            self._check_counterfactual()
        return self

    def known_embedders(self, names: list[str], key: str) -> None:
        known = list(self.embedders or {})
        unknown = [n for n in names if n not in known]
        if unknown:
            fail(
                f"{key} names {unknown}, which have no settings under embedders "
                f"(known: {', '.join(known)})."
            )

    def _check_attribution(self) -> None:
        """The embedders named exist; each method's needs (model output functions, data kind,
        embedders) are the attribution registry's to check, at the stage's entry."""
        self.known_embedders(self.attribution.embedders, "attribution.embedders")

    def _check_counterfactual(self) -> None:
        cf, attribution = self.counterfactual, self.attribution
        named = method_list(cf.methods)
        attributed = method_list(attribution.methods) if attribution else None
        if named and attributed is not None:
            missing = [m for m in named if m not in attributed]
            if missing:
                fail(
                    f"counterfactual.methods has {missing}, "
                    "which attribution.methods does not include "
                    f"({', '.join(attributed)}); add them to attribution.methods."
                )
        if cf.nulls and (
            "topk" not in cf.arms or not set(cf.arms) & {"random_pool", "random", "none"}
        ):
            fail("counterfactual.nulls needs topk and at least one control in counterfactual.arms.")
        if (self.replicates > 1 or self.stage == "calibrate") and (
            max(cf.seeds) - min(cf.seeds) >= SEED_STRIDE
        ):
            fail(
                f"counterfactual.seeds spans {min(cf.seeds)}..{max(cf.seeds)}, but replicates (and "
                f"calibrate's null runs) shift every seed by {SEED_STRIDE}: one replicate would "
                f"retrain another's models; keep the seeds within {SEED_STRIDE - 1} of each other."
            )
        if "none" in cf.arms and self.seed in cf.seeds:
            others = [s for s in range(self.seed + 1, self.seed + 10) if s not in cf.seeds][:2]
            fail(
                f"counterfactual.seeds has {self.seed}, the full model's own seed (seed="
                f"{self.seed}): the `none` arm would retrain the full model exactly and measure "
                f"nothing; give other seeds, e.g. counterfactual.seeds=[{others[0]},{others[1]}]."
            )
        keep = attribution.keep if attribution else None
        for k in cf.k:
            if keep is not None and k > keep:
                fail(
                    f"counterfactual.k has {k} but attribution.keep is {keep}; "
                    "each k must be at most "
                    f"attribution.keep (the ranked items kept per prompt)."
                )
        self.known_embedders(cf.embedders, "counterfactual.embedders")

    def embedders_used(self) -> list[str]:
        """The embedders a stage builds: those of attribution.embedders and
        counterfactual.embedders."""
        names = list(self.attribution.embedders) if self.attribution else []
        if self.counterfactual is not None:
            names += [n for n in self.counterfactual.embedders if n not in names]
        return names


def _replace(settings: Settings, path: list[str], value: Any) -> Settings:
    """A copy of `settings` with the setting at `path` (field names) set to `value`."""
    name = path[0]
    if len(path) > 1:
        inner = settings[name] if isinstance(settings, dict) else getattr(settings, name)
        value = _replace(inner, path[1:], value)
    if isinstance(settings, dict):  # a section of named settings (`embedders`)
        return {**settings, name: value}
    return settings.model_copy(update={name: value})


class Named(Settings):
    """A section of which only the name is read."""

    model_config = ConfigDict(extra="allow")
    name: str


class ReportStageSettings(Settings):
    """The report stage reads only the names of model and data, paths and report.*."""

    model_config = ConfigDict(extra="ignore")
    stage: str = "report"
    paths: PathsSettings = Field(default_factory=PathsSettings)
    model: Named
    data: Named
    report: ReportSettings = Field(default_factory=ReportSettings)


def run_name(settings) -> str:
    """The name every result of a model on a dataset carries, `<model>-<data>` (e.g.
    `vae-digits`): its folder under each stage is `<run_name>-<signature>`."""
    return f"{settings.model.name}-{settings.data.name}"


# ---------------------------------------------------------------- from a Hydra config


def not_set(key: str) -> InfluenceLabError:
    hint = NOT_SET_HINTS.get(key, f"give it on the command line, e.g. {key}=VALUE")
    return InfluenceLabError(f"{key} is not set; {hint}.")


def missing_keys(tree, key: str = "") -> list[str]:
    """The settings still at Hydra's `???` (not set) in a plain, unresolved config tree."""
    if isinstance(tree, dict):
        return [
            m for k, v in tree.items() for m in missing_keys(v, f"{key}.{k}" if key else str(k))
        ]
    return [key] if tree == MISSING else []


def section(schema, cfg, prefix: str):
    """One section of a config (e.g. `cfg.data`, a DictConfig or plain values; settings pass through
    as they are) as the settings `schema` describes, for the pieces that are handed a raw section
    (tests, notebooks)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, Settings):
        return cfg
    if isinstance(cfg, DictConfig):
        for key in missing_keys(OmegaConf.to_container(cfg, resolve=False), prefix):
            raise not_set(key)
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return validated(schema, cfg, prefix)


# sections an experiment preset sets for the stages that read them (`+experiment=...` may be given
# to any stage); train and generate read none of them, so they are dropped there, unchecked
NOT_READ = dict.fromkeys(
    ("train", "generate"),
    ("attribution", "embedders", "counterfactual", "lds", "pipeline", "calibrate", "review"),
)


def from_config(cfg) -> StageSettings | ReportStageSettings:
    """A stage's Hydra config (a DictConfig, or the same as plain containers) as typed settings; the
    first bad setting raises one sentence naming it (an InfluenceLabError)."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    raw = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    unread = NOT_READ.get(raw.get("stage"), ())
    raw = {k: v for k, v in raw.items() if k not in IGNORED and k not in unread}
    if raw.get("stage") == "report":
        sections = {k: raw[k] for k in ("stage", "paths", "report") if k in raw}
        sections.update({k: {"name": (raw.get(k) or {}).get("name")} for k in ("model", "data")})
        try:
            sections = OmegaConf.to_container(OmegaConf.create(sections), resolve=True)
        except OmegaConfBaseException as exc:
            raise InfluenceLabError(f"the config cannot be resolved: {exc}") from None
        return validated(ReportStageSettings, sections)
    for key in missing_keys(raw):
        raise not_set(key)
    try:
        plain = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    except OmegaConfBaseException as exc:
        raise InfluenceLabError(f"the config cannot be resolved: {exc}") from None
    settings = validated(StageSettings, plain)
    settings._given = copy.deepcopy(plain)  # see StageSettings._given
    return settings
