"""The settings a researcher can get wrong, refused before any work starts.

`check_settings(cfg)` runs at the entry of every stage (`stages.common.stage_entry`) and for every
run of an experiment (`stages.pipeline.run_configs`). Each invalid setting gets one sentence naming
it and what is allowed, as an `InfluenceLabError` (printed as `error: ...`, exit status 2, nothing
written). Checks that need the data (a size against the training set, unknown ids) stay where the
data is loaded; the small validators below are shared with them.

This module imports nothing of the package at import time but `errors`, so that any module can use
its validators.
"""

from __future__ import annotations

import numbers
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import InfluenceLabError

MAX_SEED = 2**32 - 1  # numpy's and Lightning's bound
MISSING = "???"
# what to say about a required setting that is not set (Hydra's `???`)
NOT_SET_HINTS = {
    "data.source.path": "point it at a folder of images, e.g. data.source.path=/path/to/folder",
    "data.prompts": "give the prompts to sample, e.g. data.prompts='[a red circle]'",
    "data.source.name": "name a Hugging Face dataset, e.g. data.source.name=ylecun/mnist",
    "sweep_dir": "influence-lab counterfactual launches retrain with the sweep directory",
}


# ---------------------------------------------------------------- validators (one sentence each)


def show(value) -> str:
    """A setting's value as the message shows it: strings quoted, lists as lists, None as null."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, str):
        return f"'{value}'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_list(value) -> bool:
    return isinstance(value, (list, tuple, ListConfig))


def not_set(key: str) -> InfluenceLabError:
    hint = NOT_SET_HINTS.get(key, f"give it on the command line, e.g. {key}=VALUE")
    return InfluenceLabError(f"{key} is not set; {hint}.")


def positive_int(value, key: str, null: bool = False) -> None:
    if value is None and null:
        return
    if not is_int(value) or value < 1:
        raise InfluenceLabError(f"{key} is {show(value)}; it must be a positive integer{' or null' if null else ''}.")


def non_negative_int(value, key: str) -> None:
    if not is_int(value) or value < 0:
        raise InfluenceLabError(f"{key} is {show(value)}; it must be a non-negative integer.")


def positive_number(value, key: str) -> None:
    if not is_number(value) or not value > 0:
        raise InfluenceLabError(f"{key} is {show(value)}; it must be a positive number.")


def non_negative_number(value, key: str) -> None:
    if not is_number(value) or not value >= 0:
        raise InfluenceLabError(f"{key} is {show(value)}; it must be a non-negative number.")


def number(value, key: str) -> None:
    if not is_number(value):
        raise InfluenceLabError(f"{key} is {show(value)}; it must be a number.")


def below_one(value, key: str) -> None:
    """A probability that must leave something: [0, 1)."""
    if not is_number(value) or not 0 <= value < 1:
        raise InfluenceLabError(f"{key} is {show(value)}; it must lie in [0, 1).")


def boolean(value, key: str) -> None:
    if not isinstance(value, bool):
        raise InfluenceLabError(f"{key} is {show(value)}; it must be true or false.")


def seed(value, key: str, noun: str = "") -> None:
    if not is_int(value) or not 0 <= value <= MAX_SEED:
        raise InfluenceLabError(f"{key} {'has' if noun else 'is'} {show(value)}; seeds must be integers from 0 to "
                                f"{MAX_SEED}.")


def choice(value, key: str, allowed) -> None:
    if value not in allowed:
        raise InfluenceLabError(f"{key} is {show(value)}; allowed values are {', '.join(allowed)}.")


def a_list(value, key: str, example: str) -> list:
    """`value` as a plain list, or one sentence saying a list is wanted."""
    if not is_list(value):
        raise InfluenceLabError(f"{key} is {show(value)}; give a list, e.g. {key}={example}.")
    return list(OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value)


def once_each(values: list, key: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise InfluenceLabError(f"{key} has {show(v)} twice; list each value once.")
        seen.add(v)


def seed_list(value, key: str, example: str = "[1, 2, 3]") -> list:
    values = a_list(value, key, example)
    if not values:
        raise InfluenceLabError(f"{key} is empty; give at least one training seed.")
    for v in values:
        seed(v, key, noun="has")
    once_each(values, key)
    return values


def check_output_dir(value) -> Path:
    """`paths.output_dir` must be a directory, or a path whose first existing ancestor is one."""
    path = Path(str(value)).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise InfluenceLabError(f"cannot create paths.output_dir '{value}': {p} is a file; set "
                                        f"paths.output_dir to a writable directory.")
            break
    return path


def missing_keys(cfg: DictConfig) -> list[str]:
    """The settings still at Hydra's `???` (not set), without resolving anything."""
    found = []

    def walk(node, key: str):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif node == MISSING:
            found.append(key)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


# ---------------------------------------------------------------- the settings of each section


def check_settings(cfg: DictConfig) -> None:
    """Every setting of a stage's config that can be checked without the data."""
    if "paths" in cfg:
        check_output_dir(cfg.paths.output_dir)
    if cfg.get("stage") == "report":  # reads only names and report.*
        if "report" in cfg:
            non_negative_int(cfg.report.max_grids, "report.max_grids")
        return
    for key in missing_keys(cfg):
        raise not_set(key)
    if "seed" in cfg:
        seed(cfg.seed, "seed")
    if "force" in cfg:
        boolean(cfg.force, "force")
    if "trainer" in cfg:
        check_trainer(cfg.trainer)
    if "logger" in cfg:
        from .tracking.loggers import check_logger

        check_logger(cfg.logger)
    if "model" in cfg:
        check_model(cfg.model)
    if "data" in cfg:
        check_data(cfg.data)
    if "generate" in cfg:
        check_generate(cfg.generate)
    if "attribution" in cfg:
        check_attribution(cfg)
    if "counterfactual" in cfg:
        check_counterfactual(cfg)


ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


def check_trainer(tcfg: DictConfig) -> None:
    accelerator = tcfg.get("accelerator")
    choice(accelerator, "trainer.accelerator", ACCELERATORS)
    if accelerator in ("gpu", "cuda"):
        import torch

        mps = accelerator == "gpu" and getattr(torch.backends, "mps", None) is not None \
            and torch.backends.mps.is_available()
        if not torch.cuda.is_available() and not mps:
            raise InfluenceLabError(f"trainer.accelerator is '{accelerator}' but no GPU is available here; "
                                    f"use trainer=cpu.")
    devices = tcfg.get("devices")
    if isinstance(devices, (bool, float)) or (is_int(devices) and devices < 1 and devices != -1):
        raise InfluenceLabError(f"trainer.devices is {show(devices)}; use a positive number of devices, -1 (all) "
                                f"or auto.")
    if tcfg.get("num_threads") is not None:
        positive_int(tcfg.num_threads, "trainer.num_threads", null=True)


# model settings that size a network: each a positive integer where the model has it
MODEL_SIZES = ("hidden", "latent_dim", "cond_dim", "depth", "timesteps", "loss_timesteps", "block_size",
               "n_layer", "n_head", "n_embd")


def check_model(mcfg: DictConfig) -> None:
    for key in MODEL_SIZES:
        if key in mcfg:
            positive_int(mcfg[key], f"model.{key}")
    if "n_embd" in mcfg and "n_head" in mcfg and mcfg.n_embd % mcfg.n_head:
        raise InfluenceLabError(f"model.n_embd is {mcfg.n_embd} but model.n_head is {mcfg.n_head}; n_embd must be "
                                f"a multiple of n_head.")
    if "conditional" in mcfg:
        boolean(mcfg.conditional, "model.conditional")
    if "lr" in mcfg:
        positive_number(mcfg.lr, "model.lr")
    for key in ("weight_decay", "beta"):
        if key in mcfg:
            non_negative_number(mcfg[key], f"model.{key}")
    for key in ("dropout", "p_uncond"):
        if key in mcfg:
            below_one(mcfg[key], f"model.{key}")
    if "temperature" in mcfg:
        positive_number(mcfg.temperature, "model.temperature")
    if "guidance" in mcfg:
        number(mcfg.guidance, "model.guidance")
    fit = mcfg.get("fit") or {}
    positive_int(fit.get("max_epochs"), "model.fit.max_epochs")
    positive_int(fit.get("batch_size"), "model.fit.batch_size")
    if fit.get("snapshots") is not None:
        non_negative_int(fit.get("snapshots"), "model.fit.snapshots")


def check_data(dcfg: DictConfig) -> None:
    from .data.dataset import check_data_settings

    check_data_settings(dcfg)
    prompts = a_list(dcfg.prompts, "data.prompts", "'[a red circle]'")
    if not prompts:
        raise InfluenceLabError("data.prompts is empty; give at least one prompt, e.g. data.prompts='[a red circle]'.")
    positive_int(dcfg.get("sample_seeds"), "data.sample_seeds")


def check_generate(gcfg: DictConfig) -> None:
    positive_int(gcfg.m, "generate.m")
    seed(gcfg.seed, "generate.seed")
    non_negative_int(gcfg.get("seed_stride") or 0, "generate.seed_stride")
    positive_int(gcfg.get("prompt_count"), "generate.prompt_count", null=True)
    positive_int(gcfg.get("prompt_group"), "generate.prompt_group", null=True)
    seed(gcfg.get("prompt_seed") or 0, "generate.prompt_seed")
    if gcfg.get("prompt_count") is None:
        prompts = a_list(gcfg.prompts, "generate.prompts", "'[a red circle]'")
        if not prompts:
            raise InfluenceLabError("generate.prompts is empty; give at least one prompt.")


def check_methods(methods, key: str, cfg: DictConfig) -> list[str] | str:
    """`attribution.methods` or `lds.methods`: auto, one method or a non-empty list of known methods
    that fit the model and the embedders."""
    from .attribution.gradient_methods import GRADIENT_METHODS, check_gradient_method
    from .attribution.scorers import BASE_METHODS

    if methods is None or methods == "auto":
        return "auto"
    names = [methods] if isinstance(methods, str) else a_list(methods, key, "[fused,raw_only]")
    if not names:
        raise InfluenceLabError(f"{key} is empty; give at least one method, or auto.")
    embedders = [str(e) for e in cfg.attribution.embedders]
    for method in names:
        method = str(method)
        if method.startswith("latent:"):
            name = method.split(":", 1)[1]
            if name not in embedders:
                raise InfluenceLabError(f"method {method} names embedder '{name}', not in attribution.embedders "
                                        f"({', '.join(embedders)}).")
        elif method in GRADIENT_METHODS:
            check_gradient_method(method, str(cfg.model.name))
        elif method not in BASE_METHODS:
            raise InfluenceLabError(f"{key} has '{method}'; allowed values are {', '.join(BASE_METHODS)}, "
                                    f"latent:<embedder>, tracin, trak and dtrak.")
    once_each(names, key)
    return [str(m) for m in names]


def check_embedders(cfg: DictConfig, names: list[str]) -> None:
    """The settings `embedders.<name>` of the embedders used."""
    from .attribution.embedders import KINDS

    for name in names:
        ecfg = cfg.embedders[name]
        kind = ecfg.get("kind")
        if kind not in KINDS:
            raise InfluenceLabError(f"embedders.{name}.kind is '{kind}'; allowed values are {', '.join(KINDS)}.")
        if kind == "autoencoder":
            for key in ("hidden", "latent_dim", "epochs"):
                positive_int(ecfg.get(key), f"embedders.{name}.{key}")
            positive_number(ecfg.get("lr"), f"embedders.{name}.lr")
            seed(ecfg.get("seed") or 0, f"embedders.{name}.seed")
        if kind == "pretrained":
            weights = ecfg.get("weights")
            if not weights or not Path(str(weights)).expanduser().is_file():
                raise InfluenceLabError(f"embedders.{name}.weights is {show(weights)}, which is not a file; name a "
                                        f"local torchvision state-dict file for '{ecfg.get('arch')}' (nothing is "
                                        f"downloaded).")
            positive_int(ecfg.get("input_size", 64), f"embedders.{name}.input_size")


def known_embedders(names, key: str, cfg: DictConfig) -> list[str]:
    names = [str(n) for n in a_list(names, key, "[model,autoencoder]")]
    known = [str(k) for k in (cfg.get("embedders") or {})]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InfluenceLabError(f"{key} names {unknown}, which have no settings under embedders "
                                f"(known: {', '.join(known)}).")
    once_each(names, key)
    return names


def check_attribution(cfg: DictConfig) -> None:
    from .attribution.index import METRICS, TYPES
    from .attribution.prompt_filter import METHODS as FILTERS

    acfg = cfg.attribution
    embedders = known_embedders(acfg.embedders, "attribution.embedders", cfg)
    check_embedders(cfg, embedders)
    methods = check_methods(acfg.methods, "attribution.methods", cfg)
    if "paper" in methods and acfg.paper_embedder not in embedders:
        raise InfluenceLabError(f"attribution.paper_embedder '{acfg.paper_embedder}' is not in attribution.embedders.")
    if (methods == "auto" or "latent_only" in methods) and not embedders:
        raise InfluenceLabError("latent_only needs at least one embedder in attribution.embedders.")
    if acfg.filter not in FILTERS:
        raise InfluenceLabError(f"attribution.filter is '{acfg.filter}'; allowed values are {', '.join(FILTERS)}.")
    positive_int(acfg.pool_size, "attribution.pool_size", null=True)
    positive_int(acfg.get("search_k"), "attribution.search_k", null=True)
    positive_int(acfg.grid_top, "attribution.grid_top")
    positive_int(acfg.keep, "attribution.keep")
    for key, weight in (acfg.get("fused_weights") or {}).items():
        number(weight, f"attribution.fused_weights.{key}")
    index = acfg.index
    if index.type not in TYPES:
        raise InfluenceLabError(f"attribution.index.type is '{index.type}'; allowed values are {', '.join(TYPES)}.")
    if index.metric not in METRICS:
        raise InfluenceLabError(f"attribution.index.metric is '{index.metric}'; allowed values are ip and l2.")
    for key in ("nlist", "nprobe", "hnsw_m", "ef_search"):
        if key in index:
            positive_int(index[key], f"attribution.index.{key}")
    gradient = acfg.get("gradient") or {}
    if gradient:
        positive_int(gradient.get("proj_dim"), "attribution.gradient.proj_dim")
        seed(gradient.get("proj_seed") or 0, "attribution.gradient.proj_seed")
        positive_int(gradient.get("ensemble"), "attribution.gradient.ensemble")
        positive_number(gradient.get("damping"), "attribution.gradient.damping")


def launchers() -> list[str]:
    """The Hydra launchers installed here (their config names)."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # imports the installed plugins, which register their configs
    return sorted(n.removesuffix(".yaml") for n in ConfigStore.instance().list("hydra/launcher"))


def check_counterfactual(cfg: DictConfig) -> None:
    from .counterfactual.plans import check_plan_settings

    ccfg = cfg.counterfactual
    check_plan_settings(ccfg.arms, ccfg.k, ccfg.seeds, ccfg.grouping, ccfg.get("group_size"))
    methods = ccfg.methods
    if methods is not None and methods != "auto":
        names = [methods] if isinstance(methods, str) else a_list(methods, "counterfactual.methods", "[fused]")
        if not names:
            raise InfluenceLabError("counterfactual.methods is empty; give at least one attribution method, or auto.")
        once_each(names, "counterfactual.methods")
        attributed = cfg.attribution.methods
        if attributed is not None and attributed != "auto":
            attributed = [attributed] if isinstance(attributed, str) else [str(m) for m in attributed]
            missing = [str(m) for m in names if str(m) not in attributed]
            if missing:
                raise InfluenceLabError(f"counterfactual.methods has {missing}, which attribution.methods does not "
                                        f"include ({', '.join(attributed)}); add them to attribution.methods.")
    keep = cfg.attribution.keep
    for k in ccfg.k:
        if k > keep:
            raise InfluenceLabError(f"counterfactual.k has {k} but attribution.keep is {keep}; each k must be at most "
                                    f"attribution.keep (the ranked items kept per prompt).")
    positive_int(ccfg.pack_size, "counterfactual.pack_size")
    if ccfg.get("launcher") is not None:
        installed = launchers()
        if ccfg.launcher not in installed:
            raise InfluenceLabError(f"counterfactual.launcher is {show(ccfg.launcher)}; use one of the launchers "
                                    f"installed here: {', '.join(installed)}.")
    overrides = a_list(ccfg.get("launcher_overrides") or [], "counterfactual.launcher_overrides",
                       "[hydra.launcher.partition=debug]")
    for o in overrides:
        if not isinstance(o, str):
            raise InfluenceLabError(f"counterfactual.launcher_overrides has {show(o)}; each entry must be one "
                                    f"override, e.g. hydra.launcher.partition=debug.")
    check_embedders(cfg, known_embedders(ccfg.embedders, "counterfactual.embedders", cfg))
