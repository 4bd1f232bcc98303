"""A user's own model (examples/custom_model) runs every stage from its README: train ->
attribute -> counterfactual -> report, from the example's folder with its config folder, and a
module outside `plugins` is refused."""

import pandas as pd
import pytest

from tests.conftest import readme_commands, run_example

QUICK = [  # the train signature must be the same for every stage: the same model
    "generate.m=2",
    "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, regular\\, leaning right]",
    "model.fit.max_epochs=5",
]
AFTER_TRAIN = ["embedders.autoencoder.epochs=2"]


@pytest.mark.slow
def test_the_custom_model_example_runs_from_its_readme(tmp_path):
    commands = readme_commands("custom_model")
    assert [c[0] for c in commands] == ["train", "attribute", "counterfactual", "report"]
    out = [f"paths.output_dir={tmp_path}", "logger=none"]
    for args in commands:
        extra = {"report": out, "train": [*out, *QUICK]}.get(args[0], [*out, *QUICK, *AFTER_TRAIN])
        done = run_example("custom_model", [*args, *extra])
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
    done = run_example(
        "custom_model",
        [
            "train",
            "--config-dir",
            "conf",
            "model=tiny_vae",
            "plugins=[]",
            f"paths.output_dir={tmp_path}",
            "logger=none",
        ],
    )
    assert done.returncode == 2
    assert "model._target_ is 'mylab.models.TinyVAE', a class outside the allowed modules" in (
        done.stderr
    )
    assert not list(tmp_path.glob("train/*"))
    wrong = run_example(
        "custom_model",
        [
            "train",
            "--config-dir",
            "conf",
            "model=tiny_vae",
            "model._target_=mylab.models.F",
            f"paths.output_dir={tmp_path}",
            "logger=none",
        ],
    )
    assert wrong.returncode == 2 and "which is not a GenerativeModel" in wrong.stderr
