"""Set up the attributors of a stage: the narrow context they are prepared with (the model, the
data, the attribution settings, the output root, and the TRAK ensemble, trained as one pack
reusing any model already trained), and the dampings an LDS run chose."""

from __future__ import annotations

from pathlib import Path

from ..data import DataBundle
from ..settings import StageSettings
from ..store.files import read_json
from ..store.paths import output_dir
from ..store.signature import signature
from ..training.devices import torch_device
from ..training.members import train_members, train_spec
from .methods import registry
from .methods.attributor import Attributor
from .methods.context import AttributionContext


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


def context_for(
    settings: StageSettings,
    bundle: DataBundle,
    model_dir: str,
    model_signature: str,
    dampings: dict[str, float] | None = None,
    ensemble_size: int | None = None,
) -> AttributionContext:
    """The context the attributors of a stage are prepared with."""
    return AttributionContext(
        attribution=settings.attribution,
        bundle=bundle,
        root=output_dir(settings),
        model_dir=Path(model_dir),
        model_signature=model_signature,
        embedder_settings=dict(settings.embedders or {}),
        ensemble_runs=lambda size: ensemble_runs(settings, bundle, size),
        dampings=dict(dampings or {}),
        ensemble_size=ensemble_size,
        device=torch_device(settings.trainer),
    )


def prepared(methods: list[registry.Method], context: AttributionContext) -> dict[str, Attributor]:
    """{label: attributor} of `methods` (resolved and checked at the stage's entry), each
    prepared with `context`."""
    out = {}
    for method in methods:
        out[method.label] = method.build()
        out[method.label].prepare(context)
    return out


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
