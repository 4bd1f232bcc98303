"""The Fashion-MNIST preset's calibration over its two batches of 20 null runs, pooled.

Both batches are the same design (`+experiment=counterfactual_fashion`), null run r shifting every
seed of the chain by r as replicate r would; they were run in different sessions, so the cache of
the first was gone when the second ran and `influence-lab calibrate calibrate.runs=40` could not
gather both:

- runs 0-19: vae-fashion/runs.csv (`calibrate.runs=20`),
- runs 20-39: runs_20_39/vae-fashion/runs.csv (`calibrate.start=20 calibrate.runs=20`).

The pooled rates come from the tool's own `evaluation.calibration.rate_table` over the 40 runs'
rows (the second batch's run numbers shifted by 20):

    python experiments/calibration/counterfactual_fashion/pool_batches.py

writes pooled/runs.csv and pooled/rates.csv and prints the delta_loss rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from influence_lab.evaluation.calibration import rate_table

HERE = Path(__file__).resolve().parent
BATCHES = (
    (HERE / "vae-fashion" / "runs.csv", 0),
    (HERE / "runs_20_39" / "vae-fashion" / "runs.csv", 20),
)


def main() -> None:
    parts = []
    for path, shift in BATCHES:
        part = pd.read_csv(path)
        part["run"] = part["run"] + shift
        part["batch"] = path.parent.parent.name if shift else "runs_0_19"
        parts.append(part)
    runs = pd.concat(parts, ignore_index=True)
    assert runs.groupby(["control", "metric"]).run.nunique().eq(40).all(), "40 runs per control"
    rates = rate_table(runs)
    out = HERE / "pooled"
    out.mkdir(exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    rates.to_csv(out / "rates.csv", index=False)
    cols = ["control", "runs", "excluded", "fpr", "fpr_low", "fpr_high", "p_vs_5pct", "ks_p",
            "status", "total_excluded", "total_ks_p", "total_status"]  # fmt: skip
    print(rates[rates.metric == "delta_loss"][cols].to_string(index=False))


if __name__ == "__main__":
    main()
