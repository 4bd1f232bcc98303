"""`counterfactual`: the removal plan (arms, k, seeds, grouping) and the retrain sweep. The arms and
groupings are declared here and imported by `counterfactual.plans`; `check_plan` checks a plan's
plain arguments with the same rules. Checks across sections (k at most attribution.keep, methods
among attribution.methods, embedders known) are in `stage.StageSettings`; the launcher is checked
against the installed Hydra launchers at a stage's entry (`orchestration.launch.check_launcher`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from .rules import (
    Bool,
    OnceEach,
    PositiveInt,
    SeedList,
    Settings,
    a_list,
    auto_or,
    fail,
    is_int,
    not_empty,
    one_of,
    rule,
    validated,
)

ARMS = ("topk", "bottomk", "random_pool", "random", "none")
TESTED_ARMS = ("topk", "bottomk")  # the arms that test a method
CONTROLS = ("random_pool", "random", "none")
GROUPINGS = ("per_target", "grouped")


def _known_arms(arms):
    bad = [a for a in arms if a not in ARMS]
    if bad:
        fail("{key} has {bad}; allowed values are " + ", ".join(ARMS) + ".", bad=str(bad))
    if not any(a in TESTED_ARMS for a in arms):
        fail("{key} needs topk (or bottomk): there is nothing to test otherwise.")
    return arms


Arms = Annotated[
    list, a_list("[topk,random_pool,random,none]"), AfterValidator(_known_arms), OnceEach
]
K = Annotated[
    int,
    rule(lambda v: is_int(v) and v >= 1, "{key} has {value}; each k must be a positive integer."),
]
Ks = Annotated[
    list[K], a_list("[10]"), not_empty("give at least one number of items to remove."), OnceEach
]
GroupSize = Annotated[
    int | None,
    rule(
        lambda v: v is None or (is_int(v) and v >= 1),
        "{key} is {value}; use a positive number of prompts or null.",
    ),
]
Override = Annotated[
    str,
    rule(
        lambda v: isinstance(v, str),
        "{key} has {value}; each entry must be one override, e.g. hydra.launcher.partition=debug.",
    ),
]


class PlanSettings(Settings):
    """The settings of a removal plan that can be checked before anything is ranked."""

    arms: Arms = ["topk", "random_pool", "random", "none"]  # also: bottomk
    k: Ks = [10]  # items removed per prompt (a list sweeps several)
    seeds: SeedList = [
        1,
        2,
        3,
    ]  # training seeds of the retrained models (the full model uses `seed`)
    grouping: Annotated[str, one_of(GROUPINGS)] = (
        "grouped"  # grouped: every prompt's items at once; per_target
    )
    group_size: GroupSize = None  # grouped: prompts per group; None = one group
    nulls: Bool = False  # add the null arms (null_<control>: drawn like each control; calibrate)


class CounterfactualSettings(PlanSettings):
    methods: auto_or(
        Annotated[
            list[str],
            a_list("[fused]"),
            not_empty("give at least one attribution method, or auto."),
            OnceEach,
        ]
    ) = "auto"
    pack_size: PositiveInt = (
        16  # members (retrained models) per retrain job, trained together as one pack
    )
    launcher: str | None = (
        "basic"  # Hydra launcher of the retrain multirun when hydra/launcher is not given
    )
    launcher_overrides: Annotated[list[Override], a_list("[hydra.launcher.partition=debug]")] = []
    embedders: Annotated[list[str], a_list("[model,autoencoder]"), OnceEach] = [
        "model",
        "autoencoder",
    ]


def check_plan(arms, ks, seeds, grouping, group_size=None) -> PlanSettings:
    """A plan's plain arguments checked with the rules of `counterfactual.*`."""
    return validated(
        PlanSettings,
        {
            "arms": list(arms) if isinstance(arms, (list, tuple)) else arms,
            "k": list(ks) if isinstance(ks, (list, tuple)) else ks,
            "seeds": list(seeds) if isinstance(seeds, (list, tuple)) else seeds,
            "grouping": grouping,
            "group_size": group_size,
        },
        "counterfactual",
    )
