"""The feature store: projected gradients of every training item, one cached result per (model,
data, output function, projection, noise), under `<root>/features/<output>-<signature>/`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..models.base import GenerativeModel
from ..store.files import RunDir, write_npy
from ..store.signature import signature
from .gradients import n_params, projected_gradients
from .projectors import make_projector


def train_features(
    root: Path,
    model: GenerativeModel,
    model_key: str,
    train_batch: dict,
    fingerprint: str,
    output: str,
    proj_dim: int,
    proj_seed: int,
    noise_seed: int = 0,
    projector: str = "sparse",
    options: dict | None = None,
) -> np.ndarray:
    """Projected gradients of every training item, cached under `<root>/features/` by the signature
    of (model weights key, data fingerprint, output function, projection, noise). The projector
    kind enters the key when it is not `sparse`, and the output function's `options` (D-TRAK's
    K) when given, so the features cached before either existed (sparse; the measured loss)
    keep their keys."""
    spec = {
        "model": model_key,
        "data": fingerprint,
        "output": output,
        "proj_dim": int(proj_dim),
        "proj_seed": int(proj_seed),
        "noise_seed": int(noise_seed),
    }
    if projector != "sparse":
        spec["projector"] = projector
    spec.update({k: int(v) for k, v in (options or {}).items()})
    run = RunDir(root, "features", output, signature(spec))
    path = run / "features.npy"
    if run.done and path.exists():
        return np.load(path)
    run.prepare()
    feats = projected_gradients(
        model,
        train_batch,
        make_projector(projector, n_params(model), proj_dim, proj_seed),
        output,
        noise_seed,
        desc=f"gradients ({output})",
        options=options,
    )
    write_npy(path, feats)
    run.mark_done(spec)
    return feats
