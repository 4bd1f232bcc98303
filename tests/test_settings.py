"""The typed settings (`influence_lab.settings`): every stage config and experiment preset
validates, every default in conf/ equals the schema's default (and the model and loader code's own
defaults), and a bad value is one sentence naming the field, its value and what is allowed."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

from influence_lab.entry.validation import validate
from influence_lab.errors import InfluenceLabError
from influence_lab.settings import StageSettings, from_config, validated
from influence_lab.settings.attribution import (
    AttributionSettings,
    AutoencoderEmbedder,
    ClassifierEmbedder,
    ModelEmbedder,
    PretrainedEmbedder,
)
from influence_lab.settings.counterfactual_settings import CounterfactualSettings, check_plan
from influence_lab.settings.data import SOURCE_SCHEMAS, DataSettings
from influence_lab.settings.generate_settings import GenerateSettings
from influence_lab.settings.lds_settings import LDSSettings
from influence_lab.settings.logger import CsvLogger, NoLogger, WandbLogger
from influence_lab.settings.model import CharGPTSettings, DDPMSettings, LDMSettings, VAESettings
from influence_lab.settings.paths_settings import PathsSettings
from influence_lab.settings.pipeline_settings import PipelineSettings
from influence_lab.settings.report_settings import ReportSettings
from influence_lab.settings.trainer import TrainerSettings
from influence_lab.stages import STAGES as STAGE_HELP

CONF = Path(__file__).resolve().parents[1] / "conf"
STAGES = tuple(STAGE_HELP)  # every stage of the CLI
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
MODELS = {
    "vae": VAESettings,
    "ddpm": DDPMSettings,
    "ldm": LDMSettings,
    "chargpt": CharGPTSettings,
}
EMBEDDERS = {
    "model": ModelEmbedder,
    "autoencoder": AutoencoderEmbedder,
    "classifier": ClassifierEmbedder,
    "pretrained": PretrainedEmbedder,
}
LOGGERS = {"wandb": WandbLogger, "csv": CsvLogger, "none": NoLogger}
TRAINERS = {
    "cpu": TrainerSettings(),
    "gpu": TrainerSettings(accelerator="gpu", deterministic=False),
}
# the sections each stage's own YAML sets, and their schemas
SECTIONS = {
    "attribute.yaml": {"attribution": AttributionSettings},
    "counterfactual.yaml": {"counterfactual": CounterfactualSettings},
    "lds.yaml": {"lds": LDSSettings},
    "pipeline.yaml": {"pipeline": PipelineSettings},
    "report.yaml": {"report": ReportSettings},
    "common.yaml": {"generate": GenerateSettings},
}


def _compose(stage: str, *overrides: str):
    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        return compose(config_name=stage, overrides=list(overrides))


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _same(yaml_value, schema_value, where: str) -> None:
    """Every value the YAML sets equals the schema's default (interpolations and `???` skipped)."""
    if isinstance(yaml_value, str) and (yaml_value == "???" or yaml_value.startswith("${")):
        return
    if isinstance(yaml_value, dict):
        assert isinstance(schema_value, dict), where
        for key, value in yaml_value.items():
            if key != "defaults":
                assert key in schema_value, f"{where}.{key} has no default in the schema"
                _same(value, schema_value[key], f"{where}.{key}")
        return
    assert yaml_value == schema_value, f"{where}: YAML {yaml_value!r}, schema {schema_value!r}"


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_stage_config_validates(stage, model, tmp_path):
    overrides = [f"model={model}", f"paths.output_dir={tmp_path}"] + (
        ["sweep_dir=x"] if stage == "retrain" else []
    )
    if model == "chargpt":
        overrides.append("data=names")
    settings = from_config(_compose(stage, *overrides))
    assert settings.model.name == model
    if stage != "report":
        assert settings.stage == stage and settings.paths.output_dir == str(tmp_path)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_validates(preset):
    stage = "lds" if "lds_benchmark" in preset else "pipeline"
    settings = from_config(_compose(stage, f"+experiment={preset}"))
    assert settings.group == _yaml(CONF / "experiment" / f"{preset}.yaml").get(
        "group", settings.group
    )
    # an experiment's settings given to a stage that does not use them (no embedders section there)
    for other in ("train", "generate"):
        assert validate(_compose(other, f"+experiment={preset}")).stage == other


def test_yaml_defaults_equal_the_schema_defaults():
    for name, schema in MODELS.items():
        _same(_yaml(CONF / "model" / f"{name}.yaml"), schema().plain(), f"model={name}")
    for name, schema in EMBEDDERS.items():
        _same(_yaml(CONF / "embedder" / f"{name}.yaml"), schema().plain(), f"embedder={name}")
    for name, schema in LOGGERS.items():
        _same(_yaml(CONF / "logger" / f"{name}.yaml"), schema().plain(), f"logger={name}")
    for name, settings in TRAINERS.items():
        _same(_yaml(CONF / "trainer" / f"{name}.yaml"), settings.plain(), f"trainer={name}")
    _same(_yaml(CONF / "paths" / "default.yaml"), PathsSettings().plain(), "paths=default")
    _same(_yaml(CONF / "data" / "digits.yaml"), DataSettings().plain(), "data=digits")
    # a data preset that derives from another (a `defaults` list, e.g. fashion2 from fashion) holds
    # only its deltas; the presets it derives from are compared here
    for path in sorted(p for p in (CONF / "data").glob("*.yaml") if "defaults" not in _yaml(p)):
        source = _yaml(path)["source"]
        loader = source["_target_"].rpartition(".")[2]
        assert loader in SOURCE_SCHEMAS, (
            f"{path.name}: no schema for {loader} in settings.data.SOURCE_SCHEMAS"
        )
        required = {k: "x" for k, v in source.items() if v == "???"}
        _same(source, SOURCE_SCHEMAS[loader](**required).plain(), f"data={path.stem}.source")
    for file, sections in SECTIONS.items():
        text = _yaml(CONF / file)
        for key, schema in sections.items():
            _same(text[key], schema.model_construct().plain(), f"{file}: {key}")
    top = StageSettings().plain()
    for key in ("seed", "force", "group"):
        assert _yaml(CONF / "common.yaml")[key] == top[key], key


def test_code_defaults_equal_the_schema_defaults():
    from influence_lab.data import sources
    from influence_lab.models import DALLE, DDPM, VAE, CharGPT, LatentDDPM
    from influence_lab.models.protocol import DATA_ARGS
    from influence_lab.settings.model import DalleSettings

    for cls, schema in (
        (VAE, VAESettings),
        (DDPM, DDPMSettings),
        (LatentDDPM, LDMSettings),
        (CharGPT, CharGPTSettings),
        (DALLE, DalleSettings),
    ):
        # the constructor takes its schema and the data's arguments, and re-lists no default
        assert cls.settings_class is schema
        params = list(inspect.signature(cls).parameters.values())
        assert params[0].name == "settings" and params[0].annotation in (schema, schema.__name__)
        assert all(p.name in DATA_ARGS for p in params[1:]), cls.__name__
        assert all(p.default is inspect.Parameter.empty for p in params), cls.__name__
        # rebuilt from model.json's plain values, its settings are the schema's defaults
        data = {"vocab": ["digit"], **({"alphabet": "ab"} if cls is CharGPT else {})}
        data |= {} if cls is CharGPT else {"data_shape": [1, 8, 8]}
        model = cls.from_init({**schema().init_args(), **data})
        assert {k: model.hparams[k] for k in schema().init_args()} == schema().init_args()
    for loader, schema in SOURCE_SCHEMAS.items():
        fields = schema.model_fields
        for name, param in inspect.signature(getattr(sources, loader)).parameters.items():
            if param.default is not inspect.Parameter.empty and name in fields:
                want = fields[name].default
                assert param.default == want or list(param.default) == want, (
                    f"{loader}({name}={param.default!r})"
                )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["logger.mode=ofline"],
            "logger.mode is 'ofline'; allowed values are offline, online, disabled.",
        ),
        (["model.hidden=0"], "model.hidden is 0; it must be a positive integer."),
        (
            ["+model.hiden=3"],
            "model.hiden is not a setting here; the settings are _target_, name, conditional, "
            "arch, hidden, latent_dim, cond_dim, beta, lr, weight_decay, fit.",
        ),
        (
            ["counterfactual.seeds=[1,-1]"],
            "counterfactual.seeds has -1; seeds must be integers from 0 to 4294967295.",
        ),
        (
            ["embedders.autoencoder.kind=clip"],
            "embedders.autoencoder.kind is 'clip'; allowed values are model, "
            "autoencoder, classifier, pretrained.",
        ),
        (
            ["logger.name=tensorboard"],
            "logger is 'tensorboard'; allowed values are wandb, csv, none.",
        ),
        (
            ["attribution.methods=[dtrak]"],
            "attribution.methods has dtrak, which needs the model output function 'dtrak', which "
            "VAE (model=vae) does not declare (it has measured).",
        ),
        (
            ["lds.runs=['model=ddpm']"],
            "lds.runs has 'model=ddpm'; each run is a list of overrides, e.g. "
            "[[model=ddpm], [model=vae]].",
        ),
    ],
)
def test_a_bad_value_is_one_sentence(overrides, message):
    stage = "lds" if any(o.startswith("lds.") for o in overrides) else "counterfactual"
    with pytest.raises(InfluenceLabError) as info:
        validate(_compose(stage, *overrides))  # the schema's checks and the method registry's
    assert str(info.value) == message


def test_plain_arguments_are_checked_with_the_same_rules():
    assert check_plan(["topk"], [3], [1], "grouped").k == [3]
    with pytest.raises(
        InfluenceLabError, match=r"^counterfactual.k has 0; each k must be a positive integer.$"
    ):
        check_plan(["topk"], [0], [1], "grouped")
    with pytest.raises(
        InfluenceLabError, match=r"^model.fit.batch_size is 0; it must be a positive integer.$"
    ):
        validated(MODELS["vae"], {"fit": {"batch_size": 0}}, "model")
