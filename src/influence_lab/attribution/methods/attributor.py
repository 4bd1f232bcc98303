"""The attributor interface: every attribution method, built-in or a user's, is an `Attributor`.

Its core is three members: `traits` (family, what it needs, which `auto` lists hold it), `prepare`
(once, with an `AttributionContext`: build indexes, features or spectra, cached as
signature-named results) and `scores` (one `ScoreTable` for a set of `Targets`: per target, a
score for each candidate training item, higher = more influential). What only the LDS asks for --
scores at a grid of dampings, subset sums streamed over features, one table per ensemble model --
are optional protocols (`protocols.py`) that the LDS checks for, with a plain fallback from
`scores`. `attribute`, LDS, counterfactual selection and the report go through this interface
and read traits, never method names (the registry, `registry.py`, is the one place names live).

Modelled on dattri's `AttributionTask` + `Attributor.cache()/attribute()` and traker's
`featurize / finalize_features / score`; unlike either, a user's attributor is checked by the
same counterfactual retraining and LDS (with its noise ceiling) as the built-ins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from .context import AttributionContext

FAMILIES = ("search", "gradient")
# what an attributor may need; each is checked against the model class and the settings at a
# stage's entry (registry.resolved_methods), the missing one named in the refusal
CAPABILITIES = {
    "images": "image data",
    "embedders": "at least one embedder in attribution.embedders",
    "ensemble": "an ensemble of models trained on the full set (attribution.gradient.ensemble)",
    "snapshots": "training snapshots of the model (model.fit.snapshots > 0)",
}
OUTPUT_PREFIX = "output:"  # needs "output:<name>": the model class declares that output function


@dataclass(frozen=True)
class Traits:
    family: str  # "search" (similarity in some space) or "gradient" (the model's gradients)
    # capabilities (CAPABILITIES, or "output:<name>" for a model output function)
    needs: tuple[str, ...] = ()
    # the `auto` lists that hold it: "attribute" (attribution.methods) and/or "lds" (lds.methods)
    auto: tuple[str, ...] = ()

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, not {self.family!r}")


@dataclass
class Targets:
    """What is attributed: per target, its prompt and a group of outputs (images (m, ...) or a
    list of texts). `joint`: every target is one output, and query gradients are measured as one
    batch of all of them (the LDS's targets); else per group, summed over the group's outputs."""

    prompts: list[str]
    outputs: list
    joint: bool = False

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class ScoreTable:
    """Scores of candidate training items per target. `values[t]` scores `candidates[t]` (indices
    into the training set), or every item in order when `candidates` is None; with dampings, a
    (dampings, targets, items) array over every item."""

    values: list[np.ndarray] | np.ndarray
    candidates: list[np.ndarray] | None = None

    def ranked(self, t: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(candidate indices, scores) of target t."""
        cand = np.arange(n) if self.candidates is None else self.candidates[t]
        return cand, np.asarray(self.values[t])

    def dense(self, n: int) -> np.ndarray:
        """(targets, n) scores of every item; items outside a target's candidates get its lowest
        candidate score (they rank below every candidate). A damping grid is kept as it is."""
        if self.candidates is None:
            return np.asarray(self.values) if len(self.values) else np.zeros((0, n))
        rows = []
        for cand, scores in zip(self.candidates, self.values, strict=True):
            full = np.full(n, float(np.min(scores)) if len(scores) else 0.0)
            full[cand] = scores
            rows.append(full)
        return np.stack(rows) if rows else np.zeros((0, n))


def spaces_read(att, labelled: bool, methods) -> list[str]:
    """The embedders an attribution builds: attribution.embedders (searched) and those the
    methods, (class, option) pairs, read besides (the paper scorer's feature space)."""
    names = list(att.embedders)
    for cls, option in methods:
        names += [s for s in cls.spaces(att, labelled, option) if s not in names]
    return names


class Attributor:
    """Subclass this, set `traits`, implement `prepare` and `scores`. `name` is set by the registry
    to the method's label in tables (attribution.methods, or attribution.custom_methods' key).
    `check` and `spaces` are optional (a method with no settings of its own to refuse, or that
    reads no embedder, keeps these)."""

    traits: ClassVar[Traits]
    name: str = ""

    def __init__(self, name: str = "", option: str | None = None):
        self.name = name or type(self).__name__.lower()
        self.option = option  # the part after ':' in `latent:<embedder>`-style names

    @classmethod
    def check(cls, settings, model_cls, option: str | None) -> str | None:
        """A method's own check of the settings beyond its declared needs: one sentence that
        refuses it, or None. `settings`: the stage's settings; `model_cls`: the model class."""
        return None

    @classmethod
    def spaces(cls, att, labelled: bool, option: str | None) -> list[str]:
        """The embedders (names under `embedders`) whose training-set indexes it reads, given the
        attribution settings `att` and whether the data has labels."""
        return []

    def prepare(self, context: AttributionContext) -> None:
        """Build what scoring needs (indexes, features, spectra); called once per context."""
        self.context = context

    def scores(self, targets: Targets) -> ScoreTable:
        raise NotImplementedError


def subset_sums(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """masks (subsets, items), scores (..., targets, items) -> (..., subsets, targets): each
    subset's sum of its items' scores."""
    summed = np.asarray(scores, dtype=np.float64) @ np.asarray(masks, dtype=np.float64).T
    return np.swapaxes(summed, -1, -2)
