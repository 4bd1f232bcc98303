"""Parts a model trains once and then freezes: the latent DDPM's autoencoder and DALL-E's image
tokenizer. They are fitted once per pool (or per training set, when a model asks for it) and
shared by the full model and every retrain: within a process through a small in-memory cache, and
across processes through `<output root>/embedders/<kind>-<signature>/`, written under the run's
claim (`RunDir.compute_once`), so one process fits it while the others wait and read."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InfluenceLabError
from ..store.files import RunDir, atomic_write, write_json
from ..store.signature import signature

# fitted states of this process by signature: the full model and every pack member built in one
# process share one fit instead of repeating it
TRAINED: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
_KEEP = 4


def frozen(module: nn.Module) -> nn.Module:
    """`module` with every parameter turned into a persistent buffer of the same name: it still
    computes and is saved in the state dict, but nothing that trains or differentiates
    parameters (optimisers, packs, per-example gradients) touches it."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            del sub._parameters[name]
            sub.register_buffer(name, param.detach().clone())
    return module


def fit_once(
    kind: str,
    spec: dict,
    data_fingerprint: str,
    cache_root: Path | None,
    train: Callable[[], dict[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """The state `train()` returns for (`kind`, `spec`, the data it is fitted on): from this
    process's cache, else from `<cache_root>/embedders/<kind>-<signature>` when another process
    wrote it, else trained here (and written there when `cache_root` is given). A copy: the caller
    may load it into a model that trains."""
    key = signature(kind, spec, data_fingerprint)
    if key not in TRAINED:
        TRAINED[key] = _read_or_train(kind, key, spec, data_fingerprint, cache_root, train)
        while len(TRAINED) > _KEEP:
            TRAINED.popitem(last=False)
    return {k: v.clone() for k, v in TRAINED[key].items()}


def _read_or_train(kind, key, spec, data_fingerprint, cache_root, train):
    if cache_root is None:
        return train()
    run = RunDir(cache_root, "embedders", kind, key)

    def train_and_write() -> dict[str, torch.Tensor]:
        state = train()
        atomic_write(run / "state.pt", lambda p: torch.save(state, p))
        write_json(run / "spec.json", {**spec, "pool": data_fingerprint})
        return state

    return run.compute_once(
        lambda: torch.load(run / "state.pt", map_location="cpu", weights_only=True),
        train_and_write,
    )


def pool_images(data, shape) -> torch.Tensor:
    """The images of a dataset as one float32 tensor, refused when they do not have the model's
    `shape` (a model built for other data)."""
    images = torch.as_tensor(np.asarray(data.with_format("numpy")["image"], dtype=np.float32))
    if tuple(images.shape[1:]) != tuple(shape):
        raise InfluenceLabError(
            f"data images have shape {list(images.shape[1:])} but model.data_shape is "
            f"{list(shape)}; build the model with build_model for this data."
        )
    return images


def require_fitted(fitted: torch.Tensor, flag: str, part: str) -> None:
    """Refuse to use a frozen part that was never fitted (a model made without `build_model`)."""
    if not bool(fitted):
        raise InfluenceLabError(
            f"model.{flag} is False: this {part} was never trained; make the model with "
            "models.build.build_model (or load_model) so it is fitted."
        )
