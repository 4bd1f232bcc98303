"""The sections of the report from the finished results of one model and dataset: the finding in
words, the counterfactual table and bars with intervals, the LDS table, memorization and training
dynamics, neighbour grids, and the sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation.lds_score import CEILING, REFERENCES, RETRAINING, families
from ..evaluation.removal_plans import design_of
from .document import Block, Section
from .lds_summary import COLUMNS as LDS_COLUMNS
from .lds_summary import table_rows
from .review_summary import review_finding, review_section
from .sweep_summary import forest_plot, headline, replicate_count, shown_columns, stable_mask

STAGES = ("attribute", "counterfactual", "lds", "review")


def newest(root: Path, stage: str, name: str) -> Path | None:
    """The most recently finished result of `stage` for `<model>-<data>`, if any (of the
    counterfactual sweeps, one that tested a method: not a null run of `calibrate`)."""
    done = [p for p in (root / stage).glob(f"{name}-*") if (p / "done").exists()]
    if stage == "counterfactual":
        done = [p for p in done if not _null_run(p)]
    return max(done, key=lambda p: (p / "done").stat().st_mtime) if done else None


def calibration_of(root: Path, name: str, sweep: Path | None) -> Path | None:
    """The newest finished calibration of `<model>-<data>` whose design (design.json) is the
    sweep's (`plans.design_of` of its config.yaml; a pooled folder's from its first replicate,
    with the replicate count); None when no calibration matches."""
    if sweep is None:
        return None
    config = sweep / "config.yaml"
    if not config.exists() and (sweep / "replicates.json").exists():
        config = Path(json.loads((sweep / "replicates.json").read_text())[0]) / "config.yaml"
    if not config.exists():
        return None
    from omegaconf import OmegaConf

    want = design_of(OmegaConf.to_container(OmegaConf.load(config), resolve=False))
    found = [
        p
        for p in (root / "calibration").glob(f"{name}-*")
        if (p / "done").exists() and (p / "design.json").exists()
    ]
    for path in sorted(found, key=lambda p: (p / "done").stat().st_mtime, reverse=True):
        if json.loads((path / "design.json").read_text()) == want:
            return path
    return None


def _null_run(sweep: Path) -> bool:
    """A sweep of `calibrate`'s: its plan tested no method (only null arms and controls)."""
    plan = sweep / "plan.json"
    return plan.exists() and json.loads(plan.read_text()).get("methods") == []


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# the metrics the finding speaks of, when the sweep measured them: what each measures, and the
# verbs for a rise and a fall of the metric
FINDING_METRICS = {
    "delta_loss": ("the loss on the original outputs", "raised", "lowered"),
    "ref_drop_model": (
        "the similarity of the outputs to each prompt's reference output (the paper's measure, "
        "in the model's latent space)",
        "lowered",
        "raised",
    ),
}


def _effect(metric: str, value: float) -> str:
    """'raised the loss on the original outputs by 0.72' (the verb follows the sign)."""
    if metric not in FINDING_METRICS:
        return f"changed {metric} by {value:.3g}"
    what, up, down = FINDING_METRICS[metric]
    return f"{up if value >= 0 else down} {what} by {abs(value):.3g}"


def counterfactual_finding(stats: pd.DataFrame) -> str:
    """One sentence per method and measured finding metric (the headline metric when none is
    measured), read from the calibrated verdicts (`statistics.verdict`): the controls the method's
    top-k beat, those it went the other way against, those it did not clearly differ from, and
    those the design had too few independent units to decide. Pooled over replicates, a control
    counts as beaten (or lost to) only where the verdict is also `stable` (the same sign in every
    replicate)."""
    if "n_units" not in stats:
        return (
            "These counterfactual statistics predate the analysis over independent units (7 "
            "December 2026), which withdrew them; they are not read as findings. Rerun "
            "influence-lab counterfactual."
        )
    measured = [m for m in FINDING_METRICS if m in set(stats.metric)]
    rows = stats[stats.metric.isin(measured)] if measured else headline(stats)
    count = replicate_count(stats)
    sentences = [f"Pooled over {count} replicates of the whole chain."] if count > 1 else []
    stable = stable_mask(rows) if count > 1 else np.ones(len(rows), bool)
    rows = rows.assign(stable_=stable)
    for (method, k, metric), group in rows.groupby(["method", "k", "metric"], sort=False):
        kinds: dict[str, list[str]] = {"above": [], "below": [], "unclear": [], "undecided": []}
        for r in group.itertuples():
            v = _verdict_of(r)
            if v in ("above", "below") and not r.stable_:
                v = "unclear"
            kinds[v].append(r.control)
        topk = group["topk_mean"].iloc[0]
        text = f"Removing {method}'s top {k} {_effect(metric, topk)}"
        if "estimate" in group and (group["estimate"] == "beyond other prompts").any():
            text += " and, beyond the change of the other prompts' outputs in the same models,"
        parts = []
        if kinds["above"]:
            beaten = _join(kinds["above"])
            every = not (kinds["below"] or kinds["unclear"] or kinds["undecided"])
            parts.append(f"more than every control ({beaten})" if every else f"more than {beaten}")
        if kinds["below"]:
            parts.append(f"less than {_join(kinds['below'])} (the effect goes the other way)")
        if kinds["unclear"]:
            parts.append(f"not clearly differently from {_join(kinds['unclear'])}")
        text += (" " if text.endswith(",") else ", ") + "; ".join(parts) if parts else ""
        if kinds["undecided"]:
            units = int(group["n_units"].min()) if "n_units" in group else 0
            joint = "; " if parts else (" " if text.endswith(",") else ", ")
            text += (
                f"{joint}against {_join(kinds['undecided'])} the design cannot "
                f"decide ({units} independent units; at least 6 are needed)"
            )
        units = group["units"].iloc[0] if "units" in group else ""
        sentences.append(text + (f" [units: {units}]." if units else "."))
    return " ".join(sentences)


def _verdict_of(r) -> str:
    """The verdict of a stats row in the finding's words."""
    v = str(getattr(r, "verdict", ""))
    return {"no clear difference": "unclear"}.get(v, v if v in ("above", "below") else "undecided")


def calibration_finding(rates: pd.DataFrame) -> str:
    """One sentence: how often a calibration of the sweep's design saw its null arms' intervals
    exclude 0 against their own controls (the false-positive rate of the design's verdicts) on
    the headline metric."""
    part = headline(rates)
    if not len(part):
        return ""
    rates_text = _join(
        [
            f"{r.fpr:.0%} [{r.fpr_low:.0%}, {r.fpr_high:.0%}] against {r.control}"
            for r in part.itertuples()
        ]
    )
    runs = int(part.runs.max())
    return (
        f"The design's false-positive rate, measured with {runs} null runs (random picks drawn "
        f"like each control, against it; calibrated: 2-9%): {rates_text}."
    )


def calibration_section(run: Path) -> Section:
    rates = pd.read_csv(run / "rates.csv")
    blocks = [
        Block(
            "text",
            "Null arms drawn like each control (null_random: random items of the whole set; "
            "null_random_pool: of the prompt's pool; null_none: nothing removed, another seed) "
            "went through the same design, each run with every seed shifted. A calibrated design's "
            "95% interval excludes 0 in about 5% of null runs and its p-values are uniform.",
        ),
        Block("table", caption="false-positive rate per control and metric", frame=rates),
    ]
    if (run / "calibration.png").exists():
        blocks.append(
            Block(
                "image",
                caption="each null run's interval and the p-values",
                path=run / "calibration.png",
            )
        )
    return Section("Calibration of the counterfactual design", blocks)


def lds_finding(table: pd.DataFrame) -> str:
    ceiling = table[table["method"] == CEILING]
    retraining = table[table["method"] == RETRAINING]
    ranked = table[~table["method"].isin(REFERENCES)].sort_values("lds", ascending=False)
    best = ranked.iloc[0]
    text = (
        f"Highest LDS: {best['method']} at {best['lds']:.3f} "
        f"[{best['ci_low']:.3f}, {best['ci_high']:.3f}] "
        f"over {int(best['targets'])} targets."
    )
    if len(ceiling):
        c = ceiling.iloc[0]
        text += (
            f" Noise ceiling (the most any method can reach) {c['lds']:.3f} "
            f"[{c['ci_low']:.3f}, {c['ci_high']:.3f}]: the best method reaches "
            f"{best['lds'] / c['lds']:.0%} of it."
        )
    if len(retraining):
        r = retraining.iloc[0]
        text += f" Another retraining with as many seeds agrees to {r['lds']:.3f}."
    gradient = ranked[families(ranked) == "gradient"]
    search = ranked[~ranked.index.isin(gradient.index)]
    if len(gradient) and len(search):
        g, s = gradient.iloc[0], search.iloc[0]
        text += (
            f" Best gradient method {g['method']} {g['lds']:.3f}; best search method {s['method']} "
            f"{s['lds']:.3f}."
        )
    return text


def attribution_section(run: Path, max_grids: int) -> Section:
    table = pd.read_parquet(run / "attribution.parquet")
    methods = ", ".join(dict.fromkeys(table["method"]))
    section = Section(
        "Attribution",
        [
            Block(
                "text",
                f"{table['target'].nunique()} prompts, methods: {methods}. Each grid: the "
                "prompt's generated outputs on top, the training items the method ranks most "
                "influential below, with their ids, captions and scores.",
            )
        ],
    )
    grids = sorted((run / "neighbours").glob("*.png"))[:max_grids]
    for start in range(0, len(grids), 2):  # two prompts side by side
        pair = grids[start : start + 2]
        section.blocks.append(Block("images", caption=" | ".join(g.stem for g in pair), paths=pair))
    for listing in sorted((run / "neighbours").glob("*.txt"))[:max_grids]:
        section.blocks.append(Block("code", text=listing.read_text()))
    top = table[table["rank"] <= 3][["prompt", "method", "rank", "id", "caption", "score"]]
    section.blocks.append(
        Block("table", caption="the top 3 items per prompt and method", frame=top, folded=True)
    )
    return section


def finding_metrics(stats: pd.DataFrame) -> dict[str, str]:
    """The metrics the finding and the forest plot speak of, with an axis label each."""
    labels = {
        "delta_loss": "loss on the original outputs: top-k minus control (nats)",
        "ref_drop_model": "drop of similarity to the reference: top-k minus control",
    }
    if "estimate" in stats:  # the verdict's estimate of the loss: beyond the other prompts'
        loss = stats[stats.metric == "delta_loss"]
        if len(loss) and (loss["estimate"] == "beyond other prompts").all():
            labels["delta_loss"] = (
                "loss on the prompt's outputs beyond the other prompts': top-k minus control (nats)"
            )
    measured = [m for m in FINDING_METRICS if m in set(stats.metric)]
    if not measured:
        measured = [headline(stats).metric.iloc[0]]
    return {m: labels.get(m, f"{m}: top-k minus control") for m in measured}


def counterfactual_section(run: Path, folder: Path) -> Section:
    stats = pd.read_csv(run / "stats.csv")
    arms = pd.read_csv(run / "arms.csv")
    metrics = finding_metrics(stats)
    cols = shown_columns(stats, ("metric",), ("replicates", "stable", "topk_jaccard"))
    count = replicate_count(stats)
    pooled = count > 1
    over = (
        f"over the independent units of {count} replicates (t 95% intervals)"
        if pooled
        else "over independent units (t 95% intervals)"
    )
    section = Section("Counterfactual retraining")  # its finding opens the report
    section.blocks += [
        Block(
            "text",
            "Each method's top-k items per prompt were removed and the model retrained; the "
            "controls removed k random items of the prompt filter's pool (random_pool), k random "
            "items (random), or nothing, with a new seed (none). A point right of 0 means removing "
            "the method's items changed the outputs more than the control did.",
        ),
        Block(
            "image",
            caption=f"top-k effect minus each control's, {over}",
            path=forest_plot(stats, metrics, folder / "forest.png"),
        ),
        Block(
            "table",
            caption="the numbers of the plot",
            frame=stats[stats.metric.isin(list(metrics))][cols],
            folded=True,
        ),
        Block(
            "table",
            caption="every metric, per arm (mean, std, range over prompts)",
            frame=arms,
            folded=True,
        ),
    ]
    if (run / "experiments.csv").exists():
        section.blocks.append(
            Block(
                "table",
                caption="per experiment (group of prompts): cosine similarity to the "
                "reference outputs before and after retraining (the paper's table)",
                frame=pd.read_csv(run / "experiments.csv"),
                folded=True,
            )
        )
    return section


def lds_section(run: Path) -> Section:
    table = pd.read_csv(run / "lds.csv")
    section = Section("Linear datamodeling score")  # its finding opens the report
    if (run / "lds.png").exists():
        section.blocks.append(
            Block(
                "image",
                caption="LDS per method with 95% intervals; dashed: the noise ceiling (the most "
                "any method can reach), dotted: another retraining with as many seeds",
                path=run / "lds.png",
            )
        )
    section.blocks.append(
        Block(
            "table",
            caption="LDS per method (Spearman, mean over targets, 95% interval)",
            frame=pd.DataFrame(table_rows(table), columns=list(LDS_COLUMNS)),
            folded=True,
        )
    )
    captions = {
        "lds_damping.png": "LDS against the damping (chosen on the selection subsets)",
        "memorization.png": "the most memorized training items",
        "dynamics.png": "training dynamics of tracked items (trained on it vs held out)",
    }
    for name, caption in captions.items():
        if (run / name).exists():
            section.blocks.append(Block("image", caption=caption, path=run / name, folded=True))
    if (run / "memorization.txt").exists():
        section.blocks.append(
            Block(
                "code",
                caption="the most memorized items",
                text=(run / "memorization.txt").read_text(),
                folded=True,
            )
        )
    return section


def regeneration_blocks(sweep: Path, attribute: Path | None, count: int) -> list[Block]:
    """Up to `count` prompts: the neighbour grid of the first method (what it would remove) beside
    the outputs before and after retraining without it (the sweep's `regenerated/` pictures)."""
    blocks = []
    for picture in sorted((sweep / "regenerated").glob("*.*"))[:count]:
        grids = (
            sorted((attribute / "neighbours").glob(f"{picture.stem}-*.png")) if attribute else []
        )
        if picture.suffix == ".txt":
            blocks.append(Block("code", caption=picture.stem, text=picture.read_text()))
            continue
        paths = [*grids[:1], picture]
        blocks.append(Block("images", caption=" | ".join(p.stem for p in paths), paths=paths))
    return blocks


def report_sections(found: dict[str, Path | None], max_grids: int, folder: Path) -> list[Section]:
    """The sections for the newest results `found` of each stage (None: none finished), the
    finding in words first; pictures made for the report go into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    sections = []
    words = []
    if found["counterfactual"]:
        words.append(counterfactual_finding(pd.read_csv(found["counterfactual"] / "stats.csv")))
    if found.get("calibration"):
        words.append(calibration_finding(pd.read_csv(found["calibration"] / "rates.csv")))
    if found["lds"]:
        words.append(lds_finding(pd.read_csv(found["lds"] / "lds.csv")))
    if found.get("review"):
        words.append(
            review_finding(
                pd.read_csv(found["review"] / "agreement.csv"),
                pd.read_csv(found["review"] / "side_by_side.csv"),
            )
        )
    if words:
        sections.append(Section("Finding", finding=" ".join(words)))
    config = next(
        (
            p / "config.yaml"
            for p in (found["counterfactual"], found["lds"])
            if p and (p / "config.yaml").exists()
        ),
        None,
    )
    if found["counterfactual"]:
        sections.append(counterfactual_section(found["counterfactual"], folder))
        regenerated = regeneration_blocks(
            found["counterfactual"], found["attribute"], max(1, max_grids // 2)
        )
        if regenerated:
            text = (
                "Left: the training items a method ranks most influential for a prompt. Right: the "
                "prompt's outputs from the full model (top row) and, with the same seeds, from "
                "the models retrained without each arm's items."
            )
            sections.append(
                Section("Outputs after retraining", [Block("text", text), *regenerated])
            )
    if found.get("calibration"):
        sections.append(calibration_section(found["calibration"]))
    if found["lds"]:
        sections.append(lds_section(found["lds"]))
    if found.get("review"):
        sections.append(review_section(found["review"]))
    if found["attribute"]:
        sections.append(attribution_section(found["attribute"], max_grids))
    sources = Section(
        "Sources", [Block("text", f"{stage}: {path}") for stage, path in found.items() if path]
    )
    if config is not None:
        sources.blocks.append(
            Block("code", caption="the configuration", text=config.read_text(), folded=True)
        )
    sections.append(sources)
    return sections
