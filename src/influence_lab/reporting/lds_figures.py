"""Pictures of the `lds` stage: LDS bars with intervals, the most memorized items, and training
dynamics (loss of tracked items over epochs, for the models that saw them and those that did
not)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..evaluation.lds_score import CEILING, REFERENCES, RETRAINING, families  # noqa: E402
from ..store.files import atomic_write  # noqa: E402
from .figures import plain, show_image  # noqa: E402


def _save(fig, path: Path, dpi: int = 110) -> Path:
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=dpi, format="png"))
    plt.close(fig)
    return Path(path)


def lds_bars(table: pd.DataFrame, path: Path, title: str) -> Path:
    """One bar per method label: mean LDS with its bootstrap 95% interval; the noise ceiling (a
    `ceiling` row) as a dashed line with its interval shaded, another retraining's agreement (a
    `retraining` row) as a dotted line."""
    ceiling = table[table["method"] == CEILING]
    retraining = table[table["method"] == RETRAINING]
    table = table[~table["method"].isin(REFERENCES)].sort_values("lds", ascending=True)
    fig, ax = plt.subplots(figsize=(7, 0.38 * len(table) + 1.2))
    y = np.arange(len(table))
    err = np.vstack([table["lds"] - table["ci_low"], table["ci_high"] - table["lds"]])
    colors = ["tab:orange" if f == "gradient" else "tab:blue" for f in families(table)]
    ax.barh(y, table["lds"], xerr=np.nan_to_num(err), color=colors, capsize=3)
    ax.set_yticks(y, table["method"], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color="tab:blue", label="search"), Patch(color="tab:orange", label="gradient")]
    if len(ceiling):
        c = ceiling.iloc[0]
        ax.axvspan(c["ci_low"], c["ci_high"], color="0.85", zorder=0)
        ax.axvline(c["lds"], color="0.3", ls="--", lw=1.2)
        handles.append(Line2D([], [], color="0.3", ls="--", label=f"noise ceiling {c['lds']:.2f}"))
    if len(retraining):
        r = retraining.iloc[0]
        ax.axvline(r["lds"], color="0.3", ls=":", lw=1.2)
        handles.append(Line2D([], [], color="0.3", ls=":", label=f"retraining {r['lds']:.2f}"))
    ax.legend(
        handles=handles,
        fontsize=7,
        loc="lower right",
    )
    ax.set_xlabel("LDS (Spearman, mean over targets, 95% bootstrap interval)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def damping_lines(curves: pd.DataFrame, path: Path, title: str) -> Path:
    """LDS against the damping per gradient method, on the selection and the evaluation subsets;
    the chosen damping (best on selection) marked."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (method, group) in enumerate(curves.groupby("method", sort=True)):
        color = f"C{i}"
        group = group.sort_values("damping")
        ax.plot(group.damping, group.lds_selection, "-o", color=color, ms=3, label=method)
        ax.plot(group.damping, group.lds_evaluation, "--", color=color, lw=1)
        best = group.loc[group.lds_selection.idxmax()]
        ax.plot([best.damping], [best.lds_selection], "*", color=color, ms=11)
    ax.set_xscale("log")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("damping (x mean diagonal of the kernel)")
    ax.set_ylabel("LDS (mean over targets)")
    ax.set_title(
        title + "\nsolid: selection subsets (star: chosen); dashed: evaluation", fontsize=9
    )
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def memorization_grid(
    images: np.ndarray, labels: list[str], path: Path, title: str, cols: int = 8
) -> Path:
    """The most memorized training items, each titled with its id, caption and score."""
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 2.0 * rows + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(images):
            continue
        show_image(ax, images[k])
        ax.set_title(plain("\n".join(textwrap.wrap(labels[k], 18))), fontsize=5.5)  # ids, captions
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def dynamics_plot(dynamics: pd.DataFrame, path: Path, title: str) -> Path:
    """Per tracked item: mean loss per epoch over the models that trained on it (solid) and the
    models that did not (dashed)."""
    items = list(dict.fromkeys(dynamics["id"]))
    cols = min(4, len(items))
    rows = int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items, strict=False):
        ax.axis("on")
        sub = dynamics[dynamics["id"] == item]
        for included, style, label in ((True, "-", "trained on it"), (False, "--", "held out")):
            curve = sub[sub["included"] == included].groupby("epoch")["loss"].mean()
            if len(curve):
                ax.plot(curve.index, curve.values, style, label=label)
        ax.set_title(plain(item), fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel("loss (log scale)", fontsize=7)
        ax.set_yscale("log")
        ax.tick_params(which="both", labelsize=6)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
