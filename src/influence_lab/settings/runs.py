"""`pipeline.runs` and `lds.runs`: an experiment's runs, each a list of overrides."""

from __future__ import annotations

from typing import Annotated

from .rules import a_list, is_list, rule


def _one_run(value) -> bool:
    return is_list(value) and all(isinstance(o, str) for o in value)


Run = Annotated[
    list[str],
    rule(
        _one_run,
        "{key} has {value}; each run is a list of overrides, e.g. [[model=ddpm], [model=vae]].",
    ),
]
Runs = Annotated[list[Run], a_list("[[model=ddpm],[model=vae]]")]
