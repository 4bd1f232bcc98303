"""`influence-lab featurise`: the training-set features of the gradient methods of
`attribution.methods` (tracin, trak, dtrak, or a user's gradient method), computed and cached ahead
of `attribute` and `lds`, which then only read them. With `attribution.gradient.shard_size`, a
multirun computes one shard per job on any Hydra launcher:

    influence-lab featurise -m ... 'shard=range(0,7)' hydra/launcher=joblib        # local processes
    influence-lab featurise -m ... 'shard=range(0,7)' hydra/launcher=submitit_slurm  # a SLURM array

Each shard is a claimed, signature-named result (`attribution/feature_store.py`), so jobs that
overlap, a resubmitted array or a later `attribute` never compute one twice, and a killed job's
shard is recomputed alone. Needs no generated outputs: the attributed model is trained (or
reused), and a TRAK ensemble's other models with it."""

from __future__ import annotations

import time

from ..attribution.feature_store import check_shard, shard_count
from ..attribution.preparation import context_for
from ..data import load_data
from ..entry.plan import plan_of
from ..entry.stage_entry import console, settings_of, stage_entry, upstream
from ..errors import InfluenceLabError
from ..settings import StageSettings
from .train import train


def featurise(settings: StageSettings) -> dict[str, int]:
    """The features of every gradient method of `attribution.methods` (of shard `shard` alone,
    when set), computed or found; returns {method: feature rows, over its models}."""
    settings = settings_of(settings)
    cfg = settings.attribution.gradient
    if settings.shard is not None and cfg.shard_size is None:
        raise InfluenceLabError(
            f"shard is {settings.shard} but attribution.gradient.shard_size is not set; give "
            "the shard size too, e.g. +attribution.gradient.shard_size=8192."
        )
    methods = [m for m in plan_of(settings).methods if hasattr(m.cls, "featurise")]
    if not methods:
        raise InfluenceLabError(
            "attribution.methods names no gradient method, so there is nothing to featurise; "
            "name one, e.g. 'attribution.methods=[trak]'."
        )
    bundle = load_data(settings.data)
    items, count = len(bundle.train), shard_count(len(bundle.train), cfg.shard_size)
    check_shard(settings.shard, items, cfg.shard_size)  # before any model is trained
    model_run = train(upstream(settings), bundle)
    context = context_for(settings, bundle, str(model_run.path), model_run.signature)
    which = "every shard" if settings.shard is None else f"shard {settings.shard}"
    rows = {}
    for method in methods:
        name = method.label
        start = time.perf_counter()
        attributor = method.build()
        features = attributor.featurise(context, settings.shard)
        rows[name] = sum(len(f) for f in features)
        console.print(
            f"featurise {name}: {which} of {count} ({items:,} items), {len(features)} model(s), "
            f"{rows[name]:,} feature rows in {time.perf_counter() - start:.0f} s",
            highlight=False,
        )
    if settings.shard is None and count > 1:
        given = " ".join(o for o in settings._overrides if not o.startswith("shard="))
        console.print(
            f"one job per shard: influence-lab featurise -m {given} 'shard=range(0,{count})' "
            "hydra/launcher=joblib (or submitit_slurm)",
            highlight=False,
            markup=False,  # the overrides' brackets are not markup
        )
    return rows


run = stage_entry(featurise)
