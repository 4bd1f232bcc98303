"""Planted canaries: distinctive items with a unique caption token, added to the training split
(`data.canaries.count > 0`). Every canary is the same random block pattern -- unlike any digit --
with a little per-copy noise, captioned "<token> pattern"; ids are `canary-000`, ... A prompt that
uses the token asks for the canary; attribution should find the canaries, and a model retrained
without them should stop drawing the pattern."""

from __future__ import annotations

import numpy as np
from datasets import Dataset, concatenate_datasets

from ..errors import InfluenceLabError


def canary_pattern(shape, seed: int) -> np.ndarray:
    """A random pattern of 2x2 blocks in [0, 1], shape (C, H, W)."""
    c, h, w = shape
    rng = np.random.default_rng(seed)
    blocks = rng.random((c, (h + 1) // 2, (w + 1) // 2)) > 0.5
    return np.kron(blocks, np.ones((1, 2, 2)))[:, :h, :w].astype(np.float32)


def add_canaries(
    train: Dataset,
    count: int,
    token: str,
    seed: int,
    noise: float = 0.05,
    caption: str | None = None,
) -> Dataset:
    """`count` noisy copies of the pattern appended to `train`, captioned "<token> pattern", or
    `caption` when given (an ordinary caption: the token is then not used)."""
    if "image" not in train.column_names:
        raise InfluenceLabError("data.canaries works with image data only.")
    if caption is not None:
        return _append(train, count, seed, noise, caption)
    if not token or " " in token:
        raise InfluenceLabError(
            f"data.canaries.token is '{token}'; use one word that no caption contains."
        )
    if any(token in caption.split() for caption in train["caption"]):
        raise InfluenceLabError(
            f"data.canaries.token '{token}' already occurs in the captions; choose another."
        )
    return _append(train, count, seed, noise, f"{token} pattern")


def _append(train: Dataset, count: int, seed: int, noise: float, caption: str) -> Dataset:
    shape = np.asarray(train[0]["image"]).shape
    base = canary_pattern(shape, seed)
    rng = np.random.default_rng(seed + 1)
    images = np.clip(base[None] + noise * rng.standard_normal((count, *shape)), 0, 1).astype(
        np.float32
    )
    rows = {
        "id": [f"canary-{i:03d}" for i in range(count)],
        "image": list(images),
        "caption": [caption] * count,
    }
    if "label" in train.column_names:
        rows["label"] = [-1] * count
    return concatenate_datasets([train, Dataset.from_dict(rows, features=train.features)])
