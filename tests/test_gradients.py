"""Gradient attributors: per-example gradients, the projection, TracIn/TRAK/D-TRAK in
`attribute`."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from influence_lab.attribution.example_gradients import (
    n_params,
    per_example_gradients,
    projected_gradients,
    projected_gradients_many,
)
from influence_lab.attribution.methods import Targets, registry
from influence_lab.attribution.preparation import context_for, prepared
from influence_lab.attribution.projectors import NormalProjector, SparseProjector
from influence_lab.data import load_data
from influence_lab.entry.stage_entry import settings_of
from influence_lab.models.build import build_model
from influence_lab.stages import attribute as attribute_stage
from influence_lab.stages.attribute import attribute
from influence_lab.store.records import GenerateProvenance, load_outputs
from influence_lab.training.batches import batch_of
from tests.conftest import accept_edits, typed

SMALL = [
    "data.source.max_items=200",
    "generate.m=2",
    "embedders.autoencoder.epochs=2",
    "attribution.keep=20",
    "attribution.gradient.ensemble=2",
    "attribution.gradient.proj_dim=256",
    "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, bold\\, upright]",
]


@pytest.mark.parametrize("model", ["vae", "ddpm", "ldm", "chargpt"])
def test_per_example_gradients_equal_autograd_one_example_at_a_time(cfg_factory, model):
    cfg = cfg_factory("train", model=model)
    bundle = load_data(typed(cfg.data))
    net = build_model(typed(cfg.model), bundle, 0).eval()
    rows = batch_of(bundle.train.select(range(5)))
    outputs = ["measured", "dtrak", "das"] if model in ("ddpm", "ldm") else ["measured"]
    for output in outputs:
        grads = torch.cat(list(per_example_gradients(net, rows, output, noise_seed=3, chunk=2)))
        assert grads.shape == (5, n_params(net))
        prepared = net.prepare(rows)
        noise = net.measure_noise(5, 3)
        for i in range(5):
            net.zero_grad()
            one = {k: v[i : i + 1] for k, v in prepared.items()}
            net(one, {k: v[i : i + 1] for k, v in noise.items()}, output=output).sum().backward()
            ref = torch.cat(
                [
                    p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                    for p in net.parameters()
                ]
            )
            assert torch.linalg.norm(grads[i] - ref) <= 1e-5 * torch.linalg.norm(ref), (output, i)


class CountingProjector:
    """A projector that records the rows of each call (a dense one redraws its matrix per call)."""

    def __init__(self, inner, batch_rows: int):
        self.inner, self.batch_rows, self.calls = inner, batch_rows, []

    def __call__(self, g):
        self.calls.append(len(g))
        return self.inner(g)


def test_batches_projected_together_equal_each_batch_alone(cfg_factory):
    """The query gradients of several prompts share the dense projection's calls: calls that span
    batches give each batch what it gets alone, under its own fixed noise."""
    cfg = cfg_factory("train", model="ddpm")
    bundle = load_data(typed(cfg.data))
    net = build_model(typed(cfg.model), bundle, 0).eval()
    batches = [batch_of(bundle.train.select(range(a, b))) for a, b in ((0, 5), (5, 7), (7, 15))]
    for output in ("dtrak", "measured"):
        projector = CountingProjector(NormalProjector(n_params(net), 64, 3), batch_rows=4)
        together = projected_gradients_many(net, batches, projector, output, 0)
        assert projector.calls == [5, 10]  # rows 0-4 (first batch), then the other two at once
        assert [len(t) for t in together] == [5, 2, 8]
        for batch, joint in zip(batches, together, strict=True):
            alone = projected_gradients(
                net, batch, NormalProjector(n_params(net), 64, 3), output, 0
            )
            np.testing.assert_allclose(joint, alone, rtol=1e-4, atol=1e-6)


def test_measured_loss_is_example_loss(cfg_factory):
    """example_loss = measured_loss under measure_noise: the function the gradients
    differentiate."""
    cfg = cfg_factory("train", model="ddpm")
    bundle = load_data(typed(cfg.data))
    net = build_model(typed(cfg.model), bundle, 0).eval()
    rows = batch_of(bundle.train.select(range(4)))
    direct = net.measured_loss(net.prepare(rows), net.measure_noise(4, 7))
    assert torch.allclose(direct, net.example_loss(rows, 7))


def test_sparse_projection_preserves_inner_products():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(40, 20000)), dtype=torch.float32)
    proj = SparseProjector(20000, 2048, seed=1)
    px = proj(x)
    exact = x @ x.T
    approx = px @ px.T
    norms = torch.diag(approx) / torch.diag(exact)
    assert torch.allclose(norms, torch.ones(40), atol=0.12)  # JL: |ratio - 1| ~ sqrt(2/2048)
    off = ~torch.eye(40, dtype=torch.bool)
    assert float((approx - exact)[off].abs().max()) < 0.12 * float(torch.diag(exact).mean())
    assert torch.equal(px, SparseProjector(20000, 2048, seed=1)(x))  # deterministic in its seed


@pytest.mark.slow
def test_attribute_runs_tracin_trak_dtrak_beside_search(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "attribute", *SMALL, "attribution.methods=[raw_only,tracin,trak,dtrak]", model="ddpm"
    )
    run = attribute(cfg)
    table = pd.read_parquet(run / "attribution.parquet")
    assert set(table.method) == {"raw_only", "tracin", "trak", "dtrak"}
    assert table.groupby(["target", "method"]).size().eq(20).all()
    assert np.isfinite(table["score"]).all() and table["raw_cosine"].notna().all()
    for method in ("tracin", "trak", "dtrak"):
        assert table[table.method == method]["score"].std() > 0
    assert len(sorted((run / "neighbours").glob("*.png"))) == 2 * 4
    # training snapshots at 4 evenly spaced epochs of 3: epochs 1, 2 and 3
    # (1 and 2 from 0.75, 1.5, 2.25)
    model_dir = json.loads((run / "provenance.json").read_text())["generate_dir"]
    snapshots = json.loads(
        (
            Path(json.loads((Path(model_dir) / "provenance.json").read_text())["model_dir"])
            / "snapshots"
            / "index.json"
        ).read_text()
    )
    assert [s["epoch"] for s in snapshots] == [1, 2, 3] and all(s["lr"] > 0 for s in snapshots)
    # features are cached by signature: 3 snapshots (tracin) + 2 models x (measured, dtrak)
    assert len(list((tmp_path / "features").iterdir())) == 3 + 2 * 2
    # the TRAK ensemble: the attributed model and one more, trained as a pack
    assert len(list((tmp_path / "train").iterdir())) == 2
    # the stage scores every prompt at once; each prompt's scores equal a call for it alone
    settings = settings_of(cfg)
    bundle = load_data(settings.data)
    generated = GenerateProvenance.read(Path(model_dir))
    context = context_for(settings, bundle, generated.model_dir, generated.model_signature)
    attributors = prepared(
        registry.methods_named(["tracin", "trak", "dtrak"], settings.attribution), context
    )
    prompts, outputs, _ = load_outputs(Path(model_dir))
    ids = pd.Index(bundle.train["id"])
    for method, attributor in attributors.items():
        for t, (prompt, outs) in enumerate(zip(prompts, outputs, strict=True)):
            rows = table[(table.method == method) & (table.target == t)]
            alone = attributor.scores(Targets([prompt], [outs])).values[0]
            alone = alone[ids.get_indexer(rows.id)]
            np.testing.assert_allclose(rows.score, alone, rtol=1e-4, err_msg=method)


def test_trak_ranks_a_planted_copy_first(cfg_factory, tmp_path):
    """Outputs that are training items themselves, under their own captions: TRAK puts the item in
    its top 3. TracIn only in its top 20 of 180: its raw gradient products favour items with large
    gradient norms everywhere (the "dominating norm" effect of Xie et al. 2024)."""
    from influence_lab.stages.generate import generate

    planted = [3, 117]
    bundle = load_data(typed(cfg_factory("train", "data.source.max_items=200").data))
    captions = [bundle.train[i]["caption"].replace(",", "\\,") for i in planted]
    cfg = cfg_factory(
        "attribute",
        *SMALL,
        "attribution.methods=[tracin,trak]",
        f"generate.prompts=[{','.join(captions)}]",
    )
    gen = generate(cfg)
    images = np.load(gen / "images.npy")
    table = pd.read_parquet(gen / "outputs.parquet")
    for t, i in enumerate(planted):
        rows = table.index[table.prompt_index == t].to_numpy()
        images[rows] = np.asarray(bundle.train[i]["image"], dtype=np.float32)
    np.save(gen / "images.npy", images)
    accept_edits(gen)
    ranking = pd.read_parquet(attribute(cfg) / "attribution.parquet")
    for method, top in (("trak", 3), ("tracin", 20)):
        for t, i in enumerate(planted):
            best = ranking[
                (ranking.method == method) & (ranking.target == t) & (ranking["rank"] <= top)
            ]
            assert bundle.train[i]["id"] in set(best.id), (method, t)


def test_dtrak_needs_a_diffusion_model(cfg_factory, capsys):
    with pytest.raises(SystemExit):
        attribute_stage.run(cfg_factory("attribute", *SMALL, "attribution.methods=[dtrak]"))
    assert (
        "attribution.methods has dtrak, which needs the model output function 'dtrak', which "
        "VAE (model=vae) does not declare" in " ".join(capsys.readouterr().err.split())
    )


def test_tracin_needs_training_snapshots(cfg_factory, capsys):
    with pytest.raises(SystemExit):
        attribute_stage.run(
            cfg_factory(
                "attribute", *SMALL, "model.fit.snapshots=0", "attribution.methods=[tracin]"
            )
        )
    assert "tracin needs the training snapshots of" in capsys.readouterr().err
