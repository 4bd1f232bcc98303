"""Removal plans: which training items each retrained model (a member) leaves out.

Arms, for each target (prompt) and method, with k items per prompt:
- `topk`: the method's k highest-ranked items;
- `bottomk` (optional): the method's k lowest-ranked items among those it ranked;
- `random_pool`: k random items from the prompt filter's pool (a control that keeps the caption
  match);
- `random`: k random items from the whole training set;
- `none`: nothing removed, only a different training seed (the noise floor).
Controls do not depend on the method; they are planned once and compared with every method.

Groupings: `per_target` (one member per target, arm, k, seed) and `grouped` (the original paper's
protocol: remove the chosen items of every prompt of a group at once and retrain once per group,
arm, k and seed). `group_size` splits the prompts into consecutive groups of that many (the
paper's "experiments" of 15 prompts); None keeps them all in one group.

Units: a target (per_target) or a group (grouped) is a *unit*, the thing whose retrained models no
other unit shares. With more than one unit, each unit's members train with a seed of their own
(`unit_seed`: derived from the configured seed and the unit, the same for every arm of the unit), so
that units never share a retrained model (a `none` member of two targets would otherwise be one
model) while a unit's arms keep common random numbers.

Null arms (`nulls=True`, the calibration of `influence-lab calibrate`): for each control C of the
plan, a pseudo-method `null_C` drawn from C's own distribution, so that `null_C` against C compares
two nulls: `null_random` picks k random items of the whole set, `null_random_pool` k random items
of the target's pool (both drawn once per target with `null_seed`, shared by every retrain seed, as
a method's top-k is), `null_none` removes nothing and retrains with another seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InfluenceLabError
from ..settings.counterfactual_settings import ARMS, CONTROLS, GROUPINGS, TESTED_ARMS, check_plan
from ..store.files import read_json, write_json
from ..store.paths import safe_name

__all__ = [
    "ARMS",
    "CONTROLS",
    "GROUPINGS",
    "NULLS",
    "Member",
    "make_plan",
    "jobs_of",
    "check_plan",
    "null_control",
    "PLAN_DESIGN",
    "design_of",
]

NULLS = {f"null_{c}": c for c in CONTROLS}  # null pseudo-method -> the control it mimics
# the plan's design: 2 = units with seeds of their own and other targets measured (a sweep of
# design 1, where targets shared retrained models, is never reused as one of design 2)
PLAN_DESIGN = 2


def design_of(config: dict) -> dict:
    """The shape of a counterfactual design from a stage's config as plain values (its
    `counterfactual`, `replicates` and `generate` sections): what a calibration calibrates and a
    sweep must match to be read with it. Seeds by count, not by value (a null run shifts them)."""
    cf, generate = config.get("counterfactual") or {}, config.get("generate") or {}
    prompts = generate.get("prompt_count") or len(generate.get("prompts") or [])
    return {
        "plan_design": PLAN_DESIGN,
        "grouping": cf.get("grouping"),
        "group_size": cf.get("group_size"),
        "k": list(cf.get("k") or []),
        "seeds": len(cf.get("seeds") or []),
        "replicates": int(config.get("replicates") or 1),
        "prompts": int(prompts),
    }


def null_control(method: str) -> str | None:
    """The control a null pseudo-method is drawn like (None for a real method)."""
    return NULLS.get(method)


@dataclass
class Member:
    member_id: str
    method: str  # "control" for the method-independent arms
    arm: str
    k: int
    seed: int
    targets: list[int]
    removed: list[str] = field(default_factory=list)
    group: int = 0
    unit: str = ""  # the independent unit: t<target> (per_target), g<group> or "all" (grouped)
    train_seed: int | None = None  # the seed it trains with (`unit_seed`); None: `seed`

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Member:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def unit_seed(seed: int, unit: str, salt: str = "") -> int:
    """The training seed of a unit's members: `seed` itself when the plan has one unit (`all`),
    else a 31-bit number hashed from the seed and the unit (and `salt`: `null_none` retrains with
    another seed than `none`)."""
    if unit == "all" and not salt:
        return int(seed)
    digest = hashlib.sha256(f"train-seed/{seed}/{unit}/{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _choose(
    arm: str,
    method: str,
    target: int,
    k: int,
    seed: int,
    ranking: pd.DataFrame,
    pools: dict[int, list[str]],
    all_ids: list[str],
    null_seed: int = 0,
) -> list[str]:
    if arm == "none" or method == "null_none":
        return []
    if method in NULLS:  # drawn once per target (not per retrain seed), as a method's top-k
        source = pools[target] if NULLS[method] == "random_pool" else all_ids
        if len(source) < k:
            raise InfluenceLabError(
                f"{method} needs {k} items but target {target} offers {len(source)}; lower "
                f"counterfactual.k or raise attribution.pool_size."
            )
        picks = _rng("null", method, target, k, null_seed).choice(len(source), k, replace=False)
        return [source[i] for i in sorted(picks)]
    if arm in TESTED_ARMS:
        ranked = (
            ranking[(ranking.target == target) & (ranking.method == method)]
            .sort_values("rank")["id"]
            .tolist()
        )
        if len(ranked) < k:
            raise InfluenceLabError(
                f"method {method} ranked only {len(ranked)} items for target {target}, fewer than "
                f"k={k}; raise attribution.keep (or attribution.pool_size, for a method that "
                f"ranks only the pool) or lower counterfactual.k."
            )
        return ranked[:k] if arm == "topk" else ranked[-k:]
    source = pools[target] if arm == "random_pool" else all_ids
    if len(source) < k:
        if arm == "random_pool":
            raise InfluenceLabError(
                f"counterfactual.k has {k} but the prompt filter's pool of target {target} holds "
                f"{len(source)} items; lower counterfactual.k or raise attribution.pool_size."
            )
        raise InfluenceLabError(
            f"arm {arm} needs {k} items but target {target} offers {len(source)}."
        )
    picks = _rng(arm, target, k, seed).choice(len(source), size=k, replace=False)
    return [source[i] for i in sorted(picks)]


def make_plan(
    ranking: pd.DataFrame,
    pools: dict[int, list[str]],
    all_ids: list[str],
    methods: list[str],
    arms: list[str],
    ks: list[int],
    seeds: list[int],
    grouping: str,
    group_size: int | None = None,
    nulls: bool = False,
    null_seed: int = 0,
) -> list[Member]:
    """Every member of a sweep. `ranking` is the attribute stage's table; `pools` the prompt
    filter's pool of each target; `nulls` adds the null pseudo-methods of the plan's controls
    (drawn with `null_seed`)."""
    plan = check_plan(arms, ks, seeds, grouping, group_size)
    arms, ks, seeds, grouping, group_size = (
        plan.arms,
        plan.k,
        plan.seeds,
        plan.grouping,
        plan.group_size,
    )
    if nulls:
        methods = [m for m in methods if m not in NULLS]
        methods += [m for m, c in NULLS.items() if c in arms]
        if "topk" not in arms or not set(arms) & set(CONTROLS):
            raise InfluenceLabError(
                "counterfactual.nulls needs topk and at least one control in counterfactual.arms."
            )
    _check_methods(methods)
    n = len(all_ids)
    _check_ks(ks, n)
    targets = _ranked_targets(ranking)
    size = len(targets) if group_size is None else group_size
    groups = [targets[i : i + size] for i in range(0, len(targets), size)]
    members: list[Member] = []
    for k in ks:
        for seed in seeds:
            for arm in arms:
                arm_methods = methods if arm in TESTED_ARMS else ["control"]
                for method in arm_methods:
                    if method in NULLS and arm != "topk":
                        continue  # a null stands in for a method's top-k only
                    chosen = {
                        t: _choose(arm, method, t, k, seed, ranking, pools, all_ids, null_seed)
                        for t in targets
                    }
                    members += _arm_members(method, arm, k, seed, grouping, targets, groups, chosen)
    for m in members:
        if len(m.removed) >= n:
            raise InfluenceLabError(f"member {m.member_id} would remove every training item.")
    return members


def _check_methods(methods: list[str]) -> None:
    """At least one method, none listed twice."""
    if not methods:
        raise InfluenceLabError(
            "counterfactual.methods is empty; give at least one attribution method, or auto."
        )
    if len(set(methods)) < len(methods):
        twice = next(m for i, m in enumerate(methods) if m in methods[:i])
        raise InfluenceLabError(
            f"counterfactual.methods has '{twice}' twice; list each value once."
        )


def _check_ks(ks: list[int], n: int) -> None:
    """Each k removes at least one of the `n` training items and leaves at least one."""
    for k in ks:
        if not 1 <= k < n:
            raise InfluenceLabError(
                f"counterfactual.k has {k} but the training set has only {n} items; each k "
                f"must be smaller."
            )


def _ranked_targets(ranking: pd.DataFrame) -> list[int]:
    """The targets (prompts) the attribution ranked items for, in order; refused when none."""
    targets = sorted(int(t) for t in ranking.target.unique())
    if not targets:
        raise InfluenceLabError(
            "the attribution ranks no items for any prompt, so there is nothing to remove; "
            "rerun influence-lab attribute with force=true."
        )
    return targets


def _arm_members(
    method: str,
    arm: str,
    k: int,
    seed: int,
    grouping: str,
    targets: list[int],
    groups: list[list[int]],
    chosen: dict[int, list[str]],
) -> list[Member]:
    """The members of one method, arm, k and seed: one per target (`per_target`), one for all
    targets, or one per group of targets, each removing the union of its targets' `chosen` items."""
    # member ids name result files: a method name that is not a plain file-name component gets a
    # slug and a hash (ordinary names are unchanged)
    tag = f"{safe_name(method.replace(':', '_'))}-{arm}-k{k}-s{seed}"
    salt = "null" if method == "null_none" else ""
    if grouping == "per_target":
        units = [(f"t{t:03d}", [t], chosen[t], 0) for t in targets]
    elif len(groups) == 1:
        units = [("all", targets, sorted(set().union(*chosen.values())) if chosen else [], 0)]
    else:
        units = [
            (f"g{g:02d}", group, sorted(set().union(*(chosen[t] for t in group))), g)
            for g, group in enumerate(groups)
        ]
    return [
        Member(
            f"{unit}-{tag}", method, arm, k, seed, ts, removed, g, unit, unit_seed(seed, unit, salt)
        )
        for unit, ts, removed, g in units
    ]


def jobs_of(members: list[Member], job_size: int) -> list[list[str]]:
    """Group members into retrain jobs of at most `job_size` members each (a positive integer:
    `counterfactual.pack_size`, checked at the stage's entry)."""
    ids = [m.member_id for m in members]
    return [ids[i : i + job_size] for i in range(0, len(ids), job_size)]


@dataclass
class Plan:
    """`plan.json` of a counterfactual sweep: every member, the retrain jobs (member ids), and what
    each retrain job measures against (the full model and the generated outputs)."""

    members: list[Member]
    jobs: list[list[str]]
    model_dir: str
    model_signature: str
    generate_dir: str
    output_seeds: list[int]
    prompt_seeds: list[list[int]] | None
    methods: list[str]

    def write(self, folder: Path) -> Path:
        return write_json(Path(folder) / "plan.json", asdict(self))

    @classmethod
    def read(cls, folder: Path) -> Plan:
        data = read_json(Path(folder) / "plan.json")
        try:
            data["members"] = [Member.from_dict(m) for m in data["members"]]
        except (KeyError, TypeError) as exc:
            raise InfluenceLabError(
                f"{Path(folder) / 'plan.json'} is not a complete plan ({exc}); run "
                f"influence-lab counterfactual again to rewrite it."
            ) from None
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})

    def seeds_of(self, target: int) -> list[int]:
        """The seeds of the outputs of prompt `target`."""
        return self.prompt_seeds[target] if self.prompt_seeds else self.output_seeds
