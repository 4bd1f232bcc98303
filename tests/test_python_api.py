"""The Python API read as a notebook: `import influence_lab as il`, run the stages with the CLI's
overrides as keywords, look at the tables as DataFrames, and share the cache with the CLI both
ways."""

import pandas as pd
import pytest

import influence_lab as il
from influence_lab.api import hydra_value, overrides_of
from tests.conftest import prompt_match_by_hand, run_cli

PROMPTS = ["digit zero, regular, upright", "digit seven, regular, leaning right"]


@pytest.fixture
def small(tmp_path):
    """The keyword overrides of a small run writing into tmp_path."""
    return {
        "paths__output_dir": str(tmp_path),
        "logger": "none",
        "model__fit__max_epochs": 3,
        "generate__m": 2,
        "generate__prompts": PROMPTS,
    }


SEARCH = {"embedders__autoencoder__epochs": 2, "attribution__methods": ["fused", "raw_only"]}


def test_keywords_become_the_clis_overrides():
    assert overrides_of(
        ("seed=1", ["force=true"]),
        {"model__fit__max_epochs": 3, "generate__prompts": PROMPTS, "experiment": "x"},
    ) == [
        "seed=1",
        "force=true",
        "model.fit.max_epochs=3",
        "generate.prompts=['digit zero, regular, upright','digit seven, regular, leaning right']",
        "+experiment=x",
    ]
    assert [hydra_value(v) for v in (None, True, 0.5, "it's", "null", {"a": 1})] == [
        "null",
        "true",
        "0.5",
        "'it\\'s'",
        "'null'",
        "{a:1}",
    ]


@pytest.mark.slow
def test_a_notebook_session(small, tmp_path, capsys):
    # train and sample: the result knows its folder, metrics and pictures
    model = il.train(**small)
    assert model.path.parent == tmp_path / "train" and model.path.name.startswith("vae-digits-")
    assert model.metrics["val/loss"] > 0 and model.samples.exists()
    assert model.model().kind == "image"
    samples = il.generate(**small)
    assert len(samples.outputs) == 4 and set(samples.outputs.prompt) == set(PROMPTS)
    assert samples.quality["prompt_match"] == prompt_match_by_hand(tmp_path, samples.path)

    # attribute: the rankings as a DataFrame, the top items of a method
    run = il.attribute(**small, **SEARCH)
    assert isinstance(run.rankings, pd.DataFrame)
    assert set(run.rankings.method) == {"fused", "raw_only"}
    top = run.top("fused", k=3)
    assert len(top) == 3 * 2 and (top["rank"] <= 3).all()
    assert run.neighbours

    # the CLI finds the same result (same signature), and computes nothing
    cli_args = [f"{k.replace('__', '.')}={hydra_value(v)}" for k, v in small.items()]
    search = [f"{k.replace('__', '.')}={hydra_value(v)}" for k, v in SEARCH.items()]
    done = run_cli("attribute", *cli_args, *search, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"reusing attribute result {run.path}" in " ".join(done.stderr.split())

    # ... and back: a result the CLI made is reused from Python
    done = run_cli("generate", *cli_args, "generate.m=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    capsys.readouterr()
    again = il.generate(**{**small, "generate__m": 3})
    assert "reusing generate result" in capsys.readouterr().err
    assert len(again.outputs) == 6

    # a counterfactual sweep: the statistics as a DataFrame
    sweep = il.counterfactual(
        **small,
        **SEARCH,
        counterfactual__methods=["fused"],
        counterfactual__k=[5],
        counterfactual__seeds=[1],
    )
    assert set(sweep.stats.control) == {"random_pool", "random", "none"}
    assert sweep.stats.mean_diff.notna().all() and len(sweep.results) > 0
    assert sweep.chart.exists() and sweep.forest.exists()

    # LDS on a few subset models, then the report of everything
    scores = il.lds(
        **small,
        **SEARCH,
        lds__subsets=4,
        lds__seeds=[1, 2],
        lds__pack_size=8,
        lds__methods=["raw_only"],
        lds__track_items=2,
        lds__memorization_top=4,
    )
    assert set(scores.lds.method) == {"raw_only", "retraining", "ceiling"}
    assert len(scores.per_target) == 4
    page = il.report(paths__output_dir=str(tmp_path))
    assert page.html.exists() and "<script" not in page.html.read_text()


def test_a_bad_setting_raises_one_sentence(small):
    with pytest.raises(il.InfluenceLabError, match=r"model.fit.max_epochs is -1"):
        il.train(**{**small, "model__fit__max_epochs": -1})
    with pytest.raises(
        il.InfluenceLabError, match=r"the train config cannot be composed: .*embedders"
    ):
        il.train(**small, **SEARCH)  # the train stage has no embedders
