"""A user's own attribution method (examples/custom_attributor) runs attribute -> counterfactual ->
lds -> report from its README and shows up like a built-in; a class outside `plugins` or one that
is not an Attributor is refused in one sentence before any work."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import readme_commands, run_example, typed

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_attributor"
QUICK = [  # the same shrink for every stage: one model, one generation
    "generate.m=2",
    "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, regular\\, leaning right]",
    "model.fit.max_epochs=5",
    "embedders.autoencoder.epochs=2",
    "attribution.gradient.proj_dim=256",
]


def test_pixel_neighbours_ranks_an_exact_copy_first(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from pixellab.attributors import PixelNeighbours

    from influence_lab.attribution.methods import AttributionContext, Targets
    from influence_lab.data import load_data
    from influence_lab.settings import AttributionSettings
    from tests.conftest import make_cfg

    bundle = load_data(typed(make_cfg("attribute", Path("/tmp")).data))
    images = np.asarray(bundle.train.with_format("numpy")["image"])
    method = PixelNeighbours("pixel_l2")
    method.prepare(
        AttributionContext(attribution=AttributionSettings(), bundle=bundle, root=Path("/tmp"))
    )
    picks = [5, 400, 1000]
    table = method.scores(Targets(["a", "b", "c"], [images[i : i + 1] for i in picks]))
    assert [int(np.argmax(row)) for row in table.values] == picks
    flat = images.reshape(len(images), -1).astype(np.float64)
    want = -((flat - flat[400]) ** 2).sum(1)
    np.testing.assert_allclose(table.values[1], want, rtol=1e-9, atol=1e-9)


def test_a_plugin_that_only_scores_gets_the_lds_fallback_subset_sums(monkeypatch):
    """The LDS's predictions of a plugin that implements the core alone (none of the optional
    protocols) come from its `scores`: per subset and target, the sum over the subset's items of
    the item's score, here minus its squared pixel distance summed over the target's outputs,
    computed by hand."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from pixellab.attributors import PixelNeighbours

    from influence_lab.attribution.methods import AttributionContext, Targets
    from influence_lab.attribution.methods.protocols import DampingGrid, PerModel, SubsetSums
    from influence_lab.data import load_data
    from influence_lab.evaluation.lds_score import draw_subsets
    from influence_lab.evaluation.subsets import predictions_of
    from influence_lab.settings import AttributionSettings
    from tests.conftest import make_cfg

    assert not isinstance(PixelNeighbours("x"), (SubsetSums, DampingGrid, PerModel))
    bundle = load_data(typed(make_cfg("attribute", Path("/tmp")).data))
    images = np.asarray(bundle.train.with_format("numpy")["image"])
    method = PixelNeighbours("pixel_l2")
    method.prepare(
        AttributionContext(attribution=AttributionSettings(), bundle=bundle, root=Path("/tmp"))
    )
    groups = [[5, 17], [400, 401], [1000, 3]]  # two outputs per target
    targets = Targets(["a", "b", "c"], [images[g] for g in groups])
    masks = draw_subsets(len(images), 6, 0.5, seed=0)  # (subsets, items) booleans, as the LDS's
    ((label, sums),) = predictions_of("pixel_l2", method, targets, masks, [0.1, 1.0], [1, 2])
    assert label == "pixel_l2"  # no damping grid, no ensemble sizes for a plain method
    flat = images.reshape(len(images), -1).astype(np.float64)
    scores = np.stack([-sum(((flat - flat[i]) ** 2).sum(1) for i in g) for g in groups])
    want = masks.astype(np.float64) @ scores.T  # (subsets, targets)
    assert sums.shape == (6, 3)
    np.testing.assert_allclose(sums, want, rtol=1e-9)
    assert not np.allclose(want[0], want[1])  # the subsets differ, so a mix-up of rows shows


@pytest.mark.slow
def test_the_custom_attributor_example_runs_from_its_readme(tmp_path):
    commands = readme_commands("custom_attributor")
    assert [c[0] for c in commands] == ["attribute", "counterfactual", "lds", "report"]
    out = [f"paths.output_dir={tmp_path}", "logger=none"]
    for args in commands:
        done = run_example(
            "custom_attributor", [*args, *out, *([] if args[0] == "report" else QUICK)]
        )
        assert done.returncode == 0, f"{args[0]}:\n{done.stderr[-3000:]}"
    rankings = pd.read_parquet(next(tmp_path.glob("attribute/vae-digits-*/attribution.parquet")))
    assert set(rankings.method) == {"fused", "pixel_l2"}
    assert (rankings[rankings.method == "pixel_l2"].score <= 0).all()
    sweep = next(
        p for p in tmp_path.glob("counterfactual/vae-digits-*") if (p / "stats.csv").exists()
    )
    stats = pd.read_csv(sweep / "stats.csv")
    assert {"fused", "pixel_l2"} <= set(stats.method)
    assert stats[stats.method == "pixel_l2"].mean_diff.notna().all()
    lds = pd.read_csv(next(tmp_path.glob("lds/vae-digits-*/lds.csv")))
    row = lds[lds.method == "pixel_l2"]
    assert len(row) == 1 and row.family.item() == "search" and np.isfinite(row.lds.item())
    assert set(lds.family) == {"search", "gradient", "reference"}
    html = (tmp_path / "report" / "vae-digits" / "report.html").read_text()
    assert html.count("pixel_l2") >= 3  # the attribution, the sweep and the LDS sections


def test_an_attributor_outside_plugins_is_refused_before_it_is_imported(tmp_path):
    base = ["attribute", "--config-dir", "conf", "+experiment=pixel_neighbours"]
    out = [f"paths.output_dir={tmp_path}", "logger=none"]
    done = run_example("custom_attributor", [*base, "plugins=[]", *out])
    assert done.returncode == 2
    assert (
        "attribution.custom_methods.pixel_l2 is 'pixellab.attributors.PixelNeighbours', "
        "a class outside the modules plugins allows (none); add its package to plugins, e.g. "
        "plugins=[pixellab]."
    ) in done.stderr
    assert not list(tmp_path.glob("attribute/*")) and not list(tmp_path.glob("train/*"))
    wrong = run_example(
        "custom_attributor",
        [*base, "attribution.custom_methods.pixel_l2=pixellab.attributors.np", *out],
    )
    assert wrong.returncode == 2 and "which is not an Attributor" in wrong.stderr
    unknown = run_example(
        "custom_attributor", [*base, "attribution.methods=[fused,pixel_l3]", *out]
    )
    assert unknown.returncode == 2
    assert "attribution.methods has 'pixel_l3'; allowed values are paper, fused" in unknown.stderr
