"""`influence-lab featurise`: the gradient methods' training-set features ahead of `attribute`. A
Hydra multirun of one job per shard on the joblib launcher writes features equal bit for bit to one
process's (both at one thread, as a SLURM task runs); `attribute` afterwards reads them and computes
no training-set gradient; a bad shard is refused before any model is trained."""

import os
import subprocess

import numpy as np
import pandas as pd
import pytest

from influence_lab.attribution import feature_store
from influence_lab.errors import InfluenceLabError
from influence_lab.stages.attribute import attribute
from influence_lab.stages.featurise import featurise
from tests.conftest import make_cfg, shard_features
from tests.test_faults import EXE

SMALL = [
    "data.source.max_items=300",  # 270 training items: shards 0..4 of 64
    "model.fit.max_epochs=2",
    "logger=none",
    "trainer.progress_bar=false",
    "attribution.methods=[trak]",
    "attribution.gradient.ensemble=2",
    "attribution.gradient.proj_dim=128",
    "+attribution.gradient.shard_size=64",
]


def _featurise(root, *args):
    done = subprocess.run(
        [EXE, "featurise", *args, *SMALL, f"paths.output_dir={root}"],
        capture_output=True, text=True, timeout=900, cwd=root.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_a_joblib_multirun_of_shards_equals_one_process(tmp_path, monkeypatch):
    log = _featurise(
        tmp_path / "multirun", "-m", "shard=range(0,5)", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )  # fmt: skip
    assert "Joblib.Parallel(n_jobs=2" in log  # the jobs ran on the joblib launcher
    for shard in range(5):  # one job per shard, each of both ensemble models
        assert f"featurise trak: shard {shard} of 5 (270 items), 2 model(s)" in " ".join(
            log.split()
        )
    hint = " ".join(_featurise(tmp_path / "one").split())  # one process: the multirun it could be
    assert "featurise -m " in hint and "attribution.methods=[trak]" in hint
    assert "'shard=range(0,5)' hydra/launcher=joblib" in hint
    a, b = shard_features(tmp_path / "multirun"), shard_features(tmp_path / "one")
    assert a.keys() == b.keys() and len(a) == 10  # 5 shards x 2 models
    assert sum(len(v) for v in a.values()) == 2 * 270
    assert all(np.array_equal(a[k], b[k]) for k in a)

    def no_gradients(*args, **kwargs):
        raise AssertionError("attribute recomputed a training-set feature shard")

    monkeypatch.setattr(feature_store, "projected_gradients", no_gradients)
    import influence_lab as il

    root = f"paths.output_dir={tmp_path / 'multirun'}"
    assert il.featurise(*SMALL, root) == {"trak": 2 * 270}  # found, not recomputed
    cfg = make_cfg("attribute", tmp_path / "multirun", *SMALL, "generate.m=2", shrink=False)
    table = pd.read_parquet(attribute(cfg) / "attribution.parquet")
    assert set(table["method"]) == {"trak"} and table["score"].notna().all()


WITHOUT_SHARDS = [o for o in SMALL if "shard_size" not in o]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([*WITHOUT_SHARDS, "shard=1"], "shard is 1 but attribution.gradient.shard_size is not set"),
        ([*SMALL, "shard=5"], "shard is 5; 270 items in shards of 64 make shards 0..4."),
        ([*SMALL, "attribution.methods=[fused]"], "names no gradient method"),
    ],
)
def test_featurise_refuses_before_training(tmp_path, overrides, message):
    cfg = make_cfg("featurise", tmp_path, *overrides, shrink=False)
    with pytest.raises(InfluenceLabError) as refused:
        featurise(cfg)
    assert message in str(refused.value)
    assert not (tmp_path / "train").exists()  # refused before any model was trained
