"""Sampling m outputs per prompt with fixed seeds, and drawing them (grid PNG or text file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models.base import GenerativeModel
from ..report.figures import image_grid, text_listing


def output_seeds(m: int, base_seed: int = 0) -> list[int]:
    """The seeds of the m outputs of each prompt (the same for every prompt)."""
    return [base_seed + j for j in range(m)]


@torch.no_grad()
def sample_grid(model: GenerativeModel, prompts: list[str], seeds: list[int]):
    """One output per (prompt, seed): an array (P, m, C, H, W) for images, a P x m list for texts."""
    flat_prompts = [p for p in prompts for _ in seeds]
    flat_seeds = [s for _ in prompts for s in seeds]
    out = model.eval().sample(flat_prompts, flat_seeds)
    if isinstance(out, torch.Tensor):
        return out.cpu().numpy().reshape(len(prompts), len(seeds), *out.shape[1:])
    return [out[i * len(seeds) : (i + 1) * len(seeds)] for i in range(len(prompts))]


def draw(outputs, prompts: list[str], stem: Path, title: str) -> Path:
    if isinstance(outputs, np.ndarray):
        return image_grid(outputs, prompts, Path(f"{stem}.png"), title)
    return text_listing(outputs, prompts, Path(f"{stem}.txt"), title)


def draw_samples(model: GenerativeModel, prompts: list[str], m: int, stem: Path, title: str) -> Path:
    return draw(sample_grid(model, prompts, output_seeds(m)), prompts, stem, title)
