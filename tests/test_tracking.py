"""The W&B offline run of a training job holds the same final losses as the local metrics file."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from influence_lab.stages.train import train


def leet_records(run_dir: str) -> list[dict]:
    wandb_cli = shutil.which("wandb") or str(Path(sys.executable).parent / "wandb")
    out = subprocess.run(
        [wandb_cli, "leet", "inspect", "--json", run_dir],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]


def test_wandb_offline_run_matches_local_metrics(cfg_factory, tmp_path):
    cfg = cfg_factory("train", "logger=wandb", "group=test-exp")
    run = train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    wandb_dir = metrics["wandb_dir"]
    assert wandb_dir and Path(wandb_dir).is_relative_to(tmp_path / "wandb")
    csv = pd.read_csv(run / "csv" / "metrics.csv")
    last_train = csv["train/loss"].dropna().iloc[-1]
    last_val = csv["val/loss"].dropna().iloc[-1]
    assert last_train == pytest.approx(metrics["train/loss"], rel=1e-6)

    records = leet_records(wandb_dir)
    history = [r["history"]["item"] for r in records if r.get("type") == "history"]
    logged_train = [h["train/loss"] for h in history if "train/loss" in h]
    logged_val = [h["val/loss"] for h in history if "val/loss" in h]
    assert len(logged_train) == len(logged_val) == cfg.model.fit.max_epochs
    assert logged_train[-1] == pytest.approx(last_train, rel=1e-6)
    assert logged_val[-1] == pytest.approx(last_val, rel=1e-6)
    run_record = next(r["run"] for r in records if r.get("type") == "run")
    assert run_record["run_group"] == "test-exp" and run_record["job_type"] == "train"
    fingerprint = json.loads((run / "fingerprint.json").read_text())["fingerprint"]
    assert fingerprint in json.dumps(run_record["config"])


def test_a_text_model_logs_its_samples_to_wandb(cfg_factory, tmp_path):
    """chargpt draws samples.txt, not a PNG: the W&B run gets it as text instead of failing."""
    run = train(cfg_factory("train", "logger=wandb", model="chargpt"))
    wandb_dir = json.loads((run / "metrics.json").read_text())["wandb_dir"]
    records = leet_records(wandb_dir)
    items = [r["history"]["item"] for r in records if r.get("type") == "history"]
    assert any(item.get("samples._type") == "html-file" for item in items)


@pytest.mark.slow
def test_a_sweep_logs_one_summary_run_with_its_headline_numbers(cfg_factory, tmp_path):
    """The counterfactual stage's W&B run (offline, read back as `wandb sync` would upload it)
    holds the headline numbers per method, k and control, equal to stats.csv, and a bar chart;
    the retrain jobs keep their own runs."""
    from influence_lab.stages.counterfactual import counterfactual
    from tests.test_sweep import SWEEP

    sweep = counterfactual(cfg_factory("counterfactual", *SWEEP, "logger=wandb", "group=team"))
    stats = pd.read_csv(sweep / "stats.csv")
    head = stats[stats.metric == "delta_loss"]
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    records = {str(r): leet_records(str(r)) for r in runs}
    kinds = {
        path: next(x["run"] for x in recs if x.get("type") == "run")["job_type"]
        for path, recs in records.items()
    }
    assert "retrain" in kinds.values()
    summary_run = next(p for p, kind in kinds.items() if kind == "counterfactual")
    summary = {}
    for record in records[summary_run]:
        if record.get("type") == "summary":  # W&B's summary records: updates, in order
            summary.update(record["summary"].get("update", {}))
    assert len(head) == 2  # raw_only@3 against random and none
    for r in head.itertuples():
        key = f"delta_loss/{r.method}@{r.k}/vs_{r.control}"
        assert summary[f"{key}/diff"] == pytest.approx(r.mean_diff, rel=1e-9)
        assert summary[f"{key}/ci_low"] == pytest.approx(r.ci_low, rel=1e-9)
        assert summary[f"{key}/p"] == pytest.approx(r.p, rel=1e-9, nan_ok=True)
        assert summary[f"{key}/units"] == r.n_units
    assert any(k.startswith("headline") for k in summary)  # the bar chart's table
