"""The calibration of a counterfactual design: the rates from null runs against scipy's binomial
and KS tests on hand data, and `influence-lab calibrate` end to end on a tiny design (its runs are
cached sweeps of null arms against their own controls, and its rates are those of its runs)."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats as sps

from influence_lab.evaluation.calibration import null_rows, rate_table, status


def _stats(run_p: list[float], control="random", method="null_random") -> pd.DataFrame:
    rows = []
    for p in run_p:
        # an interval excludes 0 exactly where p < 0.05 (a t interval and its test agree)
        lo, hi = (0.1, 0.3) if p < 0.05 else (-0.1, 0.2)
        rows.append(
            {
                "method": method,
                "control": control,
                "metric": "delta_loss",
                "mean_diff": (lo + hi) / 2,
                "ci_low": lo,
                "ci_high": hi,
                "p": p,
                "mde": 0.2,
                "n_units": 10,
            }
        )
    return pd.DataFrame(rows)


def test_rates_are_the_binomial_share_of_excluding_intervals_and_the_ks_of_the_p_values():
    p = [0.01, 0.5, 0.2, 0.03, 0.9, 0.7, 0.4, 0.6, 0.8, 0.1, 0.3, 0.45, 0.55, 0.65, 0.75, 0.25]
    runs = pd.concat([null_rows(_stats([v]), r) for r, v in enumerate(p)], ignore_index=True)
    # a null compared with another control is not a null comparison and is left out
    other = null_rows(_stats([0.001], control="none"), 99)
    assert other.empty
    row = rate_table(runs).iloc[0]
    assert row.runs == 16 and row.excluded == 2 and row.fpr == pytest.approx(2 / 16)
    ci = sps.binomtest(2, 16).proportion_ci(0.95, method="exact")
    assert (row.fpr_low, row.fpr_high) == pytest.approx((ci.low, ci.high))
    assert row.ks_p == pytest.approx(sps.kstest(p, "uniform").pvalue)
    assert row.p_vs_5pct == pytest.approx(sps.binomtest(2, 16, 0.05).pvalue)
    assert row.status == "anti-conservative"  # 12.5% > 9%
    assert status(0.05, 0.5) == "calibrated" and status(0.0, 0.5) == "conservative"
    assert status(0.05, 0.01) == "p values not uniform"


@pytest.mark.slow
def test_calibrate_runs_null_sweeps_and_reports_their_rates(cfg_factory, tmp_path):
    import json

    from influence_lab.evaluation.statistics import compare
    from influence_lab.stages.calibrate import calibrate

    cfg = cfg_factory(
        "calibrate",
        "generate.m=2",
        "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, bold\\, upright]",
        "embedders.autoencoder.epochs=3",
        "counterfactual.k=[3]",
        "counterfactual.seeds=[1]",
        "counterfactual.grouping=per_target",
        "counterfactual.embedders=[model]",
        "calibrate.runs=2",
        f"calibrate.export_dir={tmp_path / 'exported'}",
        "logger=csv",
    )
    run = calibrate(cfg)["vae-digits"]
    exported = (tmp_path / "exported" / "RESULTS.md").read_text()
    assert "## vae-digits" in exported and "2 null runs" in exported
    assert (tmp_path / "exported" / "vae-digits" / "calibration.png").exists()
    runs = pd.read_csv(run / "runs.csv")
    rates = pd.read_csv(run / "rates.csv")
    # every run compares each null with its own control only, and nothing else was tested
    assert set(zip(runs.method, runs.control, strict=True)) == {
        ("null_random", "random"),
        ("null_random_pool", "random_pool"),
        ("null_none", "none"),
    }
    assert sorted(runs.run.unique()) == [0, 1]
    assert (runs.n_units == 2).all()  # 2 targets, each its own retrained models
    head = rates[rates.metric == "delta_loss"].set_index("control")
    assert (head.runs == 2).all()
    # the rates are those of the runs' own sweeps, recomputed from their measurements
    sweeps = (run / "summary.md").read_text().split("- sweep ")[1:]
    assert len(sweeps) == 2  # one replicate per null run
    first = sweeps[0].split(": ", 1)[1].strip()
    results = pd.read_parquet(f"{first}/results.parquet")
    assert set(results.method) == {"control", "null_random", "null_random_pool", "null_none"}
    again = compare(results)
    mine = runs[(runs.run == 0) & (runs.metric == "delta_loss")].set_index("control")
    ref = again[again.method.str.startswith("null_") & (again.metric == "delta_loss")]
    for r in ref.itertuples():
        if r.method == f"null_{r.control}":
            assert mine.loc[r.control, "mean_diff"] == pytest.approx(r.mean_diff)
    # the two runs shift every seed: different full models, different null draws
    plans = [pd.read_json(f"{s.split(': ', 1)[1].strip()}/plan.json", typ="series") for s in sweeps]
    picks = [
        {tuple(m["targets"]): m["removed"] for m in p.members if m["method"] == "null_random"}
        for p in plans
    ]
    assert picks[0].keys() == picks[1].keys() and picks[0] != picks[1]
    assert json.loads((run / "design.json").read_text())["grouping"] == "per_target"
    assert (run / "calibration.png").stat().st_size > 5000
    assert (head.mde > 0).all()  # 2 units: a (large) detectable effect all the same


def test_the_report_reads_the_calibration_and_skips_the_null_runs(tmp_path):
    import json
    import os

    from influence_lab.reporting.sections import calibration_finding, newest

    root = tmp_path
    for i, (name, methods) in enumerate([("vae-digits-aaa", ["fused"]), ("vae-digits-bbb", [])]):
        run = root / "counterfactual" / name
        run.mkdir(parents=True)
        (run / "plan.json").write_text(json.dumps({"methods": methods}))
        (run / "done").write_text("{}")
        os.utime(run / "done", (1000 + i, 1000 + i))  # the null run is the newer one
    assert newest(root, "counterfactual", "vae-digits").name == "vae-digits-aaa"
    rates = pd.DataFrame(
        [
            {"control": "random", "metric": "delta_loss", "runs": 40, "fpr": 0.05,
             "fpr_low": 0.006, "fpr_high": 0.169},
            {"control": "none", "metric": "delta_loss", "runs": 40, "fpr": 0.075,
             "fpr_low": 0.016, "fpr_high": 0.204},
            {"control": "none", "metric": "drop_raw", "runs": 40, "fpr": 0.5,
             "fpr_low": 0.3, "fpr_high": 0.7},
        ]
    )  # fmt: skip
    text = calibration_finding(rates)
    assert "measured with 40 null runs" in text
    assert "5% [1%, 17%] against random and 8% [2%, 20%] against none" in text
    assert "50%" not in text  # the headline metric only


def test_the_report_reads_only_a_calibration_of_the_sweeps_design(tmp_path):
    import json
    import os

    from influence_lab.evaluation.removal_plans import design_of
    from influence_lab.reporting.sections import calibration_of

    config = {
        "replicates": 1,
        "generate": {"prompts": ["a", "b", "c"]},
        "counterfactual": {
            "grouping": "per_target",
            "group_size": None,
            "k": [10],
            "seeds": [1, 2],
        },
    }
    sweep = tmp_path / "counterfactual" / "vae-digits-s"
    sweep.mkdir(parents=True)
    (sweep / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    other = {**config, "counterfactual": {**config["counterfactual"], "grouping": "grouped"}}
    for i, (name, cfg) in enumerate([("vae-digits-match", config), ("vae-digits-other", other)]):
        run = tmp_path / "calibration" / name
        run.mkdir(parents=True)
        (run / "design.json").write_text(json.dumps(design_of(cfg)))
        (run / "done").write_text("{}")
        os.utime(run / "done", (1000 + i, 1000 + i))  # the other design's is newer
    assert calibration_of(tmp_path, "vae-digits", sweep).name == "vae-digits-match"
    assert design_of(config)["seeds"] == 2 and design_of(config)["prompts"] == 3
    (tmp_path / "calibration" / "vae-digits-match" / "done").unlink()
    assert calibration_of(tmp_path, "vae-digits", sweep) is None
