"""Sampling m outputs per prompt with fixed seeds, and drawing prompts from the training
captions."""

from __future__ import annotations

import numpy as np
import torch

from ..settings import ModelSettings
from .protocol import GenerativeModel


def output_seeds(m: int, base_seed: int = 0) -> list[int]:
    """The seeds of the m outputs of each prompt (the same for every prompt)."""
    return [base_seed + j for j in range(m)]


def prompt_seeds(n_prompts: int, m: int, base_seed: int = 0, stride: int = 0) -> list[list[int]]:
    """Output j of prompt i uses seed base + i * stride + j (stride 0: the same seeds for every
    prompt; stride >= m: every output of every prompt has its own seed, so that a prompt that
    occurs twice gets different outputs)."""
    return [[base_seed + i * stride + j for j in range(m)] for i in range(n_prompts)]


def use_sampling(model: GenerativeModel, settings: ModelSettings) -> GenerativeModel:
    """The model, set to sample with the sampling-only settings (`SAMPLING_ARGS`: guidance,
    temperature) of `settings`: they are no part of a train signature, so a model trained (or
    saved) under other values samples with the current config's."""
    for key, value in settings.sampling_args().items():
        if key in model.hparams:
            model.hparams[key] = value
    return model


@torch.no_grad()
def sample_grid(model: GenerativeModel, prompts: list[str], seeds):
    """One output per (prompt, seed): an array (P, m, C, H, W) for images, a P x m list for texts.
    `seeds`: the m seeds of every prompt, or one list of m seeds per prompt."""
    per_prompt = seeds if seeds and isinstance(seeds[0], list) else [list(seeds)] * len(prompts)
    m = len(per_prompt[0])
    flat_prompts = [p for p in prompts for _ in range(m)]
    flat_seeds = [s for row in per_prompt for s in row]
    out = model.eval().sample(flat_prompts, flat_seeds)
    if isinstance(out, torch.Tensor):
        return out.cpu().numpy().reshape(len(prompts), m, *out.shape[1:])
    return [out[i * m : (i + 1) * m] for i in range(len(prompts))]


def draw_prompts(captions: list[str], count: int, group: int | None, seed: int) -> list[str]:
    """`count` prompts drawn from the distinct training captions: distinct within each consecutive
    group of `group` prompts where there are enough distinct captions, repeated otherwise."""
    distinct = sorted(set(captions))
    rng = np.random.default_rng(seed)
    size = int(group or count)
    prompts: list[str] = []
    while len(prompts) < count:
        take = min(size, count - len(prompts))
        picks = rng.choice(len(distinct), take, replace=take > len(distinct))
        prompts += [distinct[i] for i in picks]
    return prompts
