"""The `lds` stage end to end on a small preset."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from influence_lab.data import load_data
from influence_lab.data.heldout import heldout_items
from influence_lab.evaluation.subsets import averaged_loss, target_batch
from influence_lab.models.build import load_model
from influence_lab.stages import lds as lds_stage
from influence_lab.stages.lds import lds
from tests.conftest import run_cli, typed

PRESET = [
    "data.source.max_items=200",
    "generate.m=2",
    "embedders.autoencoder.epochs=2",
    "attribution.gradient.proj_dim=256",
    "lds.subsets=6",
    "lds.seeds=[1]",
    "lds.pack_size=6",
    "lds.trak_ensembles=[1,2]",
    "lds.track_items=3",
    "lds.memorization_top=4",
    "attribution.methods=[raw_only,fused]",
    "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, bold\\, upright]",
]


def spearman(a, b) -> float:
    """Pearson correlation of average ranks, written out here rather than taken from the package."""
    ra, rb = stats.rankdata(a), stats.rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def check_table(run, predictions: dict) -> None:
    """The run's LDS table, its per-target rows, figures and summary, checked against the
    predictions the stage correlated (each subset's sum of its items' scores; that they are
    those sums is tests/test_subset_sums.py)."""
    table = pd.read_csv(run / "lds.csv").set_index("method")
    labels = {"raw_only", "fused", "tracin", "trak@1", "trak@2", "dtrak@1", "dtrak@2"}
    assert set(table.index) == labels == set(predictions)
    assert (table["targets"] == 4).all()
    assert (table["ci_low"] <= table["lds"]).all() and (table["lds"] <= table["ci_high"]).all()
    per = pd.read_parquet(run / "lds_targets.parquet")
    assert len(per) == len(labels) * 4

    # the LDS recomputed from what the run saved: the subsets (subsets.npy), each subset model's
    # target losses (losses/*.npz; the output is minus the loss, here of one seed, lds.seeds=[1])
    # and the predictions of each method; per target the Spearman correlation across the 6 subsets
    # between the summed scores of the included items and the output, then the mean over targets
    outputs = -np.stack(
        [np.load(run / "losses" / f"s{j:03d}-seed1.npz")["targets"] for j in range(6)]
    )
    assert outputs.shape == (6, 4)
    # TRAK and D-TRAK chose their damping on the first 3 subsets (lds.selection 0.25, at least 3);
    # every method's LDS is measured on the other 3
    chosen = json.loads((run / "damping.json").read_text())
    assert (chosen["selection_subsets"], chosen["evaluation_subsets"]) == (3, 3)
    assert set(chosen["dampings"]) == {"trak@1", "trak@2", "dtrak@1", "dtrak@2"}
    assert (table["subsets"] == 3).all()
    curves = pd.read_csv(run / "lds_damping.csv")
    grid = sorted(curves.damping.unique())
    assert len(grid) == 10 and np.isclose(grid[0], 1e-4) and np.isclose(grid[-1], 1e5)
    for label, p in predictions.items():
        if p.ndim == 3:
            p = check_damping(label, p, outputs, curves, chosen, table)
        assert p.shape == (6, 4)
        mine = [spearman(p[3:, t], outputs[3:, t]) for t in range(4)]
        saved = per[per.method == label].sort_values("target")["lds"].to_numpy()
        np.testing.assert_allclose(saved, mine, atol=1e-6, err_msg=label)
        assert abs(table.loc[label, "lds"] - np.mean(mine)) < 1e-6, label
    # no method is held to a bound here: with 6 subsets of 3-epoch models the measured LDS were
    # noise, -0.24 (tracin) to +0.23 (dtrak@2), per target -0.60 to +0.71, intervals spanning 0 for
    # 6 of 7
    for name in ("lds.png", "lds_damping.png", "memorization.png", "dynamics.png"):
        assert (run / name).stat().st_size > 2000, name
    assert "| method | LDS |" in (run / "summary.md").read_text()


def check_damping(label, grid, outputs, curves, chosen, table) -> np.ndarray:
    """The chosen damping is the best of the grid on the selection subsets (recomputed here);
    returns the predictions at it."""
    mine = [
        np.nanmean([spearman(p[:3, t], outputs[:3, t]) for t in range(p.shape[1])]) for p in grid
    ]
    curve = curves[curves.method == label].sort_values("damping")
    np.testing.assert_allclose(curve.lds_selection.to_numpy(), mine, atol=1e-9, err_msg=label)
    best = int(np.argmin(np.abs(curve.damping.to_numpy() - chosen["dampings"][label])))
    assert mine[best] >= np.nanmax(mine) - 1e-9, label
    assert table.loc[label, "damping"] == chosen["dampings"][label]
    return grid[best]


def check_subset_models(run, bundle, train_dir) -> list:
    """The subsets, memorization, the subset models' train results and their stored losses and
    dynamics; returns the subset models' run folders."""
    masks = np.load(run / "subsets.npy")
    assert masks.shape == (6, len(bundle.train)) and set(masks.sum(1)) == {len(bundle.train) // 2}
    mem = pd.read_parquet(run / "memorization.parquet")
    assert len(mem) == len(bundle.train) and mem["memorization"].notna().mean() > 0.9

    # a subset model is an ordinary train result without the items outside its subset, and the
    # stored target losses are its example_loss
    subset_runs = [
        p
        for p in train_dir.iterdir()
        if json.loads((p / "fingerprint.json").read_text())["n_train"] == len(bundle.train) // 2
    ]
    assert len(subset_runs) == 6
    ids = np.array(bundle.train["id"])
    excluded = {
        tuple(json.loads((p / "fingerprint.json").read_text())["excluded"]) for p in subset_runs
    }
    assert excluded == {tuple(sorted(ids[~m])) for m in masks}
    losses = np.load(run / "losses" / "s000-seed1.npz")
    assert losses["targets"].shape == (4,) and losses["items"].shape == (len(bundle.train),)

    dyn = pd.read_parquet(run / "dynamics.parquet")
    assert sorted(dyn["epoch"].unique()) == [1, 2, 3] and dyn["id"].nunique() == 3
    assert set(dyn["included"]) == {True, False}
    assert len(dyn) == 6 * 3 * 3
    return subset_runs


def check_export(folder, run) -> None:
    """An experiment folder gets the table, the figures, RESULTS.md and its README block."""
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(
        "# x\n<!-- results:start -->\nSTALE-BLOCK-TEXT\n<!-- results:end -->\n"
    )
    lds_stage.export_lds(folder, {"ddpm-digits": run}, "lds_benchmark")
    assert (folder / "ddpm-digits" / "lds.csv").read_text() == (run / "lds.csv").read_text()
    assert (folder / "ddpm-digits" / "lds.png").exists()
    readme = (folder / "README.md").read_text()
    assert (
        "STALE-BLOCK-TEXT" not in readme
        and "| trak@2 |" in readme
        and "| trak@2 |" in (folder / "RESULTS.md").read_text()
    )


def test_lds_stage_small_preset(cfg_factory, tmp_path, capsys, monkeypatch):
    predictions = {}
    predict = lds_stage.method_predictions

    def recording(*args, **kwargs):
        # the predictions the stage correlates, kept for an independent check
        out, families, costs = predict(*args, **kwargs)
        predictions.update({label: np.array(p, copy=True) for label, p in out.items()})
        return out, families, costs

    monkeypatch.setattr(lds_stage, "method_predictions", recording)
    cfg = cfg_factory("lds", *PRESET, model="ddpm")
    run = lds(cfg)
    check_table(run, predictions)
    check_cost(run)
    subset_runs = check_subset_models(run, load_data(typed(cfg.data)), tmp_path / "train")

    # the subset models are reused by a later call with other methods: nothing is trained again
    before = sorted(p.name for p in (tmp_path / "train").iterdir())
    capsys.readouterr()
    again = lds(cfg_factory("lds", *PRESET, "lds.methods=[caption_only]", model="ddpm"))
    err = capsys.readouterr().err
    assert "members as one pack" not in err and "caption_only" in err
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == before
    assert again.path != run.path
    model = load_model(subset_runs[0])
    assert model.hparams.hidden == 64

    check_export(tmp_path / "experiments" / "lds_benchmark", run)
    check_heldout(cfg_factory, cfg, run, tmp_path, before)


def check_cost(run) -> None:
    """cost.csv: one row per method (not per ensemble size), positive seconds per target that
    scale to 1,000 items by the training set's size, a resident-memory peak at or above its rise;
    the search methods marked as sharing one pass; the summary shows the table. lds.csv holds no
    timing (it must not change between machines)."""
    cost = pd.read_csv(run / "cost.csv").set_index("method")
    assert set(cost.index) == {"raw_only", "fused", "tracin", "trak", "dtrak"}
    assert (cost.seconds > 0).all() and (cost.seconds_per_target > 0).all()
    items = len(np.load(run / "subsets.npy")[0])
    np.testing.assert_allclose(
        cost.seconds_per_target_per_1k_items, cost.seconds_per_target / (items / 1000)
    )
    targets = pd.read_csv(run / "lds.csv").targets.iloc[0]
    np.testing.assert_allclose(cost.seconds_per_target, cost.seconds / targets)
    assert (cost.peak_mb > 100).all() and (cost.peak_mb >= cost.rise_mb).all()
    assert (cost.rise_mb >= 0).all()
    assert cost.loc[["raw_only", "fused"], "shared"].str.contains("2 search methods").all()
    assert cost.loc[["tracin", "trak", "dtrak"], "shared"].isna().all()
    assert "s / target / 1k items" in (run / "summary.md").read_text()
    assert not {"seconds", "peak_mb"} & set(pd.read_csv(run / "lds.csv").columns)


def check_heldout(cfg_factory, cfg, run, tmp_path, trained) -> None:
    """lds.targets=heldout on digits: the targets are items of the validation split with their
    own captions, scored under the same subset models (nothing trained again); the stored target
    losses are each subset model's example_loss of those items."""
    extra = ["lds.targets=heldout", "lds.heldout_targets=5", "lds.methods=[raw_only,tracin]"]
    held = lds(cfg_factory("lds", *PRESET, *extra, model="ddpm"))
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == trained
    table = pd.read_csv(held / "lds.csv").set_index("method")
    assert (table.loc[["raw_only", "tracin"], "targets"] == 5).all()
    bundle = load_data(typed(cfg.data))
    ids, captions, images = heldout_items(typed(cfg.data), bundle, 5, 0)
    assert set(ids) <= set(bundle.val["id"]) and not set(ids) & set(bundle.train["id"])
    per = pd.read_parquet(held / "lds_targets.parquet")
    assert list(per[per.method == "raw_only"].sort_values("target").prompt) == captions
    masks = np.load(held / "subsets.npy")
    train_ids = np.array(bundle.train["id"])
    first = next(
        p
        for p in (tmp_path / "train").iterdir()
        if json.loads((p / "fingerprint.json").read_text())["excluded"]
        == sorted(train_ids[~masks[0]])
    )
    batch = target_batch(captions, [images[i : i + 1] for i in range(5)])
    mine = averaged_loss(load_model(first), batch, cfg.lds.noise_draws)
    stored = np.load(held / "losses" / "s000-seed1.npz")["targets"]
    np.testing.assert_allclose(stored, mine, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["lds.alpha=1.5"], "lds.alpha is 1.5; it must be strictly between 0 and 1."),
        (["lds.subsets=2"], "lds.subsets is 2; a rank correlation needs at least 3 subsets."),
        (
            ["lds.methods=[dtrak]"],
            "lds.methods has dtrak, which needs the model output function 'dtrak', which VAE "
            "(model=vae) does not declare",
        ),
    ],
)
def test_lds_bad_settings(cfg_factory, capsys, overrides, message):
    with pytest.raises(SystemExit):
        lds_stage.run(cfg_factory("lds", *PRESET, *overrides))
    assert message in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_lds_benchmark_small_preset_regenerates_its_folder(tmp_path):
    """The experiment's one command on the small preset: the LDS table and figures of the run land
    in the experiment folder, with RESULTS.md and the README block."""
    folder = tmp_path / "experiments" / "lds_benchmark_small"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(
        "# x\n\n<!-- results:start -->\nSTALE-BLOCK-TEXT\n<!-- results:end -->\n"
    )
    args = [
        "lds",
        "+experiment=lds_benchmark_small",
        f"paths.output_dir={tmp_path}",
        "logger=none",
        "trainer.progress_bar=false",
        "model.fit.max_epochs=3",
    ]
    done = run_cli(*args, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(folder / "vae-digits" / "lds.csv")
    assert {"raw_only", "fused", "tracin", "trak@1"} <= set(table.method)
    assert (
        (table.targets == 4).all()
        and (table.ci_low <= table.lds).all()
        and (table.lds <= table.ci_high).all()
    )
    # the exported table is the run's, and each method's LDS is the mean of its 4 per-target values
    (run,) = (tmp_path / "lds").glob("vae-digits-*")
    assert (run / "lds.csv").read_text() == (folder / "vae-digits" / "lds.csv").read_text()
    per = pd.read_parquet(run / "lds_targets.parquet")
    means = per.groupby("method")["lds"].agg(["mean", "count"])
    assert set(means.index) == set(table.method) and (means["count"] == 4).all()
    np.testing.assert_allclose(
        table["lds"].to_numpy(), means["mean"].reindex(table.method).to_numpy(), atol=1e-6
    )
    for picture in ("lds.png", "lds_damping.png", "memorization.png", "dynamics.png"):
        assert (folder / "vae-digits" / picture).stat().st_size > 2000
    results = (folder / "RESULTS.md").read_text()
    assert "(vae-digits/lds_damping.png)" in results
    readme = (folder / "README.md").read_text()
    assert (
        "## vae-digits" in results
        and "| fused | " in results
        and "STALE-BLOCK-TEXT" not in readme
        and "| fused | " in readme
    )
