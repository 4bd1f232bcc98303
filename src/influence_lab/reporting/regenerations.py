"""What retraining did to the outputs, to look at: per prompt, the full model's outputs and the
outputs regenerated (same prompt, same seeds) by the models retrained without each arm's items,
one row per arm, drawn into the sweep's `regenerated/` folder (a PNG grid, or a text listing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation.removal_plans import Member, Plan
from ..evaluation.sweep import read_regenerated
from ..store.paths import inside
from ..store.records import load_outputs
from .figures import draw
from .neighbours import _slug


def _label(member: Member) -> str:
    """The row label of a member: what its model was trained without."""
    seed = f"(seed {member.seed})"
    if member.arm == "none":
        return f"retrained, nothing removed {seed}"
    if member.method == "control":
        return f"without {member.k} {member.arm} items {seed}"
    return f"without {member.method}'s {member.arm.removesuffix('k')}-{member.k} {seed}"


def rows_for(plan: Plan, target: int) -> list[Member]:
    """The members shown for `target`: at the smallest k and the first seed, every method's top-k
    member and every control's, in the plan's order."""
    having = [m for m in plan.members if target in m.targets]
    if not having:
        return []
    k, seed = min(m.k for m in having), min(m.seed for m in having)
    return [m for m in having if m.k == k and m.seed == seed]


def draw_regenerations(folder: Path, plan: Plan, count: int) -> list[Path]:
    """One picture for each of the first `count` retrained prompts (only the members whose
    regenerated outputs were kept are drawn); returns the pictures."""
    prompts, originals, _ = load_outputs(plan.generate_dir)
    results = Path(folder) / "results"
    targets = sorted({t for m in plan.members for t in m.targets})[:count]
    pictures = []
    for t in targets:
        rows, labels = [originals[t]], ["the full model"]
        for member in rows_for(plan, t):
            outputs = read_regenerated(results, member.member_id).get(t)
            if outputs is not None:
                rows.append(outputs)
                labels.append(_label(member))
        if len(rows) == 1:
            continue
        stem = inside(
            folder,
            Path(folder) / "regenerated" / f"{t:03d}-{_slug(prompts[t])}",
            "regenerated outputs",
        )
        grid = np.stack(rows) if isinstance(originals[t], np.ndarray) else rows
        title = f"'{prompts[t]}': outputs before and after retraining (same seeds)"
        pictures.append(draw(grid, labels, stem, title))
    return pictures
