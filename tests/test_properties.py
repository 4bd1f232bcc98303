"""Property-based tests (hypothesis) of removal plans and signatures.

Plans: for any rankings, pools, ids, k, arms, seeds and grouping, `make_plan` either refuses an
infeasible request (a ranking or pool shorter than k) or gives members whose removal sets hold no
duplicate, respect k (exactly k per target where one target is retrained; the union of the targets'
choices for a group), have unique ids, fall into exactly one retrain job, and -- through the real
data loading, `data.exclude_ids = member.removed` as `training.members.member_settings` sets it --
never reach the member's training set.

Signatures: key order (nested too, dict or DictConfig) never changes a signature; any change of a
value does."""

from __future__ import annotations

import copy
import functools
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from influence_lab.data import load_data
from influence_lab.errors import InfluenceLabError
from influence_lab.evaluation.removal_plans import ARMS, CONTROLS, GROUPINGS, jobs_of, make_plan
from influence_lab.settings import from_config
from influence_lab.store.signature import signature
from influence_lab.training.members import member_settings
from tests.conftest import make_cfg

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
METHODS = ("fused", "paper", "caption_only", "raw_only", "latent:model")
RANKED_ARMS = ("topk", "bottomk")


# ---------------------------------------------------------------- removal plans


def rankings_and_pools(ids, methods, n_targets, rng, length) -> tuple[pd.DataFrame, dict]:
    """Per target, a ranking of `length()` ids for each method and a pool of `length()` ids, in
    orders drawn from `rng`."""
    n = len(ids)
    rows, pools = [], {}
    for t in range(n_targets):
        for method in methods:
            ranked = [ids[i] for i in rng.permutation(n)[: length()]]
            rows += [
                {"target": t, "method": method, "rank": r + 1, "id": i, "prompt": f"p{t}"}
                for r, i in enumerate(ranked)
            ]
        pools[t] = sorted(ids[i] for i in rng.permutation(n)[: length()])
    ranking = pd.DataFrame(rows, columns=["target", "method", "rank", "id", "prompt"])
    return ranking, pools


@st.composite
def plan_requests(draw, ids=None, max_k=None, small=False, feasible=False):
    """Everything make_plan takes. Rankings and pools are usually long enough for every k, and
    sometimes not (then the plan must be refused); always, with `feasible`."""
    if ids is None:
        n = draw(st.integers(2, 40))
        ids = [f"x{i:03d}" for i in range(n)]
    n = len(ids)
    ks = draw(
        st.lists(
            st.integers(1, min(n - 1, max_k or n - 1)),
            min_size=1,
            max_size=1 if small else 3,
            unique=True,
        )
    )
    seeds = draw(
        st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=1 if small else 2, unique=True)
    )
    arms = draw(
        st.lists(st.sampled_from(ARMS), min_size=1, max_size=3 if small else 5, unique=True).filter(
            lambda a: any(x in RANKED_ARMS for x in a)
        )
    )
    methods = draw(
        st.lists(st.sampled_from(METHODS), min_size=1, max_size=1 if small else 3, unique=True)
    )
    n_targets = draw(st.integers(1, 2 if small else 5))
    enough = max(ks)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))  # orders of many ids, cheaply

    def length():  # mostly long enough, sometimes any length
        if feasible:
            return draw(st.integers(min(enough, n), n))
        return draw(
            st.one_of(
                st.integers(min(enough, n), n), st.integers(min(enough, n), n), st.integers(0, n)
            )
        )

    ranking, pools = rankings_and_pools(ids, methods, n_targets, rng, length)
    grouping = draw(st.sampled_from(GROUPINGS))
    group_size = draw(st.one_of(st.none(), st.integers(1, n_targets + 1)))
    return dict(
        ranking=ranking,
        pools=pools,
        all_ids=list(ids),
        methods=methods,
        arms=arms,
        ks=ks,
        seeds=seeds,
        grouping=grouping,
        group_size=group_size,
    )


def ranked_ids(ranking: pd.DataFrame, target: int, method: str) -> list[str]:
    rows = ranking[(ranking.target == target) & (ranking.method == method)]
    return rows.sort_values("rank")["id"].tolist()


def shortage(req: dict, targets: list[int]) -> bool:
    """Whether some arm needs more items than a ranking or pool offers."""
    for k in req["ks"]:
        for t in targets:
            if any(a in RANKED_ARMS for a in req["arms"]) and any(
                len(ranked_ids(req["ranking"], t, m)) < k for m in req["methods"]
            ):
                return True
            if "random_pool" in req["arms"] and len(req["pools"][t]) < k:
                return True
    return False


def groups_of(targets: list[int], group_size) -> list[list[int]]:
    size = len(targets) if group_size is None else group_size
    return [targets[i : i + size] for i in range(0, len(targets), size)]


def check_refusal(req: dict, targets: list[int], message: str) -> None:
    """A refused plan names a real shortage: no targets, a group's removals covering the training
    set, or a ranking or pool shorter than k."""
    event(f"refused: {message.split(';')[0].split(' for target')[0][:40]}")
    if not targets:
        assert "ranks no items for any prompt" in message
    elif "would remove every training item" in message:
        # a group's union covers the training set
        assert req["grouping"] == "grouped"
        largest = max(len(g) for g in groups_of(targets, req["group_size"]))
        assert max(req["ks"]) * largest >= len(req["all_ids"])
    else:
        assert "ranked only" in message or "pool of target" in message, message
        assert shortage(req, targets)


def check_member(req: dict, member, ids: set, groups: list[list[int]]) -> None:
    """One member's removal set: distinct known ids, fewer than all, chosen as its arm says."""
    assert len(set(member.removed)) == len(member.removed)  # no id twice
    assert set(member.removed) <= ids
    assert len(member.removed) < len(ids)
    assert member.targets in groups
    k = member.k
    if member.arm == "none":
        assert member.removed == []
    elif member.arm in RANKED_ARMS:
        chosen = [ranked_ids(req["ranking"], t, member.method) for t in member.targets]
        chosen = [r[:k] if member.arm == "topk" else r[-k:] for r in chosen]
        if req["grouping"] == "per_target":
            assert member.removed == chosen[0]  # exactly the k best (worst), in rank order
        else:
            assert member.removed == sorted(set().union(*chosen))  # the union of the targets' top-k
    else:
        source = (
            set().union(*(req["pools"][t] for t in member.targets))
            if member.arm == "random_pool"
            else ids
        )
        assert set(member.removed) <= source
        if req["grouping"] == "per_target":
            assert len(member.removed) == k
        else:
            assert k <= len(member.removed) <= k * len(member.targets)
    if req["grouping"] == "per_target" and member.arm != "none":
        assert len(member.removed) == k


@FAST
@given(plan_requests())
def test_plans_remove_k_distinct_items_per_target_with_unique_members(req):
    targets = sorted(set(req["ranking"].target))
    try:
        plan = make_plan(**req)
    except InfluenceLabError as exc:
        check_refusal(req, targets, str(exc))
        return
    event(f"planned ({req['grouping']})")
    assert not shortage(req, targets)
    assert plan == make_plan(**req)  # deterministic
    ids = set(req["all_ids"])
    assert len({m.member_id for m in plan}) == len(plan)  # member ids are unique
    groups = (
        groups_of(targets, req["group_size"])
        if req["grouping"] == "grouped"
        else [[t] for t in targets]
    )
    for member in plan:
        check_member(req, member, ids, groups)
    # each (arm, method, k, seed) retrains every target once: its members' targets partition them
    ranked_arms = [a for a in req["arms"] if a in RANKED_ARMS]
    controls = [a for a in req["arms"] if a in CONTROLS]
    combos = {(m.arm, m.method, m.k, m.seed) for m in plan}
    assert len(combos) == len(req["ks"]) * len(req["seeds"]) * (
        len(ranked_arms) * len(req["methods"]) + len(controls)
    )
    for combo in combos:
        covered = [t for m in plan if (m.arm, m.method, m.k, m.seed) == combo for t in m.targets]
        assert sorted(covered) == targets
    assert len(plan) == len(combos) * len(groups)


@FAST
@given(
    plan_requests(ids=[f"x{i:03d}" for i in range(60)], max_k=10, feasible=True), st.integers(1, 50)
)
def test_every_member_is_in_exactly_one_job(req, job_size):
    plan = make_plan(**req)
    jobs = jobs_of(plan, job_size)
    assert [i for job in jobs for i in job] == [
        m.member_id for m in plan
    ]  # each once, in plan order
    assert all(1 <= len(job) <= job_size for job in jobs)
    assert len(jobs) == math.ceil(len(plan) / job_size)


@functools.cache
def digits_config():
    """The default digits settings, and their bundle with nothing removed."""
    base = from_config(make_cfg("counterfactual", tempfile.mkdtemp(prefix="props-")))
    return base, load_data(base.data)


@st.composite
def digits_plan(draw):
    _, bundle = digits_config()
    train_ids = list(bundle.train["id"])
    return draw(plan_requests(ids=train_ids, max_k=40, small=True, feasible=True)), draw(
        st.booleans()
    )


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(digits_plan())
def test_removed_ids_never_reach_a_members_training_set(drawn):
    req, as_file = drawn
    base, bundle = digits_config()
    plan = make_plan(**req)
    full_train = list(bundle.train["id"])
    for member in plan:
        data = member_settings(base, member.to_dict()).data
        assert list(data.exclude_ids) == member.removed
        with tempfile.TemporaryDirectory() as tmp:
            if as_file:  # data.exclude_ids may also name a file of ids, one per line
                path = Path(tmp) / "ids.txt"
                path.write_text("".join(f"{i}\n" for i in member.removed))
                data = data.model_copy(update={"exclude_ids": str(path)})
            trained_on = load_data(data)
        train = list(trained_on.train["id"])
        assert not set(member.removed) & set(train)
        assert train == [
            i for i in full_train if i not in set(member.removed)
        ]  # the rest, in order
        assert list(trained_on.val["id"]) == list(
            bundle.val["id"]
        )  # the validation split is untouched
        assert sorted(trained_on.excluded) == sorted(member.removed)


# ---------------------------------------------------------------- signatures

KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=8)
LEAVES = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABC-_.,:0123456789", max_size=12),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)
CONFIGS = st.dictionaries(KEYS, VALUES, min_size=1, max_size=6)


def reorder(obj, rng):
    """The same mapping with every dict's keys in another order (lists keep theirs)."""
    if isinstance(obj, dict):
        keys = list(obj)
        rng.shuffle(keys)
        return {k: reorder(obj[k], rng) for k in keys}
    if isinstance(obj, list):
        return [reorder(v, rng) for v in obj]
    return obj


def paths(obj, prefix=()):
    """Every place in `obj` that holds a value: (path, value)."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, (*prefix, i))


def replaced(obj, path, value):
    out = copy.deepcopy(obj)
    if not path:
        return value
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


def changed(value, draw):
    """A different value of the same kind (or, sometimes, of another kind)."""
    if isinstance(value, bool) or value is None:
        return draw(st.sampled_from([v for v in (True, False, None, 0, "x") if v is not value]))
    if isinstance(value, int):
        return value + draw(st.integers(1, 1000)) * draw(st.sampled_from([-1, 1]))
    if isinstance(value, float):
        new = draw(st.floats(allow_nan=False, allow_infinity=False))
        assume(new != value)
        return new
    if isinstance(value, str):
        return value + draw(st.text(alphabet="xyz", min_size=1, max_size=3))
    if isinstance(value, list):
        return draw(st.sampled_from([value + [draw(LEAVES)], value[:-1] if value else [0]]))
    return {
        **value,
        draw(KEYS.filter(lambda k: k not in value)): draw(LEAVES),
    }  # a dict: one key more


def as_json(obj) -> str:
    return json.dumps(obj, sort_keys=True)


@FAST
@given(CONFIGS, st.randoms(use_true_random=False))
def test_key_order_never_changes_a_signature(cfg, rng):
    shuffled = reorder(cfg, rng)
    assert signature(shuffled) == signature(cfg)
    assert signature(OmegaConf.create(shuffled)) == signature(cfg)  # a DictConfig signs as its dict
    assert signature({"outer": shuffled, "n": 1}) == signature({"n": 1, "outer": cfg})
    assert signature(cfg, [shuffled]) == signature(OmegaConf.create(shuffled), [cfg])


@settings(max_examples=50, deadline=None)
@given(CONFIGS, st.randoms(use_true_random=False))
def test_a_dictconfig_nested_in_a_plain_dict_signs_as_its_dict(cfg, rng):
    shuffled = reorder(cfg, rng)
    assert signature({"outer": OmegaConf.create(shuffled)}) == signature({"outer": cfg})


@FAST
@given(CONFIGS, st.data())
def test_any_change_of_a_value_changes_the_signature(cfg, data):
    places = [p for p, _ in paths(cfg) if p]
    path = data.draw(st.sampled_from(places))
    old = dict(paths(cfg))[path]
    new_cfg = replaced(cfg, path, changed(old, data.draw))
    assume(as_json(new_cfg) != as_json(cfg))  # 1 == 1.0 == True in Python, but not in JSON or here
    assert signature(new_cfg) != signature(cfg)
    assert signature(OmegaConf.create(new_cfg)) != signature(OmegaConf.create(cfg))


@pytest.mark.parametrize(
    "a,b",
    [
        ({"x": 1}, {"x": 1.0}),
        ({"x": 1}, {"x": True}),
        ({"x": 0}, {"x": None}),
        ({"x": [1, 2]}, {"x": [2, 1]}),
        ({"x": "1"}, {"x": 1}),
        ({"x": {}}, {"x": []}),
    ],
)
def test_values_that_python_finds_equal_still_sign_differently(a, b):
    assert signature(a) != signature(b)
