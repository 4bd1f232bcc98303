"""A user's own model (examples/custom_model) runs every stage from its README: train ->
attribute -> counterfactual -> report, from the example's folder with its config folder, and a
module outside `plugins` is refused."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_model"
QUICK = [  # the train signature must be the same for every stage: the same model
    "generate.m=2",
    "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, regular\\, leaning right]",
    "model.fit.max_epochs=5",
]
AFTER_TRAIN = ["embedders.autoencoder.epochs=2"]


def readme_commands() -> list[list[str]]:
    """The influence-lab commands of the example's README, as argument lists."""
    block = re.search(r"```bash\n(.*?)```", (EXAMPLE / "README.md").read_text(), re.S).group(1)
    block = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in block.splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("influence-lab "):
            commands.append([a.strip("'") for a in line.split()[1:]])
    return commands


def run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ".", "WANDB_MODE": "disabled"}
    exe = Path(sys.executable).parent / "influence-lab"
    return subprocess.run(
        [str(exe), *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_the_custom_model_example_runs_from_its_readme(tmp_path):
    commands = readme_commands()
    assert [c[0] for c in commands] == ["train", "attribute", "counterfactual", "report"]
    out = [f"paths.output_dir={tmp_path}", "logger=none"]
    for args in commands:
        extra = {"report": out, "train": [*out, *QUICK]}.get(args[0], [*out, *QUICK, *AFTER_TRAIN])
        done = run([*args, *extra], tmp_path)
        assert done.returncode == 0, f"{args[0]}:\n{done.stderr[-3000:]}"
    train = next(tmp_path.glob("train/tiny_vae-digits-*"))
    assert '"mylab.models.TinyVAE"' in (train / "model.json").read_text()
    rankings = pd.read_parquet(
        next(tmp_path.glob("attribute/tiny_vae-digits-*/attribution.parquet"))
    )
    assert {"fused", "paper"} <= set(rankings.method) and len(rankings) > 0
    sweep = next(tmp_path.glob("counterfactual/tiny_vae-digits-*"))
    stats = pd.read_csv(sweep / "stats.csv")
    assert set(stats.control) == {"random_pool", "random", "none"} and len(stats) > 0
    assert stats.mean_diff.notna().all()
    html = (tmp_path / "report" / "tiny_vae-digits" / "report.html").read_text()
    assert "tiny_vae" in html and "<script" not in html


def test_a_model_outside_plugins_is_refused_before_it_is_imported(tmp_path):
    done = run(
        [
            "train",
            "--config-dir",
            "conf",
            "model=tiny_vae",
            "plugins=[]",
            f"paths.output_dir={tmp_path}",
            "logger=none",
        ],
        tmp_path,
    )
    assert done.returncode == 2
    assert "model._target_ is 'mylab.models.TinyVAE', a class outside the allowed modules" in (
        done.stderr
    )
    assert not list(tmp_path.glob("train/*"))
    wrong = run(
        [
            "train",
            "--config-dir",
            "conf",
            "model=tiny_vae",
            "model._target_=mylab.models.F",
            f"paths.output_dir={tmp_path}",
            "logger=none",
        ],
        tmp_path,
    )
    assert wrong.returncode == 2 and "which is not a GenerativeModel" in wrong.stderr
