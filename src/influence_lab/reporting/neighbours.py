"""Neighbour grids: a prompt's outputs, then its top training items with captions and scores; the
W&B table and the console summary of an attribution."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..store.files import atomic_write  # noqa: E402
from ..store.paths import inside  # noqa: E402
from .figures import plain, show_image  # noqa: E402


def _show(ax, img):
    show_image(ax, img)
    ax.set_xticks([])
    ax.set_yticks([])


def neighbour_grid(
    prompt: str,
    method: str,
    outputs: np.ndarray,
    neighbours: np.ndarray,
    labels: list[str],
    path: Path,
) -> Path:
    cols = max(len(outputs), len(neighbours))
    fig, axes = plt.subplots(2, cols, figsize=(1.35 * cols, 3.6), squeeze=False)
    for c in range(cols):
        for r in range(2):
            axes[r, c].axis("off")
        if c < len(outputs):
            axes[0, c].axis("on")
            _show(axes[0, c], outputs[c])
            axes[0, c].set_title(f"output {c}", fontsize=7)
        if c < len(neighbours):
            axes[1, c].axis("on")
            _show(axes[1, c], neighbours[c])
            axes[1, c].set_title(plain("\n".join(textwrap.wrap(labels[c], 16))), fontsize=5.5)
    fig.suptitle(
        plain(
            f"{method}: '{prompt}'\ntop: generated outputs; bottom: most influential training items"
        ),
        fontsize=8,
    )
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


def neighbour_text(prompt: str, method: str, outputs: list[str], rows, path: Path) -> Path:
    lines = [
        f"{method}: '{prompt}'",
        f"outputs: {', '.join(outputs)}",
        "most influential training items:",
    ]
    for r in rows:
        lines.append(f"  {r['rank']:>3}. {r['id']:<24} {r['caption']:<20} score {r['score']:.4g}")
    atomic_write(Path(path), lambda p: p.write_text("\n".join(lines) + "\n"))
    return Path(path)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "prompt"


def draw_neighbours(
    folder: Path, bundle, table: pd.DataFrame, prompts, outputs, top: int
) -> list[Path]:
    """One picture per prompt and method under `folder/neighbours/`: the prompt's outputs and the
    method's `top` items (a grid PNG for images, a text file for texts)."""
    index_of = {item_id: i for i, item_id in enumerate(bundle.train["id"])}
    images = (
        np.asarray(bundle.train.with_format("numpy")["image"]) if bundle.kind == "image" else None
    )
    pictures = []
    for (target, method), group in table.groupby(["target", "method"], sort=True):
        best = group.sort_values("rank").head(top)
        # prompts (possibly drawn from the data's captions) and method names become file names only
        # through _slug, which keeps [a-z0-9-]; `inside` makes sure the file stays in the folder
        stem = inside(
            folder,
            Path(folder) / "neighbours" / f"{target:03d}-{_slug(prompts[target])}-{_slug(method)}",
            "neighbour file",
        )
        if images is not None:
            labels = [f"{r.id} {r.caption} ({r.score:.3g})" for r in best.itertuples()]
            neighbours = images[[index_of[i] for i in best["id"]]]
            pictures.append(
                neighbour_grid(
                    prompts[target],
                    method,
                    outputs[target],
                    neighbours,
                    labels,
                    stem.with_suffix(".png"),
                )
            )
        else:
            pictures.append(
                neighbour_text(
                    prompts[target],
                    method,
                    outputs[target],
                    best.to_dict("records"),
                    stem.with_suffix(".txt"),
                )
            )
    return pictures


def wandb_table(bundle, table: pd.DataFrame, top: int) -> tuple[list[str], list[list]]:
    """(columns, rows) of the W&B table of each prompt's and method's `top` items, with the items'
    content (a W&B image for images)."""
    import wandb

    index_of = {item_id: i for i, item_id in enumerate(bundle.train["id"])}
    rows = []
    for r in table[table["rank"] <= top].itertuples():
        item = bundle.train[index_of[r.id]]
        content = (
            wandb.Image(np.asarray(item["image"]).transpose(1, 2, 0).squeeze())
            if bundle.kind == "image"
            else item["text"]
        )
        rows.append([r.prompt, r.method, r.rank, r.id, r.caption, r.score, content])
    return ["prompt", "method", "rank", "id", "caption", "score", "content"], rows


def attribution_summary(table: pd.DataFrame, path: Path, pictures: list[Path]) -> str:
    """What an attribution found, in a few lines: the first prompt's top 3 items per method."""
    lines = [
        f"[green]attributed[/] {table['target'].nunique()} prompts "
        f"x {table['method'].nunique()} methods "
        f"-> {path}"
    ]
    for method, group in table[table["rank"] <= 3].groupby("method", sort=False):
        first = group[group["target"] == group["target"].min()]
        lines.append(f"  {method:<14} '{first['prompt'].iloc[0]}': {', '.join(first['id'])}")
    if pictures:
        lines.append(f"  neighbour grids: {pictures[0].parent}/")
    return "\n".join(lines)
