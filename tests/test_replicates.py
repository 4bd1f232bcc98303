"""Replicates end to end: the small paper-unlearning preset with replicates=2 at 1 and at 2 torch
threads gives identical rankings (fused and paper, whose space is the label CNN's), per-replicate
tables and pooled table, and the pooled statistics (over the independent units: each replicate's
groups) equal a hand computation from the stored rows and rankings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from tests.conftest import run_cli


def _run(tmp_path: Path, threads: int) -> Path:
    out = tmp_path / f"t{threads}"
    args = [
        "pipeline",
        "+experiment=paper_unlearning_small",
        "replicates=2",
        "attribution.methods=[fused,paper]",  # paper: the label CNN's space is compared too
        f"paths.output_dir={out}",
        "pipeline.export_dir=null",
        "logger=none",
        "trainer.progress_bar=false",
        "model.fit.max_epochs=3",
        "embedders.autoencoder.epochs=2",
    ]
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = run_cli(*args, cwd=tmp_path, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _attribute_of(sweep: Path, root: Path) -> Path:
    """The attribute result a sweep tested: the one made from the sweep's generate result."""
    from influence_lab.store.records import AttributeProvenance

    generate_dir = json.loads((sweep / "plan.json").read_text())["generate_dir"]
    (att,) = [
        a
        for a in (root / "attribute").glob("vae-digits-*")
        if str(AttributeProvenance.read(a).generate_dir) == str(generate_dir)
    ]
    return att


@pytest.mark.slow
def test_replicates_are_thread_independent_and_pool_as_computed_by_hand(tmp_path):
    runs = {t: _run(tmp_path, t) for t in (1, 2)}
    pooled = {t: next((runs[t] / "counterfactual").glob("vae-digits-r2-*")) for t in runs}
    # the same signatures, rankings, rows and tables at 1 and 2 threads
    assert pooled[1].name == pooled[2].name
    for name in ("stats.csv", "replicate_stats.csv", "overlap.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(pooled[1] / name), pd.read_csv(pooled[2] / name), check_exact=True
        )
    sweeps = [Path(p) for p in json.loads((pooled[1] / "replicates.json").read_text())]
    assert len(sweeps) == 2 and sweeps[0] != sweeps[1]
    rankings = []
    for sweep in sweeps:
        other = runs[2] / sweep.relative_to(runs[1])
        a, b = (pd.read_parquet(s / "results.parquet") for s in (sweep, other))
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        att = _attribute_of(sweep, runs[1])
        table = pd.read_parquet(att / "attribution.parquet")
        again = pd.read_parquet(runs[2] / att.relative_to(runs[1]) / "attribution.parquet")
        pd.testing.assert_frame_equal(
            table[["method", "target", "rank", "id"]], again[["method", "target", "rank", "id"]]
        )
        rankings.append(table)

    # the pooled numbers by hand from the stored rows. The units are (replicate, group): each
    # group of 3 prompts has its own retrained models. Per member, its own prompts' mean change
    # and, beyond it, minus the other group's prompts' mean change in the same model; per unit the
    # mean over seeds; top-k minus the control per unit; the t test over the 4 units
    results = pd.read_parquet(pooled[1] / "results.parquet")
    stats = pd.read_csv(pooled[1] / "stats.csv")
    rows = results[(results.metric == "delta_loss") & (results.method.isin(["fused", "control"]))]
    own = rows[rows.own].groupby(["replicate", "unit", "arm", "member_id"]).value.mean()
    other = rows[~rows.own].groupby(["replicate", "unit", "arm", "member_id"]).value.mean()
    plain = own.groupby(["replicate", "unit", "arm"]).mean().unstack("arm")
    beyond = (own - other).groupby(["replicate", "unit", "arm"]).mean().unstack("arm")
    for control in ("random_pool", "random", "none"):
        d = (beyond["topk"] - beyond[control]).to_numpy()
        total = (plain["topk"] - plain[control]).to_numpy()
        row = stats[(stats.metric == "delta_loss") & (stats.control == control)].iloc[0]
        assert row.replicates == 2 and row.n_targets == 6 and row.n_units == 4
        assert row.units == "2 groups x 2 replicates" and row.verdict == "undecided"
        assert row.estimate == "beyond other prompts"
        assert row.mean_diff == pytest.approx(d.mean(), abs=1e-12)
        assert row.total_mean_diff == pytest.approx(total.mean(), abs=1e-12)
        assert row.p == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
        each = (beyond["topk"] - beyond[control]).groupby("replicate").mean().to_numpy()
        assert row.replicate_diffs == ";".join(f"{v:.4g}" for v in each)
        assert bool(row.stable) == bool(np.all(np.sign(each) == np.sign(d.mean())))
        assert row.ci_low <= row.mean_diff <= row.ci_high
    # the top-k overlap by hand: per prompt, Jaccard of the two replicates' top-3 of fused
    k = int(stats.k.iloc[0])
    jaccards = []
    for target in sorted(rankings[0].target.unique()):
        a, b = (
            set(t[(t.method == "fused") & (t.target == target)].nsmallest(k, "rank").id)
            for t in rankings
        )
        jaccards.append(len(a & b) / len(a | b))
    assert stats.topk_jaccard.iloc[0] == pytest.approx(np.mean(jaccards), abs=1e-12)
