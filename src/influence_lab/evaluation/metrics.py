"""What changed when a member was retrained without its removal set, per target.

For each target (prompt) and its m original outputs:
- `delta_loss`: the retrained model's `example_loss` on the original outputs minus the full
  model's, with the same noise seed (positive = the output became less likely);
- `drop_raw`: 1 - cosine between the output regenerated with the same prompt and seed and the
  original output, in raw space (pixels; character n-grams for text);
- `drop_<embedder>`: the same in each fixed embedder space (the full model's latent, the
  autoencoder), cosine as the original paper measured;
- `ref_before_<embedder>`, `ref_after_<embedder>`, `ref_drop_<embedder>`: the original paper's
  before/after measure. The prompt's reference output is the full model's output for the first
  seed; "before" is the mean cosine between the full model's outputs for the other seeds and the
  reference, "after" the same for the retrained model's outputs (same prompt, same seeds);
  `ref_drop` = before - after (needs m >= 2);
- `ref_before_canary`, `ref_after_canary`, `ref_drop_canary` (with planted canaries): the mean raw
  cosine between the outputs (full model / retrained) and the canary pattern.
Each value is the mean over the m outputs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..attribution.raw import cosine, ngram_cosine
from ..models.protocol import NOISE_SEED
from ..training.batches import outputs_batch


@torch.no_grad()
def losses(model, outputs, prompt: str) -> np.ndarray:
    return (
        model.example_loss(outputs_batch(outputs, [prompt] * len(outputs)), NOISE_SEED)
        .cpu()
        .numpy()
    )


def regenerate(model, prompt: str, seeds: list[int]):
    out = model.eval().sample([prompt] * len(seeds), seeds)
    return out.cpu().numpy() if isinstance(out, torch.Tensor) else out


def target_metrics(
    model,
    full_losses: np.ndarray,
    originals,
    regenerated,
    prompt: str,
    seeds: list[int],
    embedders: dict,
    patterns: dict | None = None,
) -> dict[str, float]:
    """The metrics of one target: the retrained `model`'s outputs `regenerated` (same prompt and
    seeds) against the full model's `originals`."""
    out = {"delta_loss": float(np.mean(losses(model, originals, prompt) - full_losses))}
    if isinstance(originals, list):
        sims = [ngram_cosine([a], [b])[0, 0] for a, b in zip(originals, regenerated, strict=True)]
    else:
        sims = np.diag(cosine(originals, regenerated))
    out["drop_raw"] = float(1 - np.mean(sims))
    for name, embedder in embedders.items():
        e_orig = embedder.embed(originals, [prompt] * len(seeds))
        e_new = embedder.embed(regenerated, [prompt] * len(seeds))
        out[f"drop_{name}"] = float(1 - np.mean(np.diag(cosine(e_orig, e_new))))
        if len(seeds) > 1:
            before = float(np.mean(cosine(e_orig[1:], e_orig[:1])))
            after = float(np.mean(cosine(e_new[1:], e_orig[:1])))
            out.update(
                {
                    f"ref_before_{name}": before,
                    f"ref_after_{name}": after,
                    f"ref_drop_{name}": before - after,
                }
            )
    for name, pattern in (patterns or {}).items():  # e.g. the canary: raw cosine to a fixed image
        flat = np.asarray(pattern, dtype=np.float64)[None]
        before, after = (
            float(np.mean(cosine(originals, flat))),
            float(np.mean(cosine(regenerated, flat))),
        )
        out.update(
            {
                f"ref_before_{name}": before,
                f"ref_after_{name}": after,
                f"ref_drop_{name}": before - after,
            }
        )
    return out
