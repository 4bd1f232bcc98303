"""TRAK's damping: scores for a grid of dampings from one diagonalisation equal a fresh solve at
each; the LDS stage chooses the damping on a selection part of its subsets."""

from __future__ import annotations

import numpy as np
import pytest

from influence_lab.attribution.spectrum import Spectrum as _Spectrum


@pytest.mark.parametrize("n,d", [(60, 20), (20, 60)])  # primal (d < n) and dual (d > n) forms
def test_scores_at_every_damping_equal_a_direct_solve(n, d):
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=d)
    q = rng.normal(size=(5, d))
    spectrum = _Spectrum(phi)
    kernel = phi.T @ phi
    scale = float(np.mean(np.diag(kernel)))
    for damping in (1e-3, 0.1, 1.0, 10.0, 1e3):
        direct = q @ np.linalg.solve(kernel + damping * scale * np.eye(d), phi.T)
        ours = spectrum.scores(q, damping)
        assert ours.shape == (5, n)
        np.testing.assert_allclose(ours, direct, rtol=1e-7, atol=1e-9 * np.abs(direct).max())


def _lds_run(root, name: str, model_signature: str, dampings: dict, done: bool = True):
    import json
    import os
    import time

    run = root / "lds" / name
    run.mkdir(parents=True)
    record = {"model_signature": model_signature, "dampings": dampings}
    (run / "damping.json").write_text(json.dumps(record))
    if done:
        (run / "done").write_text("{}")
    stamp = time.time() + len(list((root / "lds").iterdir()))  # later runs are newer
    os.utime(run / "damping.json", (stamp, stamp))


def test_attribute_takes_the_damping_the_newest_lds_run_of_its_model_chose(tmp_path):
    from influence_lab.attribution.preparation import lds_dampings

    assert lds_dampings(tmp_path, "m1", 4) == {}  # no LDS run: the default damping
    _lds_run(tmp_path, "a", "m1", {"trak@1": 10.0, "trak@4": 100.0, "dtrak@2": 1e4})
    _lds_run(tmp_path, "b", "other-model", {"trak@4": 0.001})
    assert lds_dampings(tmp_path, "m1", 4) == {"trak": 100.0, "dtrak": 1e4}
    assert lds_dampings(tmp_path, "m1", 1) == {"trak": 10.0, "dtrak": 1e4}  # else the largest
    _lds_run(tmp_path, "c", "m1", {"trak@4": 1.0}, done=False)  # unfinished: ignored
    assert lds_dampings(tmp_path, "m1", 4)["trak"] == 100.0
    _lds_run(tmp_path, "d", "m1", {"trak@4": 0.1})  # a newer finished run wins
    assert lds_dampings(tmp_path, "m1", 4) == {"trak": 0.1}


def test_pinned_dampings_win_over_any_lds_run_so_replicates_share_them(cfg_factory, tmp_path):
    from influence_lab.entry.stage_entry import settings_of
    from influence_lab.stages.attribute import chosen_dampings
    from influence_lab.store.records import GenerateProvenance

    class Gen:  # a generate result whose model has an LDS run (m1) or none (m2)
        def __init__(self, signature):
            self.path = tmp_path / signature

    for sig in ("m1", "m2"):
        (tmp_path / sig).mkdir()
        GenerateProvenance(
            model_signature=sig,
            model_dir="x",
            prompts=["p"],
            seeds=[0],
            prompt_seeds=None,
            data_fingerprint="f",
        ).write(tmp_path / sig)
    root = tmp_path / "out"
    _lds_run(root, "a", "m1", {"trak@4": 100.0, "dtrak@4": 1e4})
    base = [f"paths.output_dir={root}", "attribution.gradient.ensemble=4"]
    free = settings_of(cfg_factory("attribute", *base))
    assert chosen_dampings(free, Gen("m1")) == {"trak": 100.0, "dtrak": 1e4}
    assert chosen_dampings(free, Gen("m2")) == {}  # a replicate's model without an LDS run
    pinned = settings_of(
        cfg_factory("attribute", *base, "+attribution.gradient.pinned_dampings={trak: 10}")
    )
    assert chosen_dampings(pinned, Gen("m1")) == {"trak": 10.0, "dtrak": 1e4}
    assert chosen_dampings(pinned, Gen("m2")) == {"trak": 10.0}
