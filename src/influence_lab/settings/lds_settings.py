"""`lds`: the linear datamodeling score of every attribution method, and memorization. Which
methods exist and what each needs of the model is the attribution registry's to check, at a
stage's entry (`registry.resolved_methods`)."""

from __future__ import annotations

from typing import Annotated

from .attribution import Methods
from .rules import (
    NonNegativeInt,
    PositiveInt,
    PositiveIntOrNull,
    Seed,
    SeedList,
    Settings,
    a_list,
    after,
    is_int,
    is_number,
    one_of,
    rule,
)
from .runs import Runs

Subsets = Annotated[
    int,
    rule(
        lambda v: is_int(v) and v >= 3,
        "{key} is {value}; a rank correlation needs at least 3 subsets.",
    ),
]
Alpha = Annotated[
    float,
    rule(
        lambda v: is_number(v) and 0 < v < 1,
        "{key} is {value}; it must be strictly between 0 and 1.",
    ),
]
Ensembles = Annotated[
    list,
    a_list("[1, 2, 4]"),
    after(
        lambda v: len(v) > 0 and all(is_int(e) and e >= 1 for e in v),
        "{key} is {value}; give sizes >= 1.",
    ),
]


DAMPINGS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
Dampings = Annotated[
    list,
    a_list("[0.01, 0.1, 1, 10]"),
    after(
        lambda v: len(v) > 0 and all(is_number(e) and e > 0 for e in v),
        "{key} is {value}; give positive dampings.",
    ),
]


class LDSSettings(Settings):
    # auto = the search methods of attribution.methods + the gradient methods the model allows
    methods: Methods = "auto"
    subsets: Subsets = 64  # M random subsets of the training set
    alpha: Alpha = 0.5  # fraction of the training set in each subset
    seeds: Annotated[SeedList, a_list("[1, 2]")] = [1, 2]  # training seeds per subset
    subset_seed: Seed = 0  # draws the subsets and the tracked items
    pack_size: PositiveInt = 32  # subset models trained together in one pack
    trak_ensembles: Ensembles = [
        1,
        2,
        4,
    ]  # TRAK / D-TRAK reported at these ensemble sizes (rows trak@e)
    # generated = every generated output a target; heldout = `heldout_targets` items no model saw
    targets: Annotated[str, one_of(("generated", "heldout"), "generated and heldout")] = "generated"
    heldout_targets: PositiveInt = 64  # held-out targets (the data's test file, else its val split)
    targets_per_prompt: PositiveIntOrNull = (
        None  # targets = the first k outputs of every prompt (None = all m)
    )
    memorization_top: PositiveInt = 16  # items in the memorization grid
    track_items: NonNegativeInt = 8  # training items whose loss is recorded after every epoch
    bootstrap: PositiveInt = 2000  # bootstrap resamples (subsets and targets) for the 95% interval
    noise_draws: PositiveInt = 3  # the ground-truth loss averages over this many noise draws
    selection: Alpha = 0.25  # fraction of the subsets (the first ones) that choose TRAK's damping
    dampings: Dampings = list(DAMPINGS)  # TRAK / D-TRAK damping grid, relative to mean diag
    runs: Runs = []  # each a list of overrides; empty = this config alone
    export_dir: str | None = None  # copy every run's table and figures here + RESULTS.md
