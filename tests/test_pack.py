"""Packs: a pack of one is the solo fit; members inside a pack match themselves trained alone;
removed items never reach a member's batches; different dataset sizes are handled exactly."""

import numpy as np
import pytest
import torch

from influence_lab.data import load_data
from influence_lab.models.build import build_model
from influence_lab.training.fit import fit, fit_pack
from tests.conftest import typed


def _solo(cfg, bundle, seed, tmp, exclude=()):
    from hydra import compose  # noqa: F401  (cfg already composed)
    from omegaconf import OmegaConf

    data_cfg = OmegaConf.merge(cfg.data, {"exclude_ids": list(exclude)})
    b = load_data(typed(data_cfg, "data"))
    model = build_model(typed(cfg.model), b, seed)
    model.record_losses = True
    fit(model, b, typed(cfg.model.fit), typed(cfg.trainer), tmp, seed)
    return model, b


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(a).max())


@pytest.mark.parametrize("model", ["vae", "ddpm", "ldm", "chargpt", "dalle"])
def test_pack_of_one_reproduces_the_solo_fit(cfg_factory, tmp_path, model):
    cfg = cfg_factory("train", model=model)
    solo, bundle = _solo(cfg, None, 3, tmp_path / "solo")
    member = build_model(typed(cfg.model), bundle, 3)
    fit_pack(
        [member],
        bundle.train,
        [np.arange(len(bundle.train))],
        [3],
        cfg.model.fit,
        cfg.trainer,
        tmp_path / "p",
    )
    assert len(member.loss_history) == len(solo.loss_history) > 0
    assert _rel(solo.loss_history, member.loss_history) < 1e-5
    for key, value in solo.state_dict().items():
        torch.testing.assert_close(member.state_dict()[key], value, rtol=1e-3, atol=2e-4)


@pytest.mark.parametrize("model", ["vae", "chargpt", "dalle"])
def test_members_match_themselves_alone_with_different_removals(cfg_factory, tmp_path, model):
    """Tolerance: loss curves within 1e-4 relative, weights within 2e-4 absolute (float32
    batched matmuls sum in a different order than unbatched ones). CharGPT's pack runs its own
    member-batched arithmetic (`packed_loss`), the others vmap the solo module."""
    size = "data.source.max_per_list=200" if model == "chargpt" else "data.source.max_items=400"
    cfg = cfg_factory("train", size, model=model)
    full = load_data(typed(cfg.data))
    ids = list(full.train["id"])
    removals = [[], ids[:5], ids[100:160], ids[::3]]  # different dataset sizes, incl. fewer batches
    seeds = [0, 1, 2, 3]
    members = [build_model(typed(cfg.model), full, s) for s in seeds]
    items = [np.array([i for i, x in enumerate(ids) if x not in set(r)]) for r in removals]
    pack = fit_pack(
        members,
        full.train,
        items,
        seeds,
        cfg.model.fit,
        cfg.trainer,
        tmp_path / "pack",
        record_seen=True,
    )
    for m, (removed, seed) in enumerate(zip(removals, seeds, strict=True)):
        solo, b = _solo(cfg, None, seed, tmp_path / f"solo{m}", removed)
        assert len(b.train) == len(items[m])
        assert len(members[m].loss_history) == len(solo.loss_history)
        assert _rel(solo.loss_history, members[m].loss_history) < 1e-4
        for key, value in solo.state_dict().items():
            torch.testing.assert_close(members[m].state_dict()[key], value, rtol=1e-3, atol=2e-4)
        # exactly its own items: every one seen, none removed
        assert pack.seen[m] == set(items[m].tolist())


def test_a_canary_excluded_from_one_member_never_reaches_its_batches(cfg_factory, tmp_path):
    """Two members with the same seed, one trained without the canary. The data are small and the
    fit long enough (54 items in 4 batches an epoch, 20 epochs) for the VAE to fit its training
    items (on 270 items x 2 epochs the canary's gap was 0.04 nats, smaller than the gaps of 28 other
    items)."""
    from influence_lab.training.batches import batch_of

    cfg = cfg_factory(
        "train", "data.source.max_items=60", "model.fit.max_epochs=20", "model.fit.batch_size=16"
    )
    full = load_data(typed(cfg.data))
    n = len(full.train)
    canary = 17
    items = [np.arange(n), np.array([i for i in range(n) if i != canary])]
    members = [build_model(typed(cfg.model), full, s) for s in (0, 0)]
    pack = fit_pack(
        members,
        full.train,
        items,
        [0, 0],
        typed(cfg.model.fit),
        typed(cfg.trainer),
        tmp_path,
        record_seen=True,
    )
    assert canary in pack.seen[0]
    assert canary not in pack.seen[1]
    assert pack.seen[1] == set(range(n)) - {canary}
    # the member without the canary fits it worse. Measured (negative ELBO of the canary, mean over
    # noise seeds 0..31): 25.45 with it, 27.14 without, a gap of 1.69 nats (positive for each of the
    # 32 seeds); the other 53 items' gaps have a median magnitude of 0.20 (8x smaller). Asserted: a
    # gap above 0.5 nats, and above 3x the others' median (it is the canary's absence, not a drift).
    batch = batch_of(full.train)
    with torch.no_grad():
        loss_with, loss_without = (
            torch.stack([m.example_loss(batch, s) for s in range(32)]).mean(0).numpy()
            for m in members
        )
    gap = loss_without - loss_with
    assert gap[canary] > 0.5, (loss_with[canary], loss_without[canary])
    assert gap[canary] > 3 * np.median(np.abs(np.delete(gap, canary))), gap


@pytest.mark.parametrize("model", ["chargpt"])
def test_unpackable_models_train_their_members_one_by_one(
    cfg_factory, tmp_path, capsys, monkeypatch, model
):
    """CharGPT packs only on an accelerator (on a CPU its pack is no faster than solo fits): on
    the CPU its members are fitted one by one, each exactly the model `influence-lab train` makes
    for its removal and seed."""
    from influence_lab.models.build import model_class
    from influence_lab.settings import from_config
    from influence_lab.training.members import packs

    cls = model_class(cfg_factory("train", model=model).model._target_, "model._target_")
    assert not packs(cls, from_config(cfg_factory("train", model=model)).trainer)
    gpu = from_config(cfg_factory("train", "trainer=gpu", model=model)).trainer
    assert packs(cls, gpu)
    from influence_lab.stages.train import train
    from influence_lab.training.members import train_members

    cfg = from_config(cfg_factory("train", model=model))
    bundle = load_data(cfg.data)
    ids = list(bundle.train["id"])
    members = [
        {"member_id": "a", "removed": ids[:5], "seed": 1},
        {"member_id": "b", "removed": [], "seed": 2},
    ]
    runs = train_members(cfg, bundle, members, tmp_path / "packs")
    assert "training 2 members one by one" in capsys.readouterr().err
    assert all(run.done for run in runs.values()) and not (tmp_path / "packs").exists()
    solo_cfg = cfg_factory(
        "train",
        f"paths.output_dir={tmp_path}/solo",
        f"data.exclude_ids=[{','.join(ids[:5])}]",
        "seed=1",
        model=model,
    )
    solo = train(solo_cfg)
    assert solo.path.name == runs["a"].path.name  # the same signature: any stage reuses it
    a = torch.load(runs["a"] / "weights.pt", weights_only=True)
    b = torch.load(solo / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("model", ["vae", "chargpt"])
def test_packed_loss_is_each_members_own_loss(cfg_factory, model):
    """A model's member-batched arithmetic (`packed_loss`, what its packs run instead of vmapping
    `loss`) gives every member's own `loss` on its own batch and noise: 3 members of different
    seeds, batches of different items, noise from each member's own generator."""
    from torch.func import stack_module_state

    from influence_lab.models.protocol import step_generator
    from influence_lab.training.batches import batch_of

    cfg = cfg_factory("train", model=model)
    bundle = load_data(typed(cfg.data))
    models = [build_model(typed(cfg.model), bundle, s) for s in (0, 1, 2)]
    if model == "chargpt":  # trained-looking weights: the caption tables start at zero
        for m in models:
            with torch.no_grad():
                m.caption_pos.normal_(0, 0.02)
    params, _ = stack_module_state(models)
    batches = [
        models[0].prepare(batch_of(bundle.train.select(range(i, i + 16)))) for i in (0, 16, 32)
    ]
    noises = [models[0].draw_noise(16, step_generator(s, 7)) for s in (0, 1, 2)]
    tensors = [k for k, v in batches[0].items() if isinstance(v, torch.Tensor)]
    stacked = {k: torch.stack([b[k] for b in batches]) for k in tensors}
    noise = {k: torch.stack([nz[k] for nz in noises]) for k in noises[0]}
    packed = models[0].packed_loss(params, stacked, noise)
    assert packed.shape == (3, 16)
    for m, (member, batch) in enumerate(zip(models, batches, strict=True)):
        torch.testing.assert_close(packed[m], member.loss(batch, noises[m]), rtol=1e-5, atol=1e-6)
