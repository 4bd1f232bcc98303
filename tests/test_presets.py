"""Every stage composes, alone and with every experiment preset, into a config that resolves fully
and holds what the preset says; every run a preset lists composes into the model and data it names.
No training: composition only (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from influence_lab.stages import STAGES

EXPERIMENTS = Path(__file__).resolve().parents[1] / "conf" / "experiment"
PRESETS = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
RUN_KEYS = ("pipeline.runs", "lds.runs")
# keys a preset file holds that are not config values
NOT_VALUES = ("defaults",)


def test_the_presets_and_stages_are_found():
    assert len(PRESETS) >= 6 and {"paper_unlearning", "planted_canaries", "lds_benchmark"} <= set(
        PRESETS
    )
    assert {
        "train",
        "generate",
        "attribute",
        "counterfactual",
        "retrain",
        "lds",
        "report",
        "pipeline",
    } <= set(STAGES)


@pytest.fixture(scope="module", autouse=True)
def config_module():
    """Hydra initialised once for the module (a compose takes a quarter second; ~70 of them
    here)."""
    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        yield


def compose_stage(stage: str, *overrides: str):
    required = ["sweep_dir=x"] if stage == "retrain" else []  # retrain's sweep_dir is ??? by design
    return compose(config_name=stage, overrides=[*required, *overrides])


def resolved(cfg) -> dict:
    """The whole config with every interpolation resolved; a missing value (???) fails here."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def strings(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from strings(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from strings(value)
    elif isinstance(tree, str):
        yield tree


def leaves(tree: dict, prefix: str = ""):
    """(dotted key, value) of every leaf of a nested dict; lists are leaves (Hydra replaces them
    whole)."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


def preset_deltas(name: str) -> dict:
    """What a preset sets, its parents' deltas (its defaults list) merged under its own, read
    straight from the YAML files rather than through Hydra."""
    raw = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text()) or {}
    merged = OmegaConf.create({})
    for parent in raw.get("defaults", []):
        if isinstance(parent, str) and parent != "_self_":
            merged = OmegaConf.merge(merged, preset_deltas(parent))
    own = {k: v for k, v in raw.items() if k not in NOT_VALUES}
    return OmegaConf.to_container(OmegaConf.merge(merged, own))


def select(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted} is not in the composed config"
        node = node[part]
    return node


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_composes_without_a_preset(stage):
    cfg = compose_stage(stage)
    tree = resolved(cfg)
    assert tree["stage"] == stage
    assert tree["group"] == "default"
    assert tree["model"]["name"] == "vae" and tree["data"]["name"] == "digits"
    assert tree["logger"]["mode"] == "offline"  # W&B offline by default
    assert "hydra" not in tree  # compose leaves Hydra's own (${now:...}) section out
    assert not [s for s in strings(tree) if "${" in s]
    # without a preset there are no extra runs: a stage's run is this config alone
    for key in RUN_KEYS:
        section, _ = key.split(".")
        if section in tree:
            assert select(tree, key) == []
    # the prompts default to the dataset's own, resolved through the interpolation
    assert (
        tree["generate"]["prompts"] == tree["data"]["prompts"]
        and len(tree["data"]["prompts"]) == 10
    )
    if stage == "retrain":
        assert tree["sweep_dir"] == "x"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_composes_with_every_preset(stage, preset, tmp_path):
    base = [f"+experiment={preset}", f"paths.output_dir={tmp_path}", "logger=none"]
    cfg = compose_stage(stage, *base)
    tree = resolved(cfg)
    assert tree["stage"] == stage
    assert tree["group"] == preset  # every preset names its W&B group after its file
    assert not [s for s in strings(tree) if "${" in s]

    # every value the preset (and its parent presets) sets is in the composed config, unchanged;
    # interpolated ones resolve under this call's paths.output_dir
    deltas = preset_deltas(preset)
    assert deltas["group"] == preset
    raw = OmegaConf.to_container(cfg, resolve=False)
    for key, value in leaves(deltas):
        assert select(raw, key) == value, f"{preset}: {key}"
        if isinstance(value, str) and value.startswith("${paths.output_dir}"):
            assert select(tree, key) == f"{tmp_path}{value.removeprefix('${paths.output_dir}')}"

    # the runs the preset lists are the composed config's runs, whatever the stage
    for key, entries in preset_runs(deltas).items():
        assert select(tree, key) == entries, f"{preset}: {key}"


def preset_runs(deltas: dict) -> dict:
    """{"pipeline.runs" | "lds.runs": entries} that a preset sets."""
    return {
        key: deltas[key.split(".")[0]]["runs"]
        for key in RUN_KEYS
        if "runs" in (deltas.get(key.split(".")[0]) or {})
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_every_run_a_preset_lists_composes_into_what_it_asks_for(preset, tmp_path):
    """As `run_configs` does: the stage that reads the runs (pipeline, lds) composed with the call's
    own overrides plus the entry's; model and data are the ones the entry names, other keys its
    values."""
    base = [f"+experiment={preset}", f"paths.output_dir={tmp_path}", "logger=none"]
    listed = preset_runs(preset_deltas(preset))
    assert listed and all(listed.values()), f"{preset} lists no runs"
    for key, entries in listed.items():
        stage = key.split(".")[0]
        for run in entries:
            assert run, f"{preset}: an empty entry in {key}"
            tree = resolved(compose_stage(stage, *base, *run))
            assert tree["group"] == preset and tree["stage"] == stage
            assert (
                select(tree, key) == entries
            )  # the preset is still applied under the run's overrides
            for override in run:
                name, value = override.split("=", 1)
                if name in ("model", "data"):
                    assert tree[name]["name"] == value, f"{preset}: {key} entry {run}"
                else:
                    assert select(tree, name) == yaml.safe_load(value), (
                        f"{preset}: {key} entry {run}"
                    )
