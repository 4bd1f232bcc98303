"""Does removing a method's top-k change the outputs more than removing control items? The
comparison rests on retrained models, not on targets.

Units. Targets that share a retrained model share its training noise (a shift common to all of
them, as large as the effects tested), so the independent unit is a *unit* of the plan
(`plans.Member.unit`): a target in a `per_target` sweep, a group of prompts in a `grouped` one (one
group: the whole sweep), in each replicate. A unit's method picks are drawn once and shared by its
retrain seeds, so seeds are averaged inside a unit and are not units themselves.

Within-retrain baseline. Where every member also measured the targets that are not its own
(`own` False: `delta_loss` of every other prompt's outputs, `sweep.measure_member`), a unit's
effect is its own targets' mean change minus the other targets' mean change in the same retrained
models: a difference in differences, in which the retrain's shift common to every output cancels
(on the demo's VAE the other prompts' mean change varies by 0.16 nats between retrains, as much as
the effects tested; it correlates 0.75 to 0.96 with a unit's top-k-minus-control difference). The
question becomes: did removing the items raise *this* prompt's loss more than the other prompts'
(`estimate` = `beyond other prompts`), which is what an attribution claims. The total change of
the own targets is kept beside it (`total_*`): a method whose picks matter to every output
(removing fused's top 10 for one prompt raises the other prompts' loss 0.07 nats more than random
items do, on the demo) shows that part there and not in the verdict. Without other targets (one
group; metrics measured only on a member's own outputs) the estimate is the total change
(`estimate` = `own prompts`).

Test. Per unit, d = effect of the method's top-k - effect of the control (both averaged over
seeds); the mean of d over units with a Student t interval and p-value
(scipy's one-sample t test) and, from statsmodels' power solver, the smallest effect the design
detects with 80% power at 5%.
A comparison with fewer than `MIN_UNITS` units is `undecided`: below 6 units no test free of a
normality assumption (the exact sign-flip test) can reach p < 0.05. The false-positive rate of this
design is measured by `influence-lab calibrate` (null arms against their own controls).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .removal_plans import CONTROLS, null_control

# what a row's estimate is: the own targets' change beyond the other targets' in the same retrained
# models (where they were measured), or the own targets' change
ESTIMATES = {True: "beyond other prompts", False: "own prompts"}
MIN_UNITS = 6  # 2 / 2**6 < 0.05: the fewest units with which an exact sign-flip test can decide
ALPHA, POWER = 0.05, 0.8


def bootstrap_ci(diffs: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of independent values (used where the values
    are independent units, e.g. per-target LDS correlations)."""
    if len(diffs) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (n_boot, len(diffs)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def effect_ratio(top: float, control: float) -> float:
    """How many times the control's mean effect the top-k's is; NaN unless both move the same way
    (a ratio of changes of opposite signs, or of a change near zero, reads as a size and is not)."""
    if abs(control) <= 1e-12 or top * control <= 0:
        return float("nan")
    return top / control


def with_design(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with the columns the unit statistics read, filled for tables written before they
    existed: `replicate` (0), `own` (True), `unit` (the member id's first part; in a table
    without member ids, its group or else its target) and `member_id`."""
    out = results.copy()
    if "replicate" not in out:
        out["replicate"] = 0
    if "own" not in out:
        out["own"] = True
    out["own"] = out["own"].astype(bool)
    if "unit" not in out and "member_id" in out:
        out["unit"] = out["member_id"].str.split("-").str[0]
    elif "unit" not in out:  # a hand-made table: its groups, else each target its own unit
        out["unit"] = (
            out["group"].map("g{:02d}".format)
            if "group" in out
            else out["target"].map("t{:03d}".format)
        )
    if "member_id" not in out:
        parts = [out[c].astype(str) for c in ("unit", "method", "arm", "k", "seed")]
        out["member_id"] = parts[0].str.cat(parts[1:], sep="-")
    return out


def own_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of a member's own targets (every row of tables written before `own` existed)."""
    return results[results["own"].astype(bool)] if "own" in results else results


def per_target(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds: one value per (method, arm, k, metric, target), own targets only."""
    return (
        own_rows(results)
        .groupby(["method", "arm", "k", "metric", "target"], as_index=False)["value"]
        .mean()
    )


def changes_only(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of metrics that are changes (the paper's before/after levels left out)."""
    return table[~table.metric.str.startswith(("ref_before_", "ref_after_"))]


UNIT_KEYS = ["replicate", "unit", "method", "arm", "k", "metric"]


def unit_effects(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (replicate, unit, method, arm, k, metric): `plain`, the unit's own targets' mean
    change, and `did`, that minus the other targets' mean change in the same retrained models (NaN
    where no other target was measured), each averaged over the unit's members (seeds)."""
    table = changes_only(with_design(results))
    keys = ["replicate", "member_id", *UNIT_KEYS[1:]]
    own = table[table.own].groupby(keys)["value"].mean().rename("plain")
    other = table[~table.own].groupby(keys)["value"].mean().rename("other")
    members = pd.concat([own, other], axis=1).dropna(subset=["plain"]).reset_index()
    members["did"] = members["plain"] - members["other"]
    # a unit's `did` only where every one of its members measured the other targets (NaN kept)
    grouped = members.groupby(UNIT_KEYS)
    out = grouped[["plain"]].mean()
    out["did"] = grouped["did"].apply(lambda v: v.mean(skipna=False))
    return out.reset_index()


def _pair(units: pd.DataFrame, tested: tuple, control: str) -> pd.DataFrame | None:
    """The tested (method, k, metric) rows and the control's, paired by (replicate, unit)."""
    method, k, metric = tested
    keys = ["replicate", "unit"]
    top = units[(units.method == method) & (units.k == k) & (units.metric == metric)]
    top = top[top.arm == "topk"].set_index(keys)
    ctrl = units[(units.arm == control) & (units.k == k) & (units.metric == metric)]
    if ctrl.empty or top.empty:
        return None
    return top[["plain", "did"]].join(
        ctrl.set_index(keys)[["plain", "did"]], rsuffix="_c", how="inner"
    )


def unit_test(d: np.ndarray) -> dict:
    """Mean of the unit differences `d`, Student t 95% interval and p-value, the smallest effect
    detectable with 80% power at 5%, and the verdict."""
    n = len(d)
    out = {"n_units": n, "mean_diff": float(np.mean(d)) if n else float("nan")}
    sd = float(np.std(d, ddof=1)) if n > 1 else float("nan")
    if n > 1 and sd > 0:
        test = stats.ttest_1samp(d, 0.0)
        ci = test.confidence_interval(1 - ALPHA)
        out.update(ci_low=float(ci.low), ci_high=float(ci.high), p=float(test.pvalue))
        out["mde"] = detectable_effect(n, sd)
    else:
        out.update(ci_low=float("nan"), ci_high=float("nan"), p=float("nan"), mde=float("nan"))
    out["verdict"] = verdict(out["n_units"], out["p"], out["mean_diff"])
    return out


def detectable_effect(n: int, sd: float) -> float:
    """The smallest true mean difference a two-sided one-sample t test over `n` units with this
    spread detects with 80% power at 5% (statsmodels' power solver)."""
    from statsmodels.stats.power import TTestPower  # imported when needed: a second to load

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    size = TTestPower().solve_power(nobs=n, alpha=ALPHA, power=POWER, alternative="two-sided")
    return float(size * sd)


def verdict(n_units: int, p: float, mean_diff: float) -> str:
    """`undecided` with fewer than MIN_UNITS units; else `above` / `below` the control at p < 0.05,
    or `no clear difference`."""
    if n_units < MIN_UNITS:
        return "undecided"
    if np.isfinite(p) and p < ALPHA:
        return "above" if mean_diff > 0 else "below"
    return "no clear difference"


def units_label(pairs: pd.DataFrame) -> str:
    """What the units are, e.g. '10 targets x 1 replicate' or '1 group x 3 replicates'."""
    units = pairs.index.get_level_values("unit")
    kind = "target" if str(units[0]).startswith("t") else "group"
    per = pairs.groupby(level="replicate").size()
    reps = len(per)
    count = int(per.iloc[0]) if per.nunique() == 1 else f"{per.min()}-{per.max()}"
    plural = "s" if count != 1 else ""
    return f"{count} {kind}{plural} x {reps} replicate{'s' if reps != 1 else ''}"


def compare(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, k, metric, control): the method's top-k against that control over the
    independent units (a null pseudo-method only against the control it mimics). Columns: the
    own targets' mean changes (`topk_mean`, `control_mean`, their `ratio`), the unit test of the
    `estimate` (beyond other prompts where they were measured, else own prompts): `mean_diff`,
    `ci_low`, `ci_high`, `p`, `mde`, `verdict`, `n_units`, `units`, `n_targets`; the same test of
    the own targets' total change (`total_mean_diff`, `total_ci_low`, `total_ci_high`,
    `total_p`); and, with
    several replicates, `replicates`, `stable` (every replicate's own mean difference has the
    pooled sign) and `replicate_diffs`."""
    units = unit_effects(results)
    # the estimate is chosen once per metric and k, for every method and control alike: beyond
    # the other prompts only where every unit of every arm measured them
    within_of = {
        key: bool(part["did"].notna().all()) for key, part in units.groupby(["k", "metric"])
    }
    # targets per tested (method, k, metric), counted once: a target is counted where measured as
    # one of a member's own
    targets = own_rows(results).groupby(["method", "k", "metric"]).target.nunique()
    rows = []
    tested = units[units.arm == "topk"]
    for key, _ in tested.groupby(["method", "k", "metric"]):
        method, k, metric = key
        within = within_of[(k, metric)]
        for control in CONTROLS:
            if null_control(method) not in (None, control):
                continue
            pairs = _pair(units, key, control)
            if pairs is None or pairs.empty:
                continue
            column = "did" if within else "plain"
            diff = pairs[column] - pairs[f"{column}_c"]
            top, ctrl = float(pairs["plain"].mean()), float(pairs["plain_c"].mean())
            total = unit_test((pairs["plain"] - pairs["plain_c"]).to_numpy())
            row = {
                "method": method,
                "k": int(k),
                "metric": metric,
                "control": control,
                "n_targets": int(targets.get(key, 0)),
                "units": units_label(pairs),
                "estimate": ESTIMATES[within],
                "topk_mean": top,
                "control_mean": ctrl,
                **unit_test(diff.to_numpy()),
                "ratio": effect_ratio(top, ctrl),
                **{
                    f"total_{name}": total[name] for name in ("mean_diff", "ci_low", "ci_high", "p")
                },
            }
            reps = diff.groupby(level="replicate").mean()
            row["replicates"] = len(reps)
            row["stable"] = (
                bool(np.all(np.sign(reps) == np.sign(row["mean_diff"])) and row["mean_diff"] != 0)
                if len(reps) > 1
                else np.nan
            )
            row["replicate_diffs"] = ";".join(f"{v:.4g}" for v in reps) if len(reps) > 1 else ""
            rows.append(row)
    return pd.DataFrame(rows)


def prompt_effects(results: pd.DataFrame, metric: str = "delta_loss") -> pd.DataFrame:
    """Each prompt's own effect, conditional on that prompt: per (method, k, control, target), the
    top-k member's change of the target minus the control member's, paired by (replicate, seed),
    the arms of a pair having trained with the same seed. `n_retrains` pairs; their `mean_diff`,
    `min_diff` and `max_diff`; `control_sd`, the spread of the control's own change over its
    retrains (the scale a difference is read against); and a t test over the replicates' mean
    differences (`n_units` replicates: a replicate's seeds share its full model and its picks, so
    they are not independent units of a replicated design), verdict `undecided` below MIN_UNITS.
    Where a few prompts carry an effect and the others none (a planted canary), the verdict over
    all units of `compare` asks whether the method moves prompts on average; this asks it of
    each."""
    table = with_design(results)
    table = table[table.own & (table.metric == metric)]
    keys = ["replicate", "seed", "target", "prompt", "method", "arm", "k"]
    members = table.groupby(keys, as_index=False)["value"].mean()
    pair_keys = ["replicate", "seed", "target"]
    rows = []
    for (method, k), top in members[members.arm == "topk"].groupby(["method", "k"]):
        for control in CONTROLS:
            if null_control(method) not in (None, control):
                continue
            ctrl = members[(members.arm == control) & (members.k == k)]
            pairs = top.merge(ctrl[[*pair_keys, "value"]], on=pair_keys, suffixes=("", "_c"))
            if pairs.empty:
                continue
            pairs["diff"] = pairs["value"] - pairs["value_c"]
            for (target, prompt), part in pairs.groupby(["target", "prompt"]):
                reps = part.groupby("replicate")["diff"].mean().to_numpy()
                test = unit_test(reps)
                rows.append(
                    {
                        "method": method,
                        "k": int(k),
                        "control": control,
                        "target": int(target),
                        "prompt": prompt,
                        "n_retrains": len(part),
                        "mean_diff": float(part["diff"].mean()),
                        "min_diff": float(part["diff"].min()),
                        "max_diff": float(part["diff"].max()),
                        "control_sd": float(part["value_c"].std(ddof=1))
                        if len(part) > 1
                        else float("nan"),
                        "n_units": test["n_units"],
                        "p": test["p"],
                        "verdict": test["verdict"],
                    }
                )
    return pd.DataFrame(rows)


def arm_table(results: pd.DataFrame) -> pd.DataFrame:
    """The original paper's table format: per arm, mean, std and range of each metric."""
    table = per_target(results)
    grouped = table.groupby(["method", "arm", "k", "metric"])["value"]
    out = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()
    return out.rename(columns={"count": "n_targets"})


def experiment_table(results: pd.DataFrame) -> pd.DataFrame:
    """The original paper's per-experiment table: for each group of prompts (an experiment), arm and
    embedder space, the similarity to the reference outputs before and after retraining: mean, std
    and range over the group's prompts (each prompt's value averaged over seeds first)."""
    if "group" not in results or not results.metric.str.startswith("ref_before_").any():
        return pd.DataFrame()
    results = own_rows(results)
    per = results.groupby(["method", "arm", "k", "group", "metric", "target"], as_index=False)[
        "value"
    ].mean()
    rows = []
    for (method, arm, k, group), part in per.groupby(["method", "arm", "k", "group"]):
        for metric in sorted(m for m in part.metric.unique() if m.startswith("ref_before_")):
            space = metric[len("ref_before_") :]
            row = {
                "method": method,
                "arm": arm,
                "k": int(k),
                "experiment": int(group),
                "space": space,
            }
            for when in ("before", "after"):
                values = part[part.metric == f"ref_{when}_{space}"]["value"]
                row.update(
                    {
                        f"{when}_mean": values.mean(),
                        f"{when}_std": values.std(),
                        f"{when}_min": values.min(),
                        f"{when}_max": values.max(),
                    }
                )
            row["prompts"] = int(part[part.metric == metric]["target"].nunique())
            rows.append(row)
    return pd.DataFrame(rows)
