"""Head to head: each method's top-k removal against every other method's, on the same prompts.

The counterfactual stage compares each method with the controls; whether one method's top-k
changes the model more than another's (e.g. attribution by unlearning against D-TRAK, the
comparison Wang et al. report) is the same design read across methods: every method's top-k
retrains per prompt with the same seeds, so for two methods the difference of their units'
estimates (the prompt's change beyond the other prompts' in the same retrained models, where
measured) is tested over the same independent units with the stage's own unit test (Student t,
`evaluation.statistics.unit_test`). No multiplicity correction: read a pair's p as that pair's.

    python experiments/gradient_counterfactual/digits/head_to_head.py SWEEP_DIR [SWEEP_DIR ...]

takes the replicate sweeps (each a run folder with results.parquet; the pipeline prints them) and
writes ddpm-digits/head_to_head.csv here, printing the delta_loss rows."""

from __future__ import annotations

import sys
from itertools import combinations
from pathlib import Path

import pandas as pd

from influence_lab.evaluation.replicated_sweeps import pooled_results
from influence_lab.evaluation.statistics import unit_effects, unit_test

HERE = Path(__file__).resolve().parent
METRIC = "delta_loss"


def head_to_head(results: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    units = unit_effects(results)
    top = units[(units.arm == "topk") & (units.metric == metric)]
    column = "did" if top["did"].notna().all() else "plain"
    wide = top.pivot_table(index=["replicate", "unit"], columns="method", values=column)
    rows = []
    for a, b in combinations(sorted(wide.columns), 2):
        d = (wide[a] - wide[b]).dropna().to_numpy()
        if d.mean() < 0:  # each row reads "the larger minus the smaller"
            a, b, d = b, a, -d
        rows.append({"method": a, "other": b, "metric": metric, "estimate": column,
                     "larger_in": int((d > 0).sum()), **unit_test(d)})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["method", "other"], ignore_index=True)


def main(sweeps: list[str]) -> None:
    table = head_to_head(pooled_results([Path(s) for s in sweeps]))
    out = HERE / "ddpm-digits" / "head_to_head.csv"
    out.parent.mkdir(exist_ok=True)
    table.to_csv(out, index=False)
    shown = ["method", "other", "mean_diff", "ci_low", "ci_high", "p", "larger_in", "n_units"]
    print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
