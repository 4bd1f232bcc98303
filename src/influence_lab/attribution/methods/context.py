"""What an attributor is prepared with: a narrow view of a stage (the attributed model's train
result, the data, the attribution settings, the output root, and how to get an ensemble), never
the whole stage settings. Search spaces (embedders and their cached faiss indexes) are built once
per context and shared by every search method prepared with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...data import DataBundle
from ...errors import InfluenceLabError
from ...settings import AttributionSettings


@dataclass
class AttributionContext:
    attribution: AttributionSettings  # attribution.* (with .gradient and .index)
    bundle: DataBundle  # bundle.train is what is attributed
    root: Path  # the output root: feature caches, embeddings, ensembles
    model_dir: Path | None = None  # the attributed model's train result
    model_signature: str = ""
    embedder_settings: dict = field(default_factory=dict)  # `embedders`, by name
    # size -> [(train result, signature)] of `size` full-data models (seeds seed, seed+1, ...; the
    # attributed model first), trained as one pack where missing
    ensemble_runs: Callable[[int], list[tuple[Path, str]]] | None = None
    dampings: dict[str, float] = field(default_factory=dict)  # method -> damping chosen by LDS
    ensemble_size: int | None = None  # None: attribution.gradient.ensemble
    device: str = "cpu"  # where per-example gradients are computed (trainer.accelerator's)
    # embedder name -> (embedder, EmbeddingCache), built on first use (or given, in tests)
    spaces: dict = field(default_factory=dict)

    def __post_init__(self):
        self.model_dir = None if self.model_dir is None else Path(self.model_dir)

    @property
    def labelled(self) -> bool:
        return "label" in self.bundle.full.column_names

    def search_spaces(self, names: list[str]) -> tuple[dict, dict]:
        """({name: embedder}, {name: EmbeddingCache}) of `names`, built once per context."""
        missing = [n for n in names if n not in self.spaces]
        if missing:
            from ...models.build import load_model
            from ..embedders import build_embedder
            from ..index import EmbeddingCache

            model = load_model(self.model_dir) if self.model_dir is not None else None
            for name in missing:
                if name not in self.embedder_settings:
                    raise InfluenceLabError(
                        f"attribution.embedders names ['{name}'], which have no settings under "
                        f"embedders (known: {', '.join(self.embedder_settings)})."
                    )
                embedder = build_embedder(
                    name,
                    self.embedder_settings[name],
                    model=model,
                    model_signature=self.model_signature,
                    bundle=self.bundle,
                    root=self.root,
                )
                cache = EmbeddingCache(self.root, embedder, self.bundle, self.attribution.index)
                self.spaces[name] = (embedder, cache)
        return (
            {n: self.spaces[n][0] for n in names},
            {n: self.spaces[n][1] for n in names},
        )
