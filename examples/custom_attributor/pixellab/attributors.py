"""Nearest neighbours by pixel distance: the simplest search method one could propose, as a user
would write it against influence-lab's attributor interface.

A training item's score for a target is minus its squared pixel distance to the target's outputs,
summed over the outputs (higher = closer = more influential, the convention of every method).
Nothing in influence-lab names this class: `attribution.custom_methods` maps a label to it and
`plugins` allows the module, and then attribute, counterfactual, lds and the report treat the label
as they treat a built-in.
"""

from __future__ import annotations

import numpy as np

from influence_lab.attribution.methods import Attributor, ScoreTable, Targets, Traits


class PixelNeighbours(Attributor):
    # a search method (not a gradient one) on images; it tunes no damping and needs no ensemble
    traits = Traits(family="search", needs=("images",))

    def prepare(self, context) -> None:
        super().prepare(context)
        images = np.asarray(context.bundle.train.with_format("numpy")["image"], np.float64)
        self.items = images.reshape(len(images), -1)  # (N, pixels)
        self.items_sq = (self.items**2).sum(1)

    def scores(self, targets: Targets) -> ScoreTable:
        rows = []
        for outputs in targets.outputs:
            out = np.asarray(outputs, np.float64).reshape(len(outputs), -1)  # (m, pixels)
            squared = (out**2).sum(1)[:, None] - 2 * out @ self.items.T + self.items_sq[None]
            rows.append(-squared.sum(0))  # (N,): every training item is a candidate
        return ScoreTable(rows)
