"""What the LDS may ask of an attributor beyond its core (`Attributor.prepare` and `scores`):
each an optional protocol, checked with `isinstance` where it is used (evaluation/subsets.py,
registry.any_tunes_damping), with a plain fallback from `scores` when a method does not
implement it. A user's attributor implements none and is scored by the LDS all the same.

- `DampingGrid`: scores at each damping of a grid, so that the LDS chooses one on its selection
  subsets (TRAK, D-TRAK); the attribute stage then scores at the chosen one.
- `SubsetSums`: each subset's sum of its items' scores, streamed over the training features so
  that the targets x items table is never held (TracIn, TRAK, D-TRAK). Fallback:
  `attributor.subset_sums(masks, scores(targets).dense(n))`.
- `PerModel`: an ensemble method's scores per ensemble model, so that the LDS reports it at each
  ensemble size (`trak@1`, `trak@2`, ...)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .attributor import ScoreTable, Targets


@runtime_checkable
class DampingGrid(Protocol):
    def damped_scores(self, targets: Targets, dampings: list[float]) -> ScoreTable:
        """Scores (dampings, targets, items) at each damping of `dampings` (relative to the
        kernel's mean diagonal)."""
        ...


@runtime_checkable
class SubsetSums(Protocol):
    def subset_sums(
        self, targets: Targets, masks: np.ndarray, dampings: list[float] | None = None
    ) -> np.ndarray:
        """For masks (subsets, items): (subsets, targets), or (dampings, subsets, targets) with a
        grid (a `DampingGrid` method only)."""
        ...


@runtime_checkable
class PerModel(Protocol):
    def per_model(self, targets: Targets, dampings: list[float] | None = None) -> list[ScoreTable]:
        """One table per ensemble model: that model's scores alone."""
        ...

    def per_model_subset_sums(
        self, targets: Targets, masks: np.ndarray, dampings: list[float] | None = None
    ) -> list[np.ndarray]:
        """`SubsetSums.subset_sums` per ensemble model."""
        ...
