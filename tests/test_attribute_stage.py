import numpy as np
import pandas as pd
import pytest

from influence_lab.stages import attribute as attribute_stage
from influence_lab.stages.attribute import attribute
from influence_lab.stages.generate import generate

SMALL = ["generate.m=3", "embedders.autoencoder.epochs=3", "attribution.keep=30"]


def test_attribute_images_end_to_end_and_reuse(cfg_factory, tmp_path, capsys):
    cfg = cfg_factory(
        "attribute",
        *SMALL,
        "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, bold\\, upright]",
    )
    run = attribute(cfg)
    table = pd.read_parquet(run / "attribution.parquet")
    assert set(table.method) == {"paper", "fused", "caption_only", "raw_only", "latent_only"}
    assert table.groupby(["target", "method"]).size().eq(30).all()
    for col in (
        "score",
        "caption_score",
        "raw_cosine",
        "raw_l2",
        "raw_ssim",
        "raw_hist",
        "latent_model",
        "latent_autoencoder",
    ):
        assert col in table and table[col].notna().all(), col
    for (_, _), group in table.groupby(["target", "method"]):
        assert (
            np.diff(group.sort_values("rank")["score"].to_numpy()) <= 1e-12
        ).all()  # ranked by score
    fused = table[(table.method == "fused") & (table.target == 1)]
    assert all("seven" in c for c in fused.caption)  # the prompt filter's pool
    grids = sorted((run / "neighbours").glob("*.png"))
    assert len(grids) == 2 * 5 and all(g.stat().st_size > 2000 for g in grids)
    # model and autoencoder caches, and the classifier's (the paper scorer's space on labelled data)
    assert len(list((tmp_path / "embeddings").iterdir())) == 3
    capsys.readouterr()
    again = attribute(cfg)
    assert again.path == run.path and "reusing attribute result" in capsys.readouterr().err


def test_attribute_names_end_to_end(cfg_factory):
    run = attribute(cfg_factory("attribute", *SMALL, model="chargpt"))
    table = pd.read_parquet(run / "attribution.parquet")
    assert set(table.method) == {"fused", "caption_only", "raw_only", "latent_only"}
    assert {"raw_edit", "raw_ngram", "latent_model", "latent_autoencoder"} <= set(table.columns)
    texts = sorted((run / "neighbours").glob("*.txt"))
    assert len(texts) == 2 * 4
    first = texts[0].read_text()
    assert "outputs:" in first and "most influential training items" in first
    female = table[(table.method == "fused") & (table.prompt == "female first name")]
    assert (female.caption == "female first name").all()


def test_attribute_bad_inputs(cfg_factory, tmp_path, capsys):
    gen = generate(cfg_factory("generate", "generate.m=2"))
    (gen / "outputs.parquet").unlink()  # a finished result missing a file is rebuilt, not used
    assert not gen.done and generate(cfg_factory("generate", "generate.m=2")).done
    assert (gen / "outputs.parquet").exists()
    cases = [
        (
            ["attribution.pool_size=99999"],
            "attribution.pool_size is 99999 but the training set has 1617 items",
        ),
        (["attribution.methods=[best]"], "attribution.methods has 'best'; allowed values are"),
        (["attribution.embedders=[model,clip]"], "attribution.embedders names \\['clip'\\]"),
    ]
    for overrides, message in cases:
        cfg = cfg_factory("attribute", *SMALL, *overrides)
        cfg.generate.m = 3
        with pytest.raises(SystemExit) as info:
            attribute_stage.run(cfg)
        assert info.value.code == 2
        import re

        assert re.search(message, " ".join(capsys.readouterr().err.split())), message
    assert not (tmp_path / "attribute").exists() or not list((tmp_path / "attribute").rglob("done"))
    names = cfg_factory("attribute", *SMALL, "attribution.methods=[paper]", model="chargpt")
    with pytest.raises(SystemExit):
        attribute_stage.run(names)
    assert (
        "attribution.methods has paper, which needs image data, but model=chargpt works on text."
        in " ".join(capsys.readouterr().err.split())
    )


def test_cached_embedding_dimension_mismatch_is_refused(tmp_path):
    from omegaconf import OmegaConf

    from influence_lab.attribution.methods.evidence import _latent
    from influence_lab.errors import InfluenceLabError

    class Cache:
        path = tmp_path
        cfg = OmegaConf.create({"type": "flat", "metric": "ip"})

    from influence_lab.attribution.index import build_index

    Cache.index = build_index(np.ones((5, 8), dtype=np.float32), Cache.cfg)
    with pytest.raises(InfluenceLabError, match="have dimension 8 but the embedder gives 4"):
        _latent(Cache, np.ones((2, 4), dtype=np.float32), 5, np.arange(5), None)
