"""Settings that act only when sampling (DDPM/LDM `model.guidance`, CharGPT `model.temperature`)
are no part of a train signature: changing them re-samples, never retrains."""

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from influence_lab.data import load_data
from influence_lab.settings import from_config
from influence_lab.stages.generate import generate
from influence_lab.training.members import train_run

SMALL = ["data.source.max_items=200", "generate.m=2", "model.fit.snapshots=null"]


@pytest.mark.parametrize(
    "overrides,changed",
    [
        (["model=ddpm"], "model.guidance=3"),
        (["model=ldm"], "model.guidance=1"),
        (["model=chargpt", "data=names"], "model.temperature=0.5"),
    ],
)
def test_sampling_settings_leave_the_train_signature(overrides, changed):
    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        before = from_config(compose(config_name="generate", overrides=overrides))
        after = from_config(compose(config_name="generate", overrides=[*overrides, changed]))
    assert before.model.sampling_args() != after.model.sampling_args()
    bundle = load_data(before.data)
    assert train_run(before, bundle).signature == train_run(after, bundle).signature


def test_a_changed_guidance_resamples_without_retraining(cfg_factory, tmp_path, capsys):
    plain = generate(cfg_factory("generate", *SMALL, "model.guidance=1", model="ddpm"))
    trained = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert len(trained) == 1
    capsys.readouterr()
    guided = generate(cfg_factory("generate", *SMALL, "model.guidance=3", model="ddpm"))
    err = " ".join(capsys.readouterr().err.split())
    assert f"reusing train result {tmp_path / 'train' / trained[0]}" in err
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == trained  # no retraining
    assert guided.path != plain.path  # a result of its own
    a, b = np.load(plain / "images.npy"), np.load(guided / "images.npy")
    assert a.shape == b.shape and not np.allclose(a, b)
    # the same guidance again: the cached result, with the outputs of guidance 1
    again = generate(cfg_factory("generate", *SMALL, "model.guidance=1", model="ddpm"))
    assert again.path == plain.path
    np.testing.assert_array_equal(np.load(again / "images.npy"), a)
