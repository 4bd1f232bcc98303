"""Planted canaries: added to the training split only, found by attribution for their token."""

import numpy as np
import pandas as pd
import pytest

from influence_lab.data import load_data
from influence_lab.data.canaries import canary_pattern
from influence_lab.stages import train as train_stage
from influence_lab.stages.attribute import attribute
from tests.conftest import run_cli, typed

CANARIES = ["+data.canaries.count=6", "+data.canaries.token=zxq", "+data.canaries.seed=0"]


def test_canaries_join_the_training_split_only(cfg_factory):
    plain = load_data(typed(cfg_factory("train").data))
    bundle = load_data(typed(cfg_factory("train", *CANARIES).data))
    assert len(bundle.train) == len(plain.train) + 6 and len(bundle.val) == len(plain.val)
    ids = [i for i in bundle.train["id"] if i.startswith("canary-")]
    assert ids == [f"canary-{i:03d}" for i in range(6)] and set(ids) <= set(bundle.full["id"])
    rows = bundle.train.select(range(len(bundle.train) - 6, len(bundle.train)))
    assert set(rows["caption"]) == {"zxq pattern"} and "zxq" in " ".join(bundle.captions)
    pattern = canary_pattern((1, 8, 8), 0)
    images = np.asarray(rows.with_format("numpy")["image"])
    assert np.abs(images - pattern[None]).mean() < 0.06  # copies of one pattern, a little noise
    assert bundle.fingerprint != plain.fingerprint


@pytest.mark.parametrize(
    "token,message",
    [
        ("digit", "data.canaries.token 'digit' already occurs in the captions"),
        ("two words", "data.canaries.token is 'two words'; use one word"),
    ],
)
def test_bad_canary_tokens(cfg_factory, capsys, token, message):
    with pytest.raises(SystemExit):
        train_stage.run(
            cfg_factory("train", "+data.canaries.count=3", f"+data.canaries.token='{token}'")
        )
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_attribution_ranks_the_canaries_first_for_their_token(cfg_factory):
    cfg = cfg_factory(
        "attribute",
        *CANARIES,
        "generate.m=3",
        "embedders.autoencoder.epochs=2",
        "attribution.methods=[fused,caption_only]",
        "generate.prompts=[zxq pattern]",
        "model.fit.max_epochs=15",
    )
    table = pd.read_parquet(attribute(cfg) / "attribution.parquet")
    for method in ("fused", "caption_only"):
        top = table[(table.method == method) & (table["rank"] <= 6)]
        assert set(top.id) == {f"canary-{i:03d}" for i in range(6)}, method


@pytest.mark.slow
def test_planted_canaries_small_preset_finds_and_removes_them(tmp_path):
    """The experiment's one command on the small preset: fused's top 10 for the canary prompt are
    the 10 canaries (none for the ordinary prompt), and the retrained model's loss on the canary
    outputs rises more when they are removed than under any control."""
    args = [
        "pipeline",
        "+experiment=planted_canaries_small",
        f"paths.output_dir={tmp_path}",
        "logger=none",
        "trainer.progress_bar=false",
        "model.fit.max_epochs=20",  # 3 epochs learn no pattern: the loss moves by retrain noise
        "embedders.autoencoder.epochs=2",
    ]
    done = run_cli(*args, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "experiments" / "planted_canaries_small"
    canaries = pd.read_csv(folder / "vae-digits" / "canaries.csv").set_index("prompt")
    assert canaries.loc["zxq pattern", "canaries_in_topk"] == 10
    assert canaries.loc["digit zero, regular, upright", "canaries_in_topk"] == 0
    results = pd.read_parquet(next((tmp_path / "counterfactual").iterdir()) / "results.parquet")
    loss = (
        results[(results.metric == "delta_loss") & (results.target == 0) & results.own]
        .groupby("arm")
        .value.mean()
    )
    assert set(loss.index) == {"topk", "random_pool", "random", "none"}
    assert loss["topk"] > loss.drop("topk").max()
    assert "Planted canaries among each method's top-k" in (folder / "RESULTS.md").read_text()


ORDINARY = "digit zero, regular, upright"


def test_canaries_with_an_ordinary_caption_are_found_by_content_alone(cfg_factory):
    """Six canaries captioned like 30-odd real zeros: the prompt filter cannot tell them apart
    (caption_only ranks them no better than their share of the pool), so only the content spaces
    can put them first for outputs that show the pattern (planted: fresh noisy copies of it)."""
    from influence_lab.stages.generate import generate
    from tests.conftest import accept_edits

    canaries = [
        "+data.canaries.count=6",
        "+data.canaries.seed=0",
        f"+data.canaries.caption='{ORDINARY}'",
    ]
    common = [
        *canaries,
        "generate.m=3",
        "generate.prompts=[" + ORDINARY.replace(",", "\\,") + "]",
    ]
    gen = generate(cfg_factory("generate", *common))
    bundle = load_data(typed(cfg_factory("train", *canaries).data))
    rows = bundle.train.select(range(len(bundle.train) - 6, len(bundle.train)))
    assert set(rows["caption"]) == {ORDINARY} and rows["id"][0] == "canary-000"
    assert sum(c == ORDINARY for c in bundle.train["caption"]) > 20  # many real items share it
    rng = np.random.default_rng(11)
    pattern = canary_pattern((1, 8, 8), 0)
    outputs = np.clip(pattern[None] + 0.05 * rng.standard_normal((3, 1, 8, 8)), 0, 1)
    np.save(gen / "images.npy", outputs.astype(np.float32))
    accept_edits(gen)
    methods = "[fused,raw_only,caption_only,latent:autoencoder]"
    cfg = cfg_factory(
        "attribute",
        *common,
        f"attribution.methods={methods}",
        "embedders.autoencoder.epochs=5",
        "attribution.keep=40",
    )
    table = pd.read_parquet(attribute(cfg) / "attribution.parquet")

    def canaries_in_top6(method: str) -> int:
        top = table[(table.method == method) & (table["rank"] <= 6)]
        return int(top.id.str.startswith("canary-").sum())

    for method in ("fused", "raw_only", "latent:autoencoder"):
        assert canaries_in_top6(method) == 6, method
    assert canaries_in_top6("caption_only") <= 2  # the filter alone: no better than chance
