"""The experts' review in the report: a picture of each method's precision@k and nDCG@k against the
experts' majority (bootstrap intervals over tasks) beside its LDS where an LDS run scored it, the
agreement between experts in one sentence, and the side-by-side table."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..store.files import atomic_write  # noqa: E402
from .document import Block, Section  # noqa: E402

PANELS = (  # column, its interval's columns, the axis label
    ("precision", "precision_low", "precision_high", "precision@k (experts' majority)"),
    ("ndcg", "ndcg_low", "ndcg_high", "nDCG@k (mean expert grade)"),
    ("lds", "lds_low", "lds_high", "LDS (retraining)"),
)


def review_plot(compared: pd.DataFrame, path: Path) -> Path:
    """One panel per judge (precision, nDCG, and LDS where measured): each method's value and
    95% interval, methods in the order of their precision."""
    rows = compared.sort_values("precision", ascending=True)
    panels = [p for p in PANELS if rows[p[0]].notna().any()]
    if not panels:  # a young study: no candidate has enough reviewers yet
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no candidate has been graded by enough reviewers yet",
                ha="center", va="center")  # fmt: skip
        atomic_write(Path(path), lambda p: fig.savefig(p, dpi=100, format="png"))
        plt.close(fig)
        return Path(path)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 0.5 * len(rows) + 1.4),
                             squeeze=False, sharey=True)  # fmt: skip
    y = np.arange(len(rows))
    for ax, (col, low, high, label) in zip(axes[0], panels, strict=True):
        ok = rows[col].notna().to_numpy()
        ax.hlines(y[ok], rows[low][ok], rows[high][ok], color="0.4", lw=1.5)
        ax.plot(rows[col][ok], y[ok], "o", color="tab:blue")
        ax.set_xlabel(label, fontsize=9)
        ax.set_yticks(y, rows["method"])
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Each method against the experts and against retraining (95% intervals)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return Path(path)


def review_finding(agreement: pd.DataFrame, compared: pd.DataFrame) -> str:
    a = agreement.iloc[0]
    scored = compared[compared["precision"].notna()]
    if scored.empty:
        return (
            f"{int(a.reviewers)} experts have graded candidates of {int(a.tasks)} prompts; no "
            "candidate has been graded by enough of them yet for a method's precision."
        )
    best = scored.sort_values("precision", ascending=False).iloc[0]
    return (
        f"{int(a.reviewers)} experts graded {int(a.candidates)} candidates of {int(a.tasks)} "
        f"prompts, blinded; their agreement (Krippendorff's alpha) is {a.alpha:.2f} "
        f"[{a.low:.2f}, {a.high:.2f}]. By their majority, {best.method}'s top {int(best.k)} held "
        f"the largest share of influential items: {best.precision:.2f} "
        f"[{best.precision_low:.2f}, {best.precision_high:.2f}] over {int(best.tasks)} prompts."
    )


def review_section(run: Path) -> Section:
    agreement = pd.read_csv(run / "agreement.csv")
    compared = pd.read_csv(run / "side_by_side.csv")
    blocks = [
        Block(
            "text",
            "Invited experts graded, for each prompt, the training items the methods ranked "
            "highest (pooled, each item once, without method names or scores, in an order of "
            "their own) as clearly influenced, partly, or not. A method's precision@k is the "
            "share of its top k that the experts' majority calls influenced; nDCG@k weighs them "
            "by rank and by the mean grade. Intervals resample prompts.",
        ),
        Block(
            "image",
            caption="each method against the experts (and its LDS where an lds run scored it)",
            path=run / "experts.png",
        ),
        Block(
            "table",
            caption="the numbers of the plot, with the counterfactual effect",
            frame=compared.dropna(axis=1, how="all"),  # a judge not run here: no column
        ),
        Block("table", caption="agreement between experts", frame=agreement, folded=True),
    ]
    return Section("Experts' review", blocks)
