"""The subset models of the LDS: members (random subsets x seeds) trained as packs, their losses on
every target and every training item, and each method's predicted scores of every target."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import torch

from ..attribution.methods import Targets
from ..attribution.methods.attributor import subset_sums
from ..attribution.methods.evidence import EvidenceAttributor
from ..attribution.methods.gradient import query_batches
from ..attribution.methods.protocols import DampingGrid, PerModel, SubsetSums
from ..attribution.preparation import context_for, prepared
from ..attribution.scoring import subset_sums_of
from ..console import console, track
from ..models.build import load_model
from ..models.protocol import NOISE_SEED
from ..settings import StageSettings
from ..store.files import RunDir, atomic_write
from ..store.records import GenerateProvenance
from ..store.signature import signature
from ..training.members import train_members
from .cost import metered


def subset_members(ids: list[str], masks: np.ndarray, seeds) -> list[dict]:
    """One member per (subset, seed): trained without the items outside the subset."""
    return [
        {
            "member_id": f"s{j:03d}-seed{s}",
            "subset": j,
            "seed": int(s),
            "removed": [ids[i] for i in np.flatnonzero(~masks[j])],
        }
        for j in range(len(masks))
        for s in seeds
    ]


def tracked_items(ids: list[str], count: int, seed: int) -> list[str]:
    """The `count` training items whose loss is recorded after every epoch (training dynamics)."""
    rng = np.random.default_rng(seed)
    return [ids[i] for i in sorted(rng.choice(len(ids), min(count, len(ids)), replace=False))]


def train_subset_models(
    settings: StageSettings, bundle, members: list[dict], run: RunDir, track_ids: list[str]
) -> dict:
    size = settings.lds.pack_size
    packs = [members[i : i + size] for i in range(0, len(members), size)]
    runs = {}
    for pack in track(packs, f"subset models ({len(members)} in packs of {size})"):
        pack_dir = (
            run.path.parent
            / "packs"
            / signature(sorted(m["member_id"] for m in pack) + [run.signature])
        )
        runs.update(train_members(settings, bundle, pack, pack_dir, track_ids))
    return runs


def targets_of(prompts, outputs, per_prompt) -> tuple[list[str], list]:
    """Every generated output as its own target: (prompt of each, [one-output group of each])."""
    t_prompts, t_outputs = [], []
    for prompt, outs in zip(prompts, outputs, strict=True):
        count = len(outs) if per_prompt is None else min(int(per_prompt), len(outs))
        for j in range(count):
            t_prompts.append(prompt)
            t_outputs.append(outs[j : j + 1])
    return t_prompts, t_outputs


def target_batch(t_prompts, t_outputs) -> dict:
    """Every target (a one-output group) in one batch, captioned by its prompt: the batch the
    joint targets' gradients are measured on too."""
    return query_batches(Targets(t_prompts, t_outputs, joint=True))[0]


def batch_digest(batch: dict) -> str:
    """A short hash of a batch's content (its tensors' bytes, its lists of captions or texts)."""
    digest = hashlib.sha256()
    for key in sorted(batch):
        value = batch[key]
        digest.update(str(key).encode())
        if isinstance(value, (torch.Tensor, np.ndarray)):
            array = np.ascontiguousarray(
                np.asarray(value.cpu() if hasattr(value, "cpu") else value)
            )
            digest.update(f"{array.dtype}{array.shape}".encode() + array.tobytes())
        else:
            digest.update(json.dumps(value, default=repr).encode())
    return digest.hexdigest()[:16]


def averaged_loss(model, batch: dict, draws: int) -> np.ndarray:
    """example_loss averaged over `draws` fixed noise draws (seeds NOISE_SEED, NOISE_SEED + 1, ...;
    a diffusion model's loss also averages over its `loss_timesteps` timesteps); a model without
    noise (measure_noise gives nothing) is measured once."""
    count = draws if model.measure_noise(1, NOISE_SEED) else 1
    losses = [model.example_loss(batch, NOISE_SEED + d).detach().numpy() for d in range(count)]
    return np.mean(losses, 0)


def model_losses(model_run: RunDir, targets: dict, train_batch: dict, path, draws: int) -> None:
    """The model's example_loss of every target and of every training item (averaged over `draws`
    noise draws), written to `path` unless it is there."""
    if path.exists():
        return
    model = load_model(model_run.path)
    t = averaged_loss(model, targets, draws)
    i = averaged_loss(model, train_batch, draws)

    def write(p):
        with open(p, "wb") as fh:
            np.savez(fh, targets=t, items=i)

    atomic_write(path, write)


@torch.no_grad()
def measure(
    runs: dict, members: list[dict], targets: dict, train_batch: dict, run: RunDir, draws: int = 1
):
    """Each subset model's example_loss of every target and of every training item (fixed noise,
    averaged over `draws` draws: `lds.noise_draws`);
    cached per model under the run's `losses/` (a killed run resumes here) and under the LDS
    results' shared `losses/`, keyed by the model's finished train result and the batches' content:
    every later LDS run of the same models and targets (other methods, dampings, projections)
    reads them instead of recomputing them."""
    truth, items = [], []
    key = signature(batch_digest(targets), batch_digest(train_batch), NOISE_SEED)
    if draws > 1:  # one draw keeps the key every earlier cached loss was written under
        key = signature(key, draws)
    for member in track(members, "losses under subset models"):
        path = run / "losses" / f"{member['member_id']}.npz"
        if not path.exists():
            model_run = runs[member["member_id"]]
            done = (model_run / "done").read_text()  # a model trained again has other losses
            shared = run.path.parent / "losses" / f"{signature(model_run.signature, done, key)}.npz"
            model_losses(model_run, targets, train_batch, shared, draws)
            atomic_write(path, lambda p, src=shared: shutil.copyfile(src, p))
        data = np.load(path)
        truth.append(data["targets"])
        items.append(data["items"])
    return np.stack(truth), np.stack(items)


def method_predictions(
    settings: StageSettings,
    bundle,
    generated: GenerateProvenance,
    methods,
    t_prompts,
    t_outputs,
    masks: np.ndarray,
    dampings: list[float] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, dict]]:
    """Each method's LDS prediction per subset of `masks` (subsets, items): the sum of the
    included items' scores per target, {label: (subsets, targets)}, each label's family, and each
    method's cost ({name: seconds, peak_mb, ...}: `cost.metered` around its preparation and
    scoring; the search methods' shared pass counts for each of them). A method whose traits tune
    a damping gives (len(dampings), subsets, targets), one per damping of `dampings` (else it
    scores at its own damping); an ensemble method is scored once per size of
    `lds.trak_ensembles` (labels `<method>@<size>`). The search methods share one pass over the
    targets; the others score every target as one batch. No method holds the targets x items
    table of scores (the gradient methods stream over their features)."""
    sizes = sorted(set(settings.lds.trak_ensembles))
    context = context_for(
        settings, bundle, generated.model_dir, generated.model_signature, ensemble_size=max(sizes)
    )
    costs: dict[str, dict] = {}
    attributors = {}
    for method in methods:
        with metered(costs.setdefault(method.label, {})):
            attributors.update(prepared([method], context))
    targets = Targets(t_prompts, t_outputs, joint=True)
    search = {k: a for k, a in attributors.items() if isinstance(a, EvidenceAttributor)}
    shared: dict = {}
    with metered(shared):
        out = subset_sums_of(context, search, targets, masks) if search else {}
    for label in search:
        costs[label]["seconds"] += shared["seconds"]
        costs[label]["peak_mb"] = max(costs[label]["peak_mb"], shared["peak_mb"])
        costs[label]["shared"] = f"one pass shared by {len(search)} search methods"
    families = {label: a.traits.family for label, a in search.items()}
    for name, attributor in attributors.items():
        if name in search:
            continue
        console.print(f"lds: scores of {name}", highlight=False)
        with metered(costs[name]):
            found = predictions_of(name, attributor, targets, masks, dampings, sizes)
        for label, sums in found:
            out[label], families[label] = sums, attributor.traits.family
    return out, families, costs


def predictions_of(
    name: str, attributor, targets: Targets, masks: np.ndarray, dampings, sizes: list[int]
) -> list[tuple[str, np.ndarray]]:
    """(label, subset sums) of one method that is not a search method: through the optional
    protocols it implements (`attribution/methods/protocols.py`) -- per ensemble size
    (`PerModel`: labels `<name>@<size>`), streamed (`SubsetSums`), at each damping of `dampings`
    (`DampingGrid`) -- else summed from its table of scores, as for any user's attributor."""
    grid = dampings if isinstance(attributor, DampingGrid) else None
    if isinstance(attributor, PerModel):
        per_model = attributor.per_model_subset_sums(targets, masks, grid)
        return [(f"{name}@{e}", np.mean(per_model[:e], axis=0)) for e in sizes]
    if isinstance(attributor, SubsetSums):
        return [(name, attributor.subset_sums(targets, masks, grid))]
    n = masks.shape[1]
    table = attributor.scores(targets) if grid is None else attributor.damped_scores(targets, grid)
    return [(name, subset_sums(masks, table.dense(n)))]
