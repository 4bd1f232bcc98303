"""Compose stage configs with Hydra's compose API, shrunk to run in seconds, writing to tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

os.environ.setdefault("WANDB_SILENT", "true")

# small but real settings per model: few epochs, short diffusion chain, few names
SHRINK = {
    "vae": ["model.fit.max_epochs=3"],
    "ddpm": ["model.fit.max_epochs=3", "model.timesteps=20", "model.hidden=64"],
    "ldm": [
        "model.fit.max_epochs=3",
        "model.timesteps=20",
        "model.hidden=64",
        "model.depth=2",
        "model.ae_hidden=64",
        "model.ae_epochs=3",
    ],
    "chargpt": [
        "model.fit.max_epochs=2",
        "model.n_layer=1",
        "model.n_embd=32",
        "data=names",
        "data.source.max_per_list=150",
    ],
    "dalle": [
        "model.fit.max_epochs=2",
        "model.depth=1",
        "model.dim=32",
        "model.heads=2",
        "model.codebook_size=32",
        "model.tok_hidden=16",
        "model.tok_epochs=5",
    ],
}


def make_cfg(stage: str, tmp_path, *overrides: str, model: str = "vae", shrink: bool = True):
    args = [
        f"model={model}",
        f"paths.output_dir={tmp_path}",
        "logger=none",
        "trainer.progress_bar=false",
    ]
    if shrink:
        args += SHRINK[model]
    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        return compose(config_name=stage, overrides=[*args, *overrides])


# the schema of each config section the pieces (load_data, build_model, fit, ...) take typed
SECTION_SCHEMAS = {
    "data": "DataSettings",
    "model": "ModelSettings",
    "model.fit": "FitSettings",
    "trainer": "TrainerSettings",
    "attribution.index": "IndexSettings",
}


def typed(node, key: str | None = None):
    """A composed config's section as the typed settings the pieces below the stages take (the
    stages convert the whole config once at their entry; a test handing a piece one section converts
    that section here). `key` names the section where the node no longer knows it (a merge)."""
    import influence_lab.settings as schemas

    key = key or node._get_full_key(None)
    return schemas.section(getattr(schemas, SECTION_SCHEMAS[key]), node, key)


@pytest.fixture
def cfg_factory(tmp_path):
    def factory(stage: str, *overrides: str, model: str = "vae", shrink: bool = True):
        return make_cfg(stage, tmp_path, *overrides, model=model, shrink=shrink)

    return factory


def accept_edits(run) -> None:
    """Re-mark a finished result after a test edited its files on purpose (planted outputs); else
    the hashes recorded when it was written make the next stage rebuild it."""
    import json

    info = json.loads((run / "done").read_text())
    run.mark_done({k: v for k, v in info.items() if k not in ("finished", "signature", "sha256")})


def stage_error(stage_module, cfg, capsys) -> str:
    """Run a stage that must refuse its input: exit status 2; returns stderr with whitespace
    collapsed (the console wraps long lines)."""
    with pytest.raises(SystemExit) as exit_info:
        stage_module.run(cfg)
    assert exit_info.value.code == 2
    return " ".join(capsys.readouterr().err.split())


def run_cli(
    *args: str, cwd, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`influence-lab ARGS` in a child process (W&B disabled; `env` added to the environment);
    its exit status and output."""
    env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    exe = Path(sys.executable).parent / "influence-lab"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def prompt_match_by_hand(output_root: Path, generate_dir: Path) -> float:
    """The share of a digits generate result's outputs that the cached judge CNN assigns to the
    prompt's digit, recomputed from its weights and the stored outputs."""
    import numpy as np
    import torch

    from influence_lab.models.classifier import LabelCNN
    from influence_lab.store.records import load_outputs

    (cache,) = (Path(output_root) / "embedders").glob("classifier-*")
    net = LabelCNN(1, 10)
    net.load_state_dict(torch.load(cache / "weights.pt", weights_only=True))
    net.eval()
    prompts, outputs, _ = load_outputs(generate_dir)
    want = [
        next(i for i, w in enumerate(DIGIT_WORDS) if w in prompt.split(", ")[0].split())
        for prompt, images in zip(prompts, outputs, strict=True)
        for _ in images
    ]
    x = torch.as_tensor(np.clip(np.concatenate(outputs).astype(np.float32), 0, 1))
    with torch.no_grad():  # one batch, as the stage's judge reads them
        got = torch.cat([net(b).argmax(1) for b in x.split(512)]).numpy()
    return float((got == np.array(want)).mean())


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def readme_commands(example: str, after: str = "") -> list[list[str]]:
    """The influence-lab commands of the first ```bash block of examples/<example>/README.md
    that starts with `after`, as argument lists (quotes stripped, continuation lines joined)."""
    import re

    text = (EXAMPLES / example / "README.md").read_text()
    block = re.search(r"```bash\n" + re.escape(after) + r"(.*?)```", text, re.S).group(1)
    block = re.sub(r"\\\n\s*", " ", block)
    return [
        [a.strip("'") for a in line.split("#")[0].split()[1:]]
        for line in block.splitlines()
        if line.strip().startswith("influence-lab ")
    ]


def run_example(example: str, args: list[str], timeout: int = 1800) -> subprocess.CompletedProcess:
    """The CLI run from examples/<example> with its module importable (`PYTHONPATH=.`); stderr
    with the console's line wrapping undone."""
    env = {**os.environ, "PYTHONPATH": ".", "WANDB_MODE": "disabled"}
    exe = Path(sys.executable).parent / "influence-lab"
    done = subprocess.run(
        [str(exe), *args],
        cwd=EXAMPLES / example,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    done.stderr = " ".join(done.stderr.split())
    return done


def shard_features(root: Path) -> dict:
    """{shard signature: features} of every finished feature shard under an output root."""
    import json

    import numpy as np

    return {
        json.loads(done.read_text())["signature"]: np.load(done.parent / "features.npy")
        for done in Path(root, "features").glob("*-shard-*/done")
    }


CANARIES = ["+data.canaries.count=6", "+data.canaries.token=zxq", "+data.canaries.seed=0"]


@pytest.fixture(scope="session")
def canary_vae(tmp_path_factory):
    """(output root, bundle): a VAE fitted for 60 epochs on 270 digits and 6 planted canaries
    (copies of one pattern, caption "zxq pattern"), saved under `<root>/model`."""
    from influence_lab.data import load_data
    from influence_lab.models.build import build_model, save_model
    from influence_lab.training.fit import fit

    tmp = tmp_path_factory.mktemp("canary-vae")
    cfg = make_cfg("train", tmp, "data.source.max_items=300", "model.fit.max_epochs=60", *CANARIES)
    bundle = load_data(typed(cfg.data))
    model = build_model(typed(cfg.model), bundle, seed=0)
    fit(model, bundle, typed(cfg.model.fit), typed(cfg.trainer), tmp / "run", seed=0)
    save_model(model, tmp / "model")
    return tmp, bundle


def prepared_method(trained, name: str, attribution: dict | None = None):
    """The built-in method `name` prepared on a saved model `(root, bundle)` (`root/model`)."""
    from influence_lab.attribution.methods import AttributionContext, registry
    from influence_lab.settings import AttributionSettings

    root, bundle = trained
    settings = AttributionSettings.model_validate(attribution or {})
    context = AttributionContext(settings, bundle, root, Path(root, "model"), "vae-test")
    method = registry.methods_named([name], settings)[0].build()
    method.prepare(context)
    return method


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster (Debian's `postgresql`; `.ci/run` installs it) for the
    session; tests take a fresh database of it with `postgres_url`. Skipped where PostgreSQL is not
    installed, unless REQUIRE_POSTGRES is set (CI), where that fails."""
    from .postgres_cluster import postgres_bin, throwaway_cluster

    if postgres_bin() is None:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("REQUIRE_POSTGRES is set but PostgreSQL is not installed")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with throwaway_cluster() as prefix:
        yield prefix


@pytest.fixture
def postgres_url(postgres_cluster):
    from .postgres_cluster import new_database

    return new_database(postgres_cluster)


def chromium_path() -> str:
    """The Debian Chromium the browser tests drive (the report's screenshots, the review app);
    skips without it, unless REQUIRE_BROWSER is set (CI installs it), where that fails."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found and os.environ.get("REQUIRE_BROWSER"):
        pytest.fail("REQUIRE_BROWSER is set but chromium is not installed")
    if not found:
        pytest.skip("chromium is not installed (CI installs it)")
    return found
