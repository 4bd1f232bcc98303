"""The small DALL-E runs through every stage unchanged (slow): train -> generate -> attribute
(search methods, TracIn and TRAK through the attributor interface) -> counterfactual -> LDS ->
report, from the Python API, on digits with a shrunk model."""

import pytest

import influence_lab as il
from tests.conftest import SHRINK, prompt_match_by_hand

# the shrunk model's outputs are not yet digits, and the judge CNN takes every one of them for a
# one (measured): with a "one" among the prompts prompt_match is 0.5, not a degenerate 0 or 1
PROMPTS = ["digit one, thin, leaning right", "digit seven, regular, leaning right"]


@pytest.mark.slow
def test_dalle_through_every_stage(tmp_path):
    shrink = {k.replace(".", "__"): int(v) for k, v in (o.split("=") for o in SHRINK["dalle"])}
    small = {
        "model": "dalle",
        **shrink,
        "paths__output_dir": str(tmp_path),
        "logger": "none",
        "generate__m": 2,
        "generate__prompts": PROMPTS,
    }
    search = {"embedders__autoencoder__epochs": 2, "attribution__gradient__proj_dim": 64}
    model = il.train(**small)
    assert model.path.name.startswith("dalle-digits-") and model.metrics["val/loss"] > 0
    samples = il.generate(**small)
    assert len(samples.outputs) == 4
    # the judge CNN's verdict on the stored outputs, recomputed here from its cached weights
    assert samples.quality["prompt_match"] == prompt_match_by_hand(tmp_path, samples.path)

    methods = ["paper", "fused", "tracin", "trak"]
    run = il.attribute(**small, **search, attribution__methods=methods)
    assert set(run.rankings.method) == set(methods)
    for method in methods:  # every method ranks the training items of every output
        top = run.top(method, k=3)
        assert len(top) == 3 * 2 and top.score.notna().all(), method

    sweep = il.counterfactual(
        **small,
        **search,
        attribution__methods=["fused", "trak"],
        counterfactual__methods=["fused", "trak"],
        counterfactual__k=[5],
        counterfactual__seeds=[1],
    )
    assert set(sweep.stats.control) == {"random_pool", "random", "none"}
    assert set(sweep.stats.method) == {"fused", "trak"}
    assert sweep.stats.mean_diff.notna().all()

    scores = il.lds(
        **small,
        **search,
        attribution__methods=["fused"],
        lds__subsets=4,
        lds__seeds=[1, 2],
        lds__methods=["fused", "trak"],
        lds__trak_ensembles=[1],
        lds__track_items=2,
        lds__memorization_top=4,
    )
    assert {"fused", "retraining", "ceiling"} <= set(scores.lds.method)
    assert any(m.startswith("trak") for m in scores.lds.method)
    page = il.report(paths__output_dir=str(tmp_path), model="dalle")
    assert page.html.exists() and "dalle" in page.html.read_text()
