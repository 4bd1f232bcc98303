import json

import numpy as np
import pandas as pd
import pytest

from influence_lab.stages.generate import generate
from influence_lab.stages.train import train


@pytest.mark.parametrize("model", ["vae", "ddpm", "chargpt"])
def test_train_then_generate_and_reuse(cfg_factory, tmp_path, capsys, model):
    cfg = cfg_factory("generate", "generate.m=3", model=model)
    run = generate(cfg)
    assert run.done
    table = pd.read_parquet(run / "outputs.parquet")
    n_prompts = len(cfg.generate.prompts)
    assert len(table) == 3 * n_prompts
    assert list(table["seed"][:3]) == [0, 1, 2]
    assert set(table["prompt"]) == set(cfg.generate.prompts)
    provenance = json.loads((run / "provenance.json").read_text())
    train_dirs = list((tmp_path / "train").iterdir())
    assert len(train_dirs) == 1  # generate trained the model it needed, once
    assert table["model_signature"].unique().tolist() == [provenance["model_signature"]]
    assert train_dirs[0].name.endswith(provenance["model_signature"])
    for name in (
        "weights.pt",
        "model.json",
        "config.yaml",
        "metrics.json",
        "fingerprint.json",
        "done",
    ):
        assert (train_dirs[0] / name).exists(), name
    metrics = json.loads((train_dirs[0] / "metrics.json").read_text())
    assert np.isfinite(metrics["val/loss"]) and metrics["epochs"] == cfg.model.fit.max_epochs
    if model == "chargpt":
        assert (run / "samples.txt").exists()
        assert all(isinstance(t, str) for t in table["text"])
    else:
        images = np.load(run / "images.npy")
        assert images.shape == (len(table), 1, 8, 8)
        assert (run / "grid.png").stat().st_size > 1000

    weights_mtime = (train_dirs[0] / "weights.pt").stat().st_mtime_ns
    outputs_mtime = (run / "outputs.parquet").stat().st_mtime_ns
    capsys.readouterr()
    again = generate(cfg)
    err = capsys.readouterr().err
    assert again.path == run.path
    assert err.count("reusing") == 2  # the trained model and the generations
    assert (train_dirs[0] / "weights.pt").stat().st_mtime_ns == weights_mtime
    assert (run / "outputs.parquet").stat().st_mtime_ns == outputs_mtime


def test_same_seed_same_generations_and_force_recomputes(cfg_factory, tmp_path):
    cfg = cfg_factory("generate", "generate.m=2")
    first = np.load(generate(cfg) / "images.npy")
    run = train(cfg)
    mtime = (run / "weights.pt").stat().st_mtime_ns
    forced = cfg_factory("generate", "generate.m=2", "force=true")
    second = np.load(generate(forced) / "images.npy")
    assert (
        run / "weights.pt"
    ).stat().st_mtime_ns == mtime  # force recomputes only the stage asked for
    np.testing.assert_array_equal(first, second)
    train(cfg_factory("train", "force=true"))
    assert (run / "weights.pt").stat().st_mtime_ns != mtime  # retrained
    third = np.load(generate(forced) / "images.npy")
    np.testing.assert_array_equal(first, third)  # ... to the same result


def test_a_different_setting_is_a_different_run(cfg_factory, tmp_path):
    a = train(cfg_factory("train"))
    b = train(cfg_factory("train", "seed=1"))
    c = train(cfg_factory("train", "data.exclude_ids=[digit-0001]"))
    assert len({a.path, b.path, c.path}) == 3
    assert json.loads((c / "fingerprint.json").read_text())["excluded"] == ["digit-0001"]
    assert json.loads((c / "fingerprint.json").read_text())["n_train"] == 1616
