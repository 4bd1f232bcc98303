"""Signatures of train results stay what they were: every cached result on a user's disk is found
by them, and the README shows the demo's (`vae-digits-2f411ce6e1`).

The digests below were computed from the default configs before the stages handed typed settings
to the pieces (when `train_spec` hashed `OmegaConf.to_container(cfg.data / cfg.model)`). A train
spec hashes data and model as the config gave them (`StageSettings.given`), never a dump of the
settings: a dump fills in schema defaults the YAML leaves out and turns an int given for a float
field into a float, and either would move every signature. A digest here changes only when a
default in conf/ (or the data) does, which invalidates the caches of everyone using it.

The settings that act only when sampling (`SAMPLING_ARGS`: DDPM/LDM `guidance`, CharGPT
`temperature`) left the train spec deliberately: changing them re-samples, never retrains. That
moved the ddpm and chargpt digests once (noted at each); the vae's has no such setting and
stays."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from influence_lab.data import load_data
from influence_lab.settings import from_config
from influence_lab.settings.model import SAMPLING_ARGS
from influence_lab.stages import STAGES
from influence_lab.store.signature import signature
from influence_lab.training.members import member_bundle, member_settings, train_run, train_spec

KNOWN = {  # (stage, overrides) -> the train result's name, as before typed settings
    ("train",): "vae-digits-2f411ce6e1",  # the README's demo
    # ddpm-digits-f26716708e before model.guidance left the train spec (sampling only)
    ("train", "model=ddpm"): "ddpm-digits-590f1fd0a6",
    # chargpt-names-974edee1c3 before model.caption_gain and caption_pos joined chargpt's defaults
    # (commit 71bedf3, a deliberate change of the model); chargpt-names-75aa708928 before
    # model.temperature left the train spec (sampling only)
    ("train", "model=chargpt", "data=names"): "chargpt-names-1789285468",
    ("lds", "model=ddpm"): "ddpm-digits-590f1fd0a6",  # another stage, the same model
}
REMOVED = ["digit-0005", "digit-0001", "digit-0043"]  # a member of the counterfactual sweep
KNOWN_MEMBERS = {  # (removed, seed) -> the member's train result, as before typed settings
    (tuple(REMOVED), 2): "vae-digits-3d6ba409ca",
    ((), 1): "vae-digits-a38589c12c",
}


def compose_cfg(stage: str, *overrides: str):
    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        return compose(config_name=stage, overrides=list(overrides))


def old_train_spec(cfg, bundle) -> dict:
    """`train_spec` as it was, on the raw config (less the sampling-only settings): the reference
    the signatures must keep."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("prompts", None)
    data["exclude_ids"] = sorted(bundle.excluded)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return {
        "data": data,
        "model": {k: v for k, v in model.items() if k not in SAMPLING_ARGS},
        "seed": int(cfg.seed),
        "train_fingerprint": bundle.fingerprint,
    }


def old_member_cfg(base, member: dict):
    """`member_cfg` as it was: a copy of the raw config with the member's changes."""
    mcfg = base.copy()
    mcfg.data.exclude_ids = list(member["removed"])
    mcfg.seed = int(member["seed"])
    mcfg.force = False
    mcfg.logger = OmegaConf.create({"name": "none"})
    mcfg.trainer.progress_bar = False
    return mcfg


@pytest.mark.parametrize("key", list(KNOWN), ids=lambda k: " ".join(k))
def test_default_train_signatures_are_unchanged(key):
    settings = from_config(compose_cfg(*key))
    assert train_run(settings, load_data(settings.data)).path.name == KNOWN[key]


@pytest.mark.parametrize("member", list(KNOWN_MEMBERS), ids=str)
def test_sweep_member_signatures_are_unchanged(member):
    removed, seed = member
    base = from_config(compose_cfg("counterfactual"))
    settings = member_settings(base, {"removed": list(removed), "seed": seed})
    bundle = load_data(settings.data)
    assert sorted(bundle.excluded) == sorted(removed)
    assert train_run(settings, bundle).path.name == KNOWN_MEMBERS[member]
    # the member's data made from the full bundle (as packs do) gives the same result
    made = member_bundle(load_data(base.data), settings)
    assert train_run(settings, made).path.name == KNOWN_MEMBERS[member]


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("model.lr=1",),  # an int for a float field: the settings hold 1.0, the signature 1
        ("model=ddpm", "model.weight_decay=0"),
        ("seed=7", "data.exclude_ids=[digit-0002,digit-0009]"),
        ("data.split.val_fraction=0.2",),
    ],
    ids=lambda o: " ".join(o) or "defaults",
)
def test_train_spec_is_the_config_as_given(overrides):
    cfg = compose_cfg("train", *overrides)
    settings = from_config(cfg)
    bundle = load_data(settings.data)
    assert signature(train_spec(settings, bundle)) == signature(old_train_spec(cfg, bundle))


def test_a_member_is_the_config_as_given_with_its_changes():
    cfg = compose_cfg("counterfactual", "model.lr=1")
    member = {"removed": REMOVED, "seed": 2}
    settings = member_settings(from_config(cfg), member)
    old = old_member_cfg(cfg, member)
    bundle = load_data(settings.data)
    assert signature(train_spec(settings, bundle)) == signature(old_train_spec(old, bundle))
    assert settings.config_yaml() == OmegaConf.to_yaml(old, resolve=True)  # config.yaml
    assert settings.seed == 2 and not settings.force and settings.logger.name == "none"
    assert not settings.trainer.progress_bar and settings.data.exclude_ids == REMOVED
    assert settings.model.lr == 1.0 and isinstance(settings.model.lr, float)
    base = from_config(cfg)  # the base settings are untouched
    assert base.seed == 0 and base.data.exclude_ids == [] and base.trainer.progress_bar


@pytest.mark.parametrize("stage", [s for s in STAGES if s not in ("retrain", "report")])
def test_settings_keep_the_config_they_were_given(stage):
    """Every section a stage hashes (attribution, embedders, lds, counterfactual) and every
    config.yaml it writes come from the config as given, resolved."""
    cfg = compose_cfg(stage)
    settings = from_config(cfg)
    assert settings.given() == OmegaConf.to_container(cfg, resolve=True)
    assert settings.config_yaml() == OmegaConf.to_yaml(cfg, resolve=True)


def test_a_default_the_yaml_leaves_out_is_not_hashed():
    """A setting the config does not give (as a default added to a schema later) has its default
    in the settings but stays out of the signature."""
    plain = OmegaConf.to_container(compose_cfg("train"), resolve=True)
    del plain["model"]["weight_decay"]
    settings = from_config(plain)
    assert settings.model.weight_decay == 0.0
    assert "weight_decay" not in train_spec(settings, load_data(settings.data))["model"]
