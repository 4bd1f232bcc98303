"""The evidence of the search methods: per-space similarities of one prompt's outputs to the
training items, their normalised signals, and the original code's nine features. The methods that
score it are classes in `methods/search.py`; for one prompt x with m outputs y, each returns a
score per candidate training item i (higher = more influential) over its candidate set:

- `paper`: the original code's fixed weighted sum of nine un-normalised features over the prompt
  filter's pool (top 100 captions), averaged over the outputs. Weights as in the original
  `create_ranking.py` (`initial_weights`), in this feature order: raw MSE 1e-4, raw MAE 1e-2,
  raw cosine -1, SSIM-of-difference -1, embedding cosine -1, embedding MSE 1, embedding KL 1e-5,
  embedding L1 1e-5, embedding L2 1e-3. There lower meant more similar; here the sum is negated.
  Pixels are on the 0-255 scale as there. Images only.
- `fused`: each metric min-max normalised over the candidates (distances flipped), a weighted mean
  alpha(y, i) with `attribution.fused_weights`, and Influence(i) = sum_y alpha(y, i) * B(x, i)
  over the pool (or over every item with graded B when `attribution.pool_size` is null).
- `caption_only`: B alone, over every item.
- `raw_only`, `latent_only`, `latent:<embedder>`: one signal, normalised and summed over the
  outputs, over every item (no caption filter).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InfluenceLabError
from .raw import IMAGE_DISTANCES

PAPER_WEIGHTS = {
    "raw_mse": 0.0001,
    "raw_mae": 0.01,
    "raw_cosine": -1.0,
    "raw_ssim_diff": -1.0,
    "emb_cosine": -1.0,
    "emb_mse": 1.0,
    "emb_kl": 0.00001,
    "emb_l1": 0.00001,
    "emb_l2": 0.001,
}


@dataclass
class PromptEvidence:
    """Everything measured for one prompt, over all N training items."""

    b: np.ndarray  # (N,) prompt filter
    pool: np.ndarray  # candidate indices of the prompt filter's pool
    raw: dict[str, np.ndarray]  # name -> (m, N)
    latent: dict[str, np.ndarray]  # embedder -> (m, N) cosine (NaN where not searched)
    paper: dict[str, np.ndarray] = field(default_factory=dict)  # feature -> (m, len(pool))


def normalise(sim: np.ndarray, distance: bool = False) -> np.ndarray:
    """Min-max per output row over the candidates, in [0, 1], 1 = most similar; NaN -> 0."""
    lo = np.nanmin(np.where(np.isnan(sim), np.inf, sim), axis=1, keepdims=True)
    hi = np.nanmax(np.where(np.isnan(sim), -np.inf, sim), axis=1, keepdims=True)
    out = (sim - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
    out = 1.0 - out if distance else out
    return np.nan_to_num(out, nan=0.0)


def signal(
    ev: PromptEvidence, cand: np.ndarray, names: list[str], weights: dict[str, float]
) -> np.ndarray:
    total, wsum = 0.0, 0.0
    for name in names:
        w = float(weights.get(name, 1.0))
        if w == 0:
            continue
        space, _, metric = name.partition("_")
        sim = ev.raw[metric] if space == "raw" else ev.latent[metric]
        total = total + w * normalise(
            sim[:, cand], distance=space == "raw" and metric in IMAGE_DISTANCES
        )
        wsum += abs(w)
    if wsum == 0:
        raise InfluenceLabError("attribution.fused_weights gives every available signal weight 0.")
    return total / wsum  # (m, len(cand))


def signal_names(ev: PromptEvidence) -> list[str]:
    return [f"raw_{k}" for k in ev.raw] + [f"latent_{k}" for k in ev.latent]


def paper_features(
    outputs: np.ndarray, candidates: np.ndarray, emb_out: np.ndarray, emb_cand: np.ndarray
) -> dict[str, np.ndarray]:
    """The nine features of the original code for (m outputs) x (n candidates)."""
    from .raw import cosine, l2, mae, ssim_of_difference

    a, b = np.asarray(outputs) * 255.0, np.asarray(candidates) * 255.0
    h, w = a.shape[-2:]
    sq = l2(a, b) ** 2
    e1 = np.clip(emb_out.astype(np.float64), 1e-10, None)  # ResNet features were non-negative
    e2 = np.clip(emb_cand.astype(np.float64), 1e-10, None)
    return {
        "raw_mse": sq / (h * w),
        "raw_mae": mae(a, b),
        "raw_cosine": cosine(a, b),
        "raw_ssim_diff": ssim_of_difference(outputs, candidates),
        "emb_cosine": cosine(emb_out, emb_cand),
        "emb_mse": l2(emb_out, emb_cand) ** 2 / emb_out.shape[1],
        "emb_kl": (e1[:, None, :] * np.log(e1[:, None, :] / e2[None, :, :])).sum(2),
        "emb_l1": mae(emb_out, emb_cand) * emb_out.shape[1],
        "emb_l2": l2(emb_out, emb_cand),
    }
