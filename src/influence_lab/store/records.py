"""Typed records of what one stage hands the next: the `provenance.json` of a generate and of an
attribute result, and the generated outputs (`outputs.parquet`, with `images.npy` for images)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InfluenceLabError
from .files import atomic_write, read_json, write_json, write_npy

PROVENANCE = "provenance.json"


class _Record:
    """A dataclass written as `provenance.json` (keys sorted) and read back, ignoring unknown keys
    and defaulting missing ones to None (files written by older versions)."""

    def write(self, folder: Path) -> Path:
        return write_json(Path(folder) / PROVENANCE, asdict(self))  # type: ignore[call-overload]

    @classmethod
    def read(cls, folder: Path):
        data: dict[str, Any] = read_json(Path(folder) / PROVENANCE)
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class GenerateProvenance(_Record):
    """Which model made the outputs, for which prompts, with which seeds."""

    model_signature: str
    model_dir: str
    prompts: list[str]
    seeds: list[int]  # the seeds of the m outputs of a prompt when every prompt uses the same
    prompt_seeds: list[list[int]] | None  # the seeds of each prompt's outputs
    data_fingerprint: str


@dataclass(frozen=True)
class AttributeProvenance(_Record):
    """What an attribution ranked: the generate result, the methods and their settings."""

    generate_signature: str
    generate_dir: str
    methods: list[str]
    attribution: dict[str, Any]
    embedders: dict[str, Any]
    embedding_dirs: dict[str, str]
    data_fingerprint: str
    dampings: dict[str, float] | None = None  # TRAK / D-TRAK dampings chosen by an LDS run


def write_outputs(folder: Path, provenance: GenerateProvenance, outputs) -> pd.DataFrame:
    """`outputs.parquet`: one row per (prompt, seed) with its output id; the texts in a `text`
    column, or the images (N, C, H, W) in `images.npy`. `outputs` as `sample_grid` returns them."""
    rows = [
        {
            "output_id": f"p{i:03d}-s{seed}",
            "prompt_index": i,
            "prompt": p,
            "seed": seed,
            "model_signature": provenance.model_signature,
        }
        for i, p in enumerate(provenance.prompts)
        for seed in provenance.prompt_seeds[i]
    ]
    table = pd.DataFrame(rows)
    if isinstance(outputs, np.ndarray):
        write_npy(
            Path(folder) / "images.npy", outputs.reshape(-1, *outputs.shape[2:]).astype(np.float32)
        )
    else:
        table["text"] = [t for row in outputs for t in row]
    atomic_write(Path(folder) / "outputs.parquet", lambda p: table.to_parquet(p, index=False))
    return table


def load_outputs(folder: Path):
    """A generate result's outputs grouped by prompt: (prompts, [outputs of each prompt], table)."""
    folder = Path(folder)
    if not (folder / "outputs.parquet").exists():
        raise InfluenceLabError(
            f"the generate result {folder} has no outputs.parquet; rerun generate with force=true."
        )
    table = pd.read_parquet(folder / "outputs.parquet")
    images = np.load(folder / "images.npy") if (folder / "images.npy").exists() else None
    prompts, grouped = [], []
    for _, group in table.groupby("prompt_index", sort=True):
        prompts.append(str(group["prompt"].iloc[0]))
        rows = group.index.to_numpy()
        grouped.append(images[rows] if images is not None else list(group["text"]))
    return prompts, grouped, table
