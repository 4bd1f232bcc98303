"""Create a model for a dataset from its config; save and load it without pickle."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..data import DataBundle
from ..errors import InfluenceLabError
from ..orchestration.store import atomic_write, write_json
from .base import GenerativeModel
from .text_encoder import build_vocab

NOT_INIT_ARGS = ("name", "fit")


def init_kwargs(model_cfg: DictConfig, bundle: DataBundle) -> tuple[str, dict]:
    """The class path and the plain constructor arguments of the model `model_cfg` describes."""
    params = OmegaConf.to_container(model_cfg, resolve=True)
    target = params.pop("_target_")
    for key in NOT_INIT_ARGS:
        params.pop(key, None)
    cls = _import(target)
    if cls.kind != bundle.kind:
        wanted = "image" if cls.kind == "image" else "text"
        raise InfluenceLabError(
            f"model={model_cfg.name} needs {wanted} data but data={bundle.name} holds {bundle.kind}; "
            f"use model=vae or model=ddpm for images and model=chargpt for text."
        )
    params["vocab"] = build_vocab(bundle.captions)
    if bundle.kind == "image":
        params["data_shape"] = list(_image_shape(bundle))
    else:
        params["alphabet"] = "".join(sorted(set("".join(bundle.full["text"]))))
    return target, params


def _image_shape(bundle: DataBundle) -> tuple[int, ...]:
    import numpy as np

    return tuple(np.asarray(bundle.full[0]["image"]).shape)


def _import(target: str):
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_model(model_cfg: DictConfig, bundle: DataBundle, seed: int = 0) -> GenerativeModel:
    """A freshly initialised model; the initialisation depends only on `seed`."""
    target, params = init_kwargs(model_cfg, bundle)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _import(target)(**params)
    model.init_spec = {"target": target, "init": params}
    return model


def save_model(model: GenerativeModel, run_dir: Path) -> None:
    atomic_write(Path(run_dir) / "weights.pt", lambda p: torch.save(model.state_dict(), p))
    write_json(Path(run_dir) / "model.json", model.init_spec)


def load_model(run_dir: Path) -> GenerativeModel:
    spec = json.loads((Path(run_dir) / "model.json").read_text())
    if not spec["target"].startswith("influence_lab."):
        raise InfluenceLabError(f"{run_dir}/model.json names {spec['target']}, which is not an influence_lab model.")
    model = _import(spec["target"])(**spec["init"])
    state = torch.load(Path(run_dir) / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.init_spec = spec
    return model.eval()
