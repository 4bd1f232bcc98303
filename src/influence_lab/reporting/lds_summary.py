"""The tables, pictures and text of an `lds` result: the most memorized training items, training
dynamics of the tracked items, the LDS table in the console, and summary.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from ..console import console
from ..evaluation.lds_score import REFERENCES, memorization
from ..store.files import atomic_write, write_text
from .lds_figures import dynamics_plot, memorization_grid


def memorized(bundle, masks, item_losses, folder: Path, top: int) -> dict:
    """memorization.parquet (every training item) and a picture of the `top` most memorized."""
    folder = Path(folder)
    mem = memorization(masks, item_losses)
    table = pd.DataFrame(
        {
            "id": list(bundle.train["id"]),
            "caption": list(bundle.train["caption"]),
            "memorization": mem,
        }
    ).sort_values("memorization", ascending=False, na_position="last")
    atomic_write(folder / "memorization.parquet", lambda p: table.to_parquet(p, index=False))
    best = table.head(top)
    index = {item_id: i for i, item_id in enumerate(bundle.train["id"])}
    title = "most memorized training items: mean loss held out minus trained on"
    if bundle.kind == "image":
        images = np.asarray(bundle.train.with_format("numpy")["image"])[
            [index[i] for i in best["id"]]
        ]
        labels = [f"{r.id} {r.caption} ({r.memorization:.3g})" for r in best.itertuples()]
        return {
            "memorization": memorization_grid(images, labels, folder / "memorization.png", title)
        }
    texts = list(bundle.train["text"])
    lines = [title, ""] + [
        f"{r.memorization:>9.3f}  {texts[index[r.id]]:<20} {r.id} ({r.caption})"
        for r in best.itertuples()
    ]
    write_text(folder / "memorization.txt", "\n".join(lines) + "\n")
    return {"memorization": folder / "memorization.txt"}


def dynamics(
    runs: dict, members: list[dict], track_ids: list[str], folder: Path, data_name: str
) -> dict:
    """dynamics.parquet and its plot: the tracked items' loss per epoch under each subset model."""
    frames = []
    for member in members:
        path = runs[member["member_id"]] / "dynamics.parquet"
        if path.exists():
            frame = pd.read_parquet(path)
            frames.append(frame[frame["id"].isin(track_ids)].assign(member=member["member_id"]))
    if not frames:
        console.print(
            "lds: no training dynamics recorded (the subset models were trained by an earlier call "
            "that tracked other items)",
            highlight=False,
        )
        return {}
    table = pd.concat(frames, ignore_index=True)
    atomic_write(Path(folder) / "dynamics.parquet", lambda p: table.to_parquet(p, index=False))
    return {
        "dynamics": dynamics_plot(
            table,
            Path(folder) / "dynamics.png",
            f"training dynamics on {data_name}: loss of tracked items per epoch",
        )
    }


COLUMNS = ("method", "LDS", "95% interval", "share of ceiling", "damping", "targets")


def table_rows(table: pd.DataFrame) -> list[list[str]]:
    """The LDS table as text cells, best first and the reference rows (`retraining`, `ceiling`)
    last: method, LDS, interval, share of the ceiling and the chosen damping (- where there is
    none)."""

    def cell(row, key, fmt):
        value = getattr(row, key, float("nan"))
        return "-" if pd.isna(value) else format(value, fmt)

    ordered = pd.concat(
        [
            table[~table["method"].isin(REFERENCES)].sort_values("lds", ascending=False),
            *(table[table["method"] == label] for label in REFERENCES),
        ]
    )
    return [
        [
            str(r.method),
            f"{r.lds:.3f}",
            f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
            cell(r, "share", ".2f"),
            cell(r, "damping", "g"),
            str(r.targets),
        ]
        for r in ordered.itertuples()
    ]


def markdown_table(table: pd.DataFrame) -> list[str]:
    """The LDS table as markdown lines."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in table_rows(table)]


def print_table(table: pd.DataFrame, title: str) -> None:
    shown = Table(title=title, title_justify="left")
    for col in COLUMNS:
        shown.add_column(col, justify="left" if col == "method" else "right")
    for cells in table_rows(table):
        shown.add_row(*cells)
    console.print(shown)


COST_COLUMNS = ("method", "s / target", "s / target / 1k items", "peak MB", "rise MB", "shared")


def cost_cells(cost: pd.DataFrame) -> list[list[str]]:
    """The cost table's rows as text (`evaluation.cost.cost_rows`)."""
    return [
        [
            str(r.method),
            f"{r.seconds_per_target:.3g}",
            f"{r.seconds_per_target_per_1k_items:.3g}",
            f"{r.peak_mb:.0f}",
            f"{r.rise_mb:.0f}",
            str(r.shared or ""),
        ]
        for r in cost.itertuples()
    ]


def print_cost(cost: pd.DataFrame, items: int) -> None:
    shown = Table(
        title=f"cost: wall seconds and resident memory of each method ({items:,} training items)",
        title_justify="left",
    )
    for col in COST_COLUMNS:
        shown.add_column(col, justify="left" if col in ("method", "shared") else "right")
    for cells in cost_cells(cost):
        shown.add_row(*cells)
    console.print(shown)


def summary_markdown(
    table: pd.DataFrame, title: str, pictures: dict, cost: pd.DataFrame | None = None
) -> str:
    lines = [f"# {title}", "", *markdown_table(table)]
    if cost is not None and len(cost):
        lines += [
            "",
            "Cost (wall seconds and resident memory while each method prepared and scored; "
            "`cost.csv`):",
            "",
            "| " + " | ".join(COST_COLUMNS) + " |",
            "|" + "---|" * len(COST_COLUMNS),
            *("| " + " | ".join(cells) + " |" for cells in cost_cells(cost)),
        ]
    lines += [""] + [
        f"![{name}]({path.name})" for name, path in pictures.items() if path.suffix == ".png"
    ]
    return "\n".join(lines) + "\n"
