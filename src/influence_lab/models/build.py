"""Create a model for a dataset from its settings; save and load it without pickle."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import numpy as np
import torch

from ..data import DataBundle
from ..errors import InfluenceLabError
from ..settings import ModelSettings
from ..settings.model import BUILT_IN_MODELS
from ..settings.stage import MODULE_PATH
from ..store.files import atomic_write, verify_result, write_json
from .protocol import GenerativeModel
from .text_encoder import build_vocab, caption_tokens


def init_kwargs(model: ModelSettings, bundle: DataBundle) -> tuple[str, dict]:
    """The class path and the plain constructor arguments of the model the settings describe."""
    _, target, params = _resolved(model, bundle)
    return target, params


def _resolved(model: ModelSettings, bundle: DataBundle) -> tuple[type, str, dict]:
    """The model's class (looked up once), its path and its plain constructor arguments."""
    params = model.init_args()
    target = model.target
    cls = model_class(target, "model._target_")
    if cls.kind != bundle.kind:
        wanted = "image" if cls.kind == "image" else "text"
        raise InfluenceLabError(
            f"model={model.name} needs {wanted} data but data={bundle.name} holds {bundle.kind}; "
            f"use {_models_for('image')} for images and {_models_for('text')} for text."
        )
    params["vocab"] = build_vocab(bundle.captions)
    _check_caption_length(cls, params, bundle)
    if bundle.kind == "image":
        params["data_shape"] = list(_image_shape(bundle))
    else:
        params["alphabet"] = "".join(sorted(set("".join(bundle.full["text"]))))
        _check_block_size(cls, params, bundle)
    return cls, target, params


def _models_for(kind: str) -> str:
    """The built-in models of a data kind, as a user selects them: 'model=vae, ... or model=x'."""
    names = [
        f"model={name}"
        for name, schema in BUILT_IN_MODELS.items()
        if model_class(schema.model_fields["target"].default, "model._target_").kind == kind
    ]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _check_block_size(cls: type, params: dict, bundle: DataBundle) -> None:
    """A text model sees at most block_size - 1 characters and an end token: a longer text would be
    cut off silently, and the model would learn a shorter text than the data holds."""
    block = _init_value(cls, params, "block_size")
    longest = max((len(text) for text in bundle.full["text"]), default=0)
    if isinstance(block, int) and longest + 1 > block:
        raise InfluenceLabError(
            f"model.block_size is {block} but the longest text in data={bundle.name} "
            f"has {longest} characters; "
            f"set model.block_size={longest + 1} or more (the text plus an end token)."
        )


def _check_caption_length(cls: type, params: dict, bundle: DataBundle) -> None:
    """A model that reads a caption's words as a sequence (DALL-E's `text_len`) refuses a dataset
    whose longest caption has more words, at build time, not at the first long prompt."""
    length = _init_value(cls, params, "text_len")
    if not isinstance(length, int):
        return
    longest = max(bundle.captions, key=lambda c: len(caption_tokens(c)), default="")
    words = len(caption_tokens(longest))
    if words > length:
        raise InfluenceLabError(
            f"model.text_len is {length} but the caption '{longest}' in data={bundle.name} has "
            f"{words} words; set model.text_len={words} or more."
        )


def _init_value(cls: type, params: dict, name: str):
    """The constructor argument `name` the model gets: from the settings, else the class's default
    (None when the class has no such argument)."""
    default = inspect.signature(cls).parameters.get(name)
    return params.get(name, default.default if default is not None else None)


def _image_shape(bundle: DataBundle) -> tuple[int, ...]:
    return tuple(np.asarray(bundle.full[0]["image"]).shape)


MODELS_PACKAGE = "influence_lab.models"
# the module prefixes model classes may come from: influence_lab's models, and what the running
# stage's config allows (`plugins`, set at the stage's entry by `allow_plugins`)
_allowed: tuple[str, ...] = (MODELS_PACKAGE,)


def allow_plugins(prefixes: list[str]) -> None:
    """Allow model classes from these module prefixes (the config's `plugins`) in this process."""
    global _allowed
    _allowed = (MODELS_PACKAGE, *prefixes)


def under_prefixes(module: str, prefixes) -> bool:
    """A well-formed module path equal to or below one of `prefixes`."""
    return bool(MODULE_PATH.fullmatch(module)) and any(
        module == p or module.startswith(p + ".") for p in prefixes
    )


def allowed_class(target, where: str, prefixes, base: type, outside: str, what: str) -> type:
    """The class `target` ("module.Class") names, if its module is under one of `prefixes` and it
    is a subclass of `base` defined there; refused in one sentence otherwise (`outside`: the
    sentence's end for a module outside the prefixes; `what`: for a class that is not one). Outside
    the prefixes nothing is even imported: a config or a stored record never makes the tool run
    code it was not allowed to."""
    module, _, name = str(target).rpartition(".")
    if not under_prefixes(module, prefixes):
        raise InfluenceLabError(f"{where} is '{target}', a class outside {outside}")
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError as exc:
        raise InfluenceLabError(
            f"{where} is '{target}', but its module cannot be imported ({exc}); "
            "put the module's folder on PYTHONPATH or install it."
        ) from None
    except ValueError:
        cls = None
    if not (
        isinstance(cls, type)
        and issubclass(cls, base)
        and cls is not base
        and under_prefixes(cls.__module__, prefixes)
    ):
        raise InfluenceLabError(f"{where} is '{target}', which is not {what}")
    return cls


def model_class(target, where: str) -> type[GenerativeModel]:
    """The class `target` names, if it is a GenerativeModel subclass defined under
    influence_lab.models or under a module prefix the config's `plugins` allows (`allowed_class`:
    `os.system`, another package's class are refused before anything is imported)."""
    module = str(target).rpartition(".")[0]
    return allowed_class(
        target,
        where,
        _allowed,
        GenerativeModel,
        f"the allowed modules ({', '.join(_allowed)}); to use your own model, add its module to "
        f"plugins, e.g. plugins=[{module or 'mylab'}].",
        "a GenerativeModel; it must name a subclass of "
        "influence_lab.models.protocol.GenerativeModel (e.g. influence_lab.models.vae.VAE).",
    )


def build_model(
    model: ModelSettings, bundle: DataBundle, seed: int = 0, cache_root: Path | None = None
) -> GenerativeModel:
    """A freshly initialised model; the initialisation depends only on `seed`. Parts a model
    trains once on the whole pool (LatentDDPM's autoencoder) are cached under `cache_root`
    (the output root) when given, so other processes read them instead of fitting them again."""
    cls, target, params = _resolved(model, bundle)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built = cls.from_init(params, model)
    fit_frozen = getattr(built, "fit_frozen", None)
    if callable(fit_frozen):  # parts trained once on the whole pool (LatentDDPM's autoencoder)
        fit_frozen(bundle, cache_root)
    built.init_spec = {"target": target, "init": params}
    return built


def save_model(model: GenerativeModel, run_dir: Path) -> None:
    atomic_write(Path(run_dir) / "weights.pt", lambda p: torch.save(model.state_dict(), p))
    write_json(Path(run_dir) / "model.json", model.init_spec)


def load_model(run_dir: Path) -> GenerativeModel:
    spec = json.loads((Path(run_dir) / "model.json").read_text())
    cls = model_class(spec.get("target"), f"the target in {run_dir}/model.json")
    model = cls.from_init(spec["init"])
    verify_result(
        Path(run_dir), ["weights.pt", "model.json"]
    )  # refuse weights altered after training
    state = torch.load(Path(run_dir) / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.init_spec = spec
    return model.eval()
