"""Set up the attributors of a stage: the search spaces (embedders and their cached training-set
indexes), and the gradient attributors: train the TRAK ensemble (as one pack, reusing any model
already trained) and wrap each attributor as a dense scorer `(prompt, outputs) -> scores`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data import DataBundle
from ..errors import InfluenceLabError
from ..models.base import NOISE_SEED
from ..models.build import load_model
from ..orchestration.records import GenerateProvenance
from ..settings import StageSettings
from ..settings.attribution import search_space_names
from ..store.files import read_json
from ..store.paths import output_dir
from ..store.signature import signature
from ..training.batches import batch_of, outputs_batch
from ..training.members import train_members, train_spec
from .embedders import build_embedder
from .gradient_methods import (
    GRADIENT_METHODS,
    GradientSetup,
    build_attributor,
    check_gradient_method,
)
from .index import EmbeddingCache


def space_names(settings: StageSettings, bundle: DataBundle, methods: list[str]) -> list[str]:
    """The embedders `methods` need: `attribution.embedders` and the paper scorer's space (the
    classifier where the data has labels, unless `attribution.paper_embedder` names another)."""
    names = search_space_names(settings.attribution, methods, "label" in bundle.full.column_names)
    unknown = [e for e in names if e not in (settings.embedders or {})]
    if unknown:
        raise InfluenceLabError(
            f"attribution.embedders names {unknown}, which have no settings under embedders "
            f"(known: {', '.join(settings.embedders or {})})."
        )
    return names


def search_spaces(
    settings: StageSettings, bundle: DataBundle, generated: GenerateProvenance, methods: list[str]
) -> tuple[dict, dict]:
    """The embedders `methods` need (`space_names`) and their cached training-set indexes."""
    model = load_model(generated.model_dir)
    root = output_dir(settings)
    embedders, caches = {}, {}
    for name in space_names(settings, bundle, methods):
        embedders[name] = build_embedder(
            name,
            settings.embedders[name],
            model=model,
            model_signature=generated.model_signature,
            bundle=bundle,
            root=root,
        )
        caches[name] = EmbeddingCache(root, embedders[name], bundle, settings.attribution.index)
    return embedders, caches


def ensemble_runs(settings: StageSettings, bundle: DataBundle, size: int) -> list[tuple[Path, str]]:
    """Train results of `size` full-data models with seeds seed, seed+1, ...: the first is the model
    being attributed; missing ones are trained together as one pack."""
    seeds = [settings.seed + k for k in range(size)]
    members = [{"member_id": f"seed{s}", "removed": [], "seed": s} for s in seeds]
    pack = (
        output_dir(settings)
        / "packs"
        / signature({"ensemble": seeds, "spec": train_spec(settings, bundle)})
    )
    runs = train_members(settings, bundle, members, pack)
    return [(runs[m["member_id"]].path, runs[m["member_id"]].signature) for m in members]


def gradient_setup(
    settings: StageSettings, bundle: DataBundle, model_dir: str, model_signature: str, ensemble: int
) -> GradientSetup:
    return GradientSetup(
        cfg=settings.attribution.gradient,
        root=output_dir(settings),
        model_dir=Path(model_dir),
        model_signature=model_signature,
        ensemble=ensemble_runs(settings, bundle, ensemble) if ensemble else [],
        train_batch=batch_of(bundle.train),
        fingerprint=bundle.fingerprint,
    )


def gradient_scorers(
    settings: StageSettings,
    bundle: DataBundle,
    model_dir: str,
    model_signature: str,
    methods: list[str],
    ensemble: int | None = None,
    dampings: dict[str, float] | None = None,
) -> dict:
    """{method: (prompt, outputs) -> Data Influence over every training item (summed over
    outputs)}; TRAK and D-TRAK at `dampings[method]` where given (chosen by an LDS run,
    `lds_dampings`), else at `attribution.gradient.damping`."""
    wanted = [m for m in methods if m in GRADIENT_METHODS]
    for method in wanted:
        check_gradient_method(method, settings.model.name)
    if not wanted:
        return {}
    size = ensemble or settings.attribution.gradient.ensemble
    needs_ensemble = any(m in ("trak", "dtrak") for m in wanted)
    setup = gradient_setup(
        settings, bundle, model_dir, model_signature, size if needs_ensemble else 0
    )
    scorers = {}
    for method in wanted:
        damping = (dampings or {}).get(method)
        cfg = setup.cfg if damping is None else setup.cfg.model_copy(update={"damping": damping})
        scorers[method] = DenseScorer(build_attributor(method, replace(setup, cfg=cfg)))
    return scorers


class DenseScorer:
    """A gradient attributor as a dense scorer: `(prompt, outputs) -> scores` over every training
    item, summed over the outputs; `score_all(prompts, outputs)` scores every prompt at once, so
    that the query gradients of all prompts share the projector (a dense projection is drawn
    once per model rather than once per prompt). Each prompt keeps its own fixed noise, so the
    scores equal the one-prompt calls'."""

    def __init__(self, attributor):
        self.attributor = attributor

    def __call__(self, prompt: str, outputs) -> np.ndarray:
        return self.score_all([prompt], [outputs])[0]

    def score_all(self, prompts: list[str], outputs: list) -> list[np.ndarray]:
        batches = [
            outputs_batch(outs, [p] * len(outs)) for p, outs in zip(prompts, outputs, strict=True)
        ]
        return [s.sum(0) for s in self.attributor.scores_many(batches, NOISE_SEED)]


def lds_dampings(root: Path, model_signature: str, ensemble: int) -> dict[str, float]:
    """{trak / dtrak: damping} chosen on held-out subsets by the newest finished LDS run of this
    model (its `damping.json`): the damping of `method@ensemble`, else of the largest ensemble the
    run scored. Empty when no LDS run of this model exists."""
    found = [p for p in Path(root, "lds").glob("*/damping.json") if (p.parent / "done").exists()]
    for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        record = read_json(path)
        if record.get("model_signature") != model_signature:
            continue
        by_method: dict[str, dict[int, float]] = {}
        for label, value in record["dampings"].items():
            method, _, size = label.partition("@")
            by_method.setdefault(method, {})[int(size or 1)] = float(value)
        return {m: sizes.get(ensemble, sizes[max(sizes)]) for m, sizes in by_method.items()}
    return {}
