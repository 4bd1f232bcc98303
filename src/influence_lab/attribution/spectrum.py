"""A TRAK kernel diagonalised once, so that scores at any damping (a grid of them, when the LDS
chooses one) cost a matrix product each instead of a new solve; held beside the gradient methods
that use it (TRAK, D-TRAK) and tested on its own (tests/test_subset_sums.py)."""

from __future__ import annotations

import numpy as np

from .feature_store import Features


class Spectrum:
    """One model's kernel Phi^T Phi diagonalised (or its dual Phi Phi^T, whichever is smaller).

    Features in one array: both sides precomputed. Sharded features (a training set that need not
    fit in memory): the kernel is accumulated shard by shard (memory dim^2) and the scores are
    streamed over the shards, ((q U) diag(1/(s+l)) U^T) Phi^T, the same product in another order
    (equal to 1e-12 relative; tests/test_sharded_features.py)."""

    def __init__(self, phi: Features | np.ndarray):
        phi = phi if isinstance(phi, Features) else Features([phi])
        n, d = phi.shape
        self.dual = d > n
        self.streamed = not self.dual and len(phi.shards) > 1
        if self.streamed:  # the shards are read again at each scoring, never held
            self.phi, gram = phi, phi.gram()
        else:
            dense = phi.dense()
            gram = dense @ dense.T if self.dual else dense.T @ dense
        self.scale = float(np.trace(gram)) / d  # the mean diagonal of Phi^T Phi, either way
        self.eigenvalues, vectors = np.linalg.eigh(gram)
        self.vectors = vectors
        # dual: scores = (q Phi^T V) diag(1/(s+l)) V^T ; primal: (q U) diag(1/(s+l)) U^T Phi^T
        if not self.streamed:
            self.right = vectors.T if self.dual else vectors.T @ dense.T  # (r, n)
        self.left = dense.T @ vectors if self.dual else vectors  # (d, r)

    def scores(self, q: np.ndarray, damping: float) -> np.ndarray:
        """q (targets, d) -> scores (targets, items) at lambda = damping x the mean diagonal."""
        if self.streamed:
            return self.phi.times(self.left_of(q, damping))
        return ((q @ self.left) * self.weights(damping)) @ self.right

    def weights(self, damping: float) -> np.ndarray:
        return 1.0 / (np.clip(self.eigenvalues, 0.0, None) + damping * self.scale)

    def subset_sums(self, masks: np.ndarray, q: np.ndarray, dampings: list) -> list[np.ndarray]:
        """masks (subsets, items) @ scores(q, d)^T for each damping d -> (subsets, targets) each:
        (masks @ right^T) ((q left) diag(1/(s+l)))^T, with masks @ right^T (subsets, r) formed
        once (streamed: (masks Phi) U)."""
        if self.streamed:
            right = self.phi.sums_over(masks) @ self.vectors
        else:
            right = np.asarray(masks, dtype=np.float64) @ self.right.T
        projected = q @ self.left
        return [right @ (projected * self.weights(d)).T for d in dampings]

    def left_of(self, q: np.ndarray, damping: float) -> np.ndarray:
        """Streamed: the rows (targets, d) whose product with Phi^T is the scores."""
        return ((q @ self.left) * self.weights(damping)) @ self.vectors.T
