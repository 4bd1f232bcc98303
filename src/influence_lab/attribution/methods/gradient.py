"""The gradient methods: TracIn, TRAK and D-TRAK, on the projected per-example gradients of a
model output function (`gradients.py`, projected by `projectors.py`, cached by `feature_store.py`).
Every score is "higher = the item did more to make the model produce the target" (it lowers the
target's loss), the convention of the search methods.

- TracIn (Pruthi et al. 2020): sum over the training snapshots c of lr_c * <g_c(target), g_c(item)>.
- TRAK (Park et al. 2023): per ensemble model k, phi_k(target) (Phi_k^T Phi_k + lambda I)^-1 Phi_k^T
  with Phi_k the training items' projected gradients of the example loss; averaged over the
  ensemble (models trained on the full set with seeds seed, seed+1, ...). For these outputs
  (losses, not classification margins) the TRAK Q weighting is the identity.
- D-TRAK (Zheng et al. 2024): TRAK with the model's `dtrak` output function (the mean squared
  predicted noise) on both sides, over K = `dtrak_timesteps` evenly spaced timesteps with one
  noise draw per timestep shared by every example, projected by a dense Gaussian (`projector:
  auto`), as its authors run it (docs/gradients.md). Offered for every model class that declares
  the `dtrak` output (`GenerativeModel.output_functions`), whatever it is called.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import InfluenceLabError
from ...models.build import load_model
from ...models.protocol import NOISE_SEED
from ...store.files import read_json
from ...training.batches import batch_of, outputs_batch
from ..example_gradients import n_params, per_example_values, projected_gradients_many
from ..feature_store import Features, check_fits, train_features
from ..projectors import make_projector
from ..spectrum import Spectrum
from ..topk import top_scores_of
from .attributor import Attributor, ScoreTable, Targets, Traits, subset_sums


class GradientAttributor(Attributor):
    """A method on the projected gradients of one model output function (`output`)."""

    output = "measured"  # the model output function differentiated (GenerativeModel.forward)
    noise_seed = NOISE_SEED  # the fixed noise of the query gradients
    projector = "sparse"  # the projection `attribution.gradient.projector: auto` stands for

    def output_options(self) -> dict:
        """The output function's options to the model's `measure_noise` (and the feature key)."""
        return {}

    def projection(self) -> dict:
        cfg = self.context.attribution.gradient
        kind = self.projector if cfg.projector == "auto" else cfg.projector
        return {"projector": kind, "options": self.output_options()}

    def features(self, model, model_key: str, proj_seed: int, only: int | None = None) -> Features:
        """The projected gradients of every training item under `model` (cached); `only`: of
        that shard alone."""
        ctx, cfg = self.context, self.context.attribution.gradient
        return train_features(
            ctx.root,
            model,
            model_key,
            self.train_batch,
            ctx.bundle.fingerprint,
            self.output,
            cfg.proj_dim,
            proj_seed,
            **self.projection(),
            shard_size=cfg.shard_size,
            dtype=cfg.feature_dtype,
            only=only,
        )

    def queries(self, model, batches: list[dict], proj_seed: int) -> list[np.ndarray]:
        """The projected query gradients of each batch (one projector for all of them)."""
        cfg, options = self.context.attribution.gradient, self.projection()
        projector = make_projector(options["projector"], n_params(model), cfg.proj_dim, proj_seed)
        return projected_gradients_many(
            model, batches, projector, self.output, self.noise_seed, options=options["options"]
        )

    def target_rows(self, model, targets: Targets, proj_seed: int) -> np.ndarray:
        """(targets, dim) float64 projected query gradients of `targets` under `model`, the joint
        batch's rows or each group's summed (the scores are linear in them): what the streamed
        scores and the LDS's subset sums multiply the features by."""
        queries = self.queries(model, query_batches(targets), proj_seed)
        return np.asarray(per_target([q.astype(np.float64) for q in queries], targets))

    def bind(self, context) -> None:
        """What featurising and scoring share: the context, the training batch and the models
        whose features the method reads (`self.sources`: (model, weights key, projection
        seed) each), on the context's device (a GPU with trainer=gpu), no features yet."""
        super().prepare(context)
        self.train_batch = batch_of(context.bundle.train)
        self.sources = [(m.to(context.device), k, s) for m, k, s in self.feature_models()]
        self.models = [model for model, _, _ in self.sources]

    def prepare(self, context) -> None:
        self.context, cfg = context, context.attribution.gradient
        check_fits(  # before any model is trained or gradient computed
            self.name, len(context.bundle.train), cfg.proj_dim, self.models_held(), cfg.shard_size
        )
        self.bind(context)
        self.build([self.features(*source) for source in self.sources])

    def featurise(self, context, shard: int | None) -> list[Features]:
        """The features of every model the method reads (`shard`: of that shard alone), computed
        and cached, for scoring later: a job of `influence-lab featurise`."""
        self.bind(context)
        return [self.features(*source, only=shard) for source in self.sources]

    def models_held(self) -> int:
        """How many models' features this method holds at once."""
        return 1

    def feature_models(self) -> list[tuple]:
        """(model, weights key, projection seed) of each model whose features the method reads."""
        raise NotImplementedError

    def build(self, features: list[Features]) -> None:
        """What scoring needs from the features of `self.sources`, in order."""
        raise NotImplementedError

    def scores(self, targets: Targets) -> ScoreTable:
        return as_table(self.scores_many(query_batches(targets), None), targets)

    def scores_many(self, batches: list[dict], dampings: list[float] | None) -> list[np.ndarray]:
        raise NotImplementedError


def as_table(per_batch: list[np.ndarray], targets: Targets) -> ScoreTable:
    """The scores of `query_batches(targets)` as a table: the one joint batch's rows, or each
    target's group summed over its outputs."""
    return ScoreTable(per_target(per_batch, targets))


def per_target(per_batch: list[np.ndarray], targets: Targets):
    """Rows of `query_batches(targets)`' per-batch results, one per target: the joint batch's
    rows, or each group's summed over its outputs (the scores are linear in the query rows)."""
    if targets.joint:
        return per_batch[0]
    return [s.sum(-2) for s in per_batch]


def query_batches(targets: Targets) -> list[dict]:
    """The query batches of `targets`: one of every target (joint), or one per target's group
    (each scored with its own fixed noise and summed over its outputs)."""
    if targets.joint:
        outs = targets.outputs
        if isinstance(outs[0], list):
            return [outputs_batch([text for group in outs for text in group], targets.prompts)]
        return [outputs_batch(np.concatenate(outs), targets.prompts)]
    return [
        outputs_batch(outs, [p] * len(outs))
        for p, outs in zip(targets.prompts, targets.outputs, strict=True)
    ]


class TracIn(GradientAttributor):
    """TracIn over the model's training snapshots; a `SubsetSums` method (protocols.py)."""

    traits = Traits(family="gradient", needs=("snapshots",), auto=("lds",))

    def models_held(self) -> int:
        index = self.context.model_dir / "snapshots" / "index.json"
        return len(read_json(index)) if index.exists() else 1  # none: refused by feature_models

    def feature_models(self) -> list[tuple]:
        context = self.context
        folder = context.model_dir / "snapshots"
        if not (folder / "index.json").exists():
            raise InfluenceLabError(
                f"{self.name} needs the training snapshots of {context.model_dir}, which has none "
                f"(model.fit.snapshots was 0, or the model was trained in a pack); "
                f"retrain it with model.fit.snapshots=4 force=true."
            )
        self.snapshots = read_json(folder / "index.json")
        out = []
        for snap in self.snapshots:
            model = load_model(context.model_dir)
            model.load_state_dict(
                torch.load(folder / snap["file"], map_location="cpu", weights_only=True)
            )
            key = f"{context.model_signature}/{snap['file']}"
            out.append((model.eval(), key, context.attribution.gradient.proj_seed))
        return out

    def build(self, features: list[Features]) -> None:
        self.phis = features

    def scores(self, targets: Targets) -> ScoreTable:
        """Features in one piece: every item's score. Sharded: each target's top
        `attribution.keep` items only, the snapshots' terms summed block by block over the shards
        (attribution/topk.py), as TRAK's."""
        if all(len(phi.shards) == 1 for phi in self.phis):
            return super().scores(targets)
        keep = self.context.attribution.keep
        top = top_scores_of(
            self.terms(targets), keep, dtype=np.float64, desc=f"scores ({self.name})"
        )
        return ScoreTable(list(top.values), list(top.indices))

    def scores_many(self, batches, dampings=None):
        """Per batch: (examples, items) scores, the query gradients of all batches projected
        together."""
        totals = [0.0] * len(batches)
        seed = self.context.attribution.gradient.proj_seed
        for snap, model, phi in zip(self.snapshots, self.models, self.phis, strict=True):
            queries = [q.astype(np.float64) for q in self.queries(model, batches, seed)]
            for i, scores in enumerate(phi.times_many(queries)):
                totals[i] = totals[i] + float(snap["lr"]) * scores
        return [np.asarray(total) for total in totals]

    def subset_sums(self, targets, masks, dampings=None):
        """sum_c (masks Phi_c) (lr_c q_c)^T: each snapshot's features summed per subset, streamed
        over its shards (never the targets x items table)."""
        return sum(phi.sums_over(masks) @ rows.T for rows, phi in self.terms(targets))

    def terms(self, targets: Targets) -> list[tuple[np.ndarray, Features]]:
        """Per snapshot c, (lr_c q_c, Phi_c): the scores are sum_c lr_c q_c Phi_c^T."""
        seed = self.context.attribution.gradient.proj_seed
        return [
            (float(snap["lr"]) * self.target_rows(model, targets, seed), phi)
            for snap, model, phi in zip(self.snapshots, self.models, self.phis, strict=True)
        ]


class Trak(GradientAttributor):
    """TRAK over the first `ensemble` models (attribution.gradient.ensemble, or the context's);
    a `DampingGrid`, `SubsetSums` and `PerModel` method (protocols.py).

    Each model's kernel is diagonalised once, so that scores for any damping (a grid of them, when
    the LDS stage chooses one) cost a matrix product each instead of a new solve. In the dual form
    when the projection is wider than the training set: (Phi^T Phi + l I)^-1 Phi^T =
    Phi^T (Phi Phi^T + l I)^-1, both sides with the same nonzero eigenvalues."""

    traits = Traits(family="gradient", needs=("ensemble",), auto=("lds",))

    def models_held(self) -> int:
        return self.context.ensemble_size or self.context.attribution.gradient.ensemble

    def feature_models(self) -> list[tuple]:
        context, cfg = self.context, self.context.attribution.gradient
        size = context.ensemble_size or cfg.ensemble
        runs = context.ensemble_runs(size)
        if size > len(runs):
            raise InfluenceLabError(
                f"{self.name} asks for {size} ensemble models but {len(runs)} were trained."
            )
        return [
            (load_model(path), sig, cfg.proj_seed + k) for k, (path, sig) in enumerate(runs[:size])
        ]

    def build(self, features: list[Features]) -> None:
        cfg = self.context.attribution.gradient
        self.damping = self.context.dampings.get(self.name, cfg.damping)
        self.spectra = [Spectrum(phi) for phi in features]

    def per_model_batches(self, batches, dampings):
        """Per ensemble model, per batch: scores (examples, items), or (dampings, examples,
        items) when `dampings` (relative to each kernel's mean diagonal) are given; the query
        gradients of all batches projected together (a dense projection is drawn once per model,
        not once per batch)."""
        seed = self.context.attribution.gradient.proj_seed
        grid = [self.damping] if dampings is None else list(dampings)
        out = []
        for k, (model, spectrum) in enumerate(zip(self.models, self.spectra, strict=True)):
            per_batch = []
            for query in self.queries(model, batches, seed + k):
                q = query.astype(np.float64)  # once, for every damping of the grid
                scores = np.stack([spectrum.scores(q, d) for d in grid])
                per_batch.append(scores[0] if dampings is None else scores)
            out.append(per_batch)
        return out

    def damped_scores(self, targets: Targets, dampings: list[float]) -> ScoreTable:
        """(dampings, targets, items) scores at each damping of the grid (`DampingGrid`)."""
        return as_table(self.scores_many(query_batches(targets), list(dampings)), targets)

    def scores(self, targets: Targets) -> ScoreTable:
        """Features in one piece: every item's score. Sharded features: each target's top
        `attribution.keep` items only, the ensemble's scores summed block by block over the
        shards (attribution/topk.py), so the targets x items table is never held; the rows the
        attribute stage keeps are the same (tests/test_sharded_features.py)."""
        if not all(s.streamed for s in self.spectra):
            return super().scores(targets)
        seed, size = self.context.attribution.gradient.proj_seed, len(self.models)
        terms = []
        for k, (model, spectrum) in enumerate(zip(self.models, self.spectra, strict=True)):
            rows = self.target_rows(model, targets, seed + k)
            terms.append((spectrum.left_of(rows, self.damping) / size, spectrum.phi))
        keep = self.context.attribution.keep
        top = top_scores_of(terms, keep, dtype=np.float64, desc=f"scores ({self.name})")
        return ScoreTable(list(top.values), list(top.indices))

    def scores_many(self, batches, dampings=None):
        """Per batch: the ensemble's mean scores."""
        per_model = self.per_model_batches(batches, dampings)
        return [np.mean([each[i] for each in per_model], axis=0) for i in range(len(batches))]

    def per_model(self, targets: Targets, dampings: list[float] | None = None) -> list[ScoreTable]:
        """Per ensemble model: its scores alone (joint targets: (targets, items), or (dampings,
        targets, items))."""
        per_model = self.per_model_batches(query_batches(targets), dampings)
        return [as_table(per_batch, targets) for per_batch in per_model]

    def per_model_subset_sums(self, targets, masks, dampings=None):
        """Per ensemble model: (masks Phi U) diag(1/(s+l)) (q U)^T, (subsets, targets) or
        (dampings, subsets, targets); the features are read once per model, to sum them per
        subset, and the targets x items table is never held."""
        seed = self.context.attribution.gradient.proj_seed
        grid = [self.damping] if dampings is None else list(dampings)
        out = []
        for k, (model, spectrum) in enumerate(zip(self.models, self.spectra, strict=True)):
            rows = self.target_rows(model, targets, seed + k)
            sums = np.stack(spectrum.subset_sums(masks, rows, grid))
            out.append(sums[0] if dampings is None else sums)
        return out

    def subset_sums(self, targets, masks, dampings=None):
        """The ensemble's mean of `per_model_subset_sums` (the sums are linear in the scores)."""
        return np.mean(self.per_model_subset_sums(targets, masks, dampings), axis=0)


class DTrak(Trak):
    output = "dtrak"
    projector = "normal"
    traits = Traits(family="gradient", needs=("ensemble", "output:dtrak"), auto=("lds",))

    @classmethod
    def check(cls, settings, model_cls, option):
        k = settings.attribution.gradient.dtrak_timesteps
        steps = getattr(settings.model, "timesteps", None)
        if steps is not None and k > steps:
            return (
                f"attribution.gradient.dtrak_timesteps is {k} but model.timesteps is {steps}; "
                f"D-TRAK's timesteps are the model's, so it must be at most {steps}."
            )
        return None

    def output_options(self) -> dict:
        return {"dtrak_timesteps": self.context.attribution.gradient.dtrak_timesteps}


class DAS(DTrak):
    """The Diffusion Attribution Score (Lin et al., ICLR 2025): how far the target's output (the
    predicted noise, `output_das`) moves when item i is removed, linearised with a Gauss-Newton
    step. Removing i moves the weights by (Phi^T Phi + lambda I)^-1 phi_i r_i (r_i: the residual of
    i's output, `das_residual`), which moves the target's output by phi(z)^T of that; the score is
    its square (DAS is a distance between outputs), summed over the target's outputs and averaged
    over the ensemble. D-TRAK's timesteps, noise and dense projection; its damping grid in the LDS.
    Squares are not linear in the features, so scores are dense (never streamed over shards)."""

    output = "das"
    traits = Traits(family="gradient", needs=("ensemble", "output:das"), auto=())

    def build(self, features: list[Features]) -> None:
        super().build(features)
        self.residuals = [self.residual(model) for model in self.models]

    def residual(self, model) -> np.ndarray:
        """(items,) each training item's `das_residual` under `model`, with the features' noise."""
        n = len(self.train_batch["caption"])
        noise = model.measure_noise(n, self.noise_seed, **self.output_options())
        prepared = model.prepare(self.train_batch)
        return per_example_values(model, model.das_residual, prepared, noise).double().cpu().numpy()

    def per_model_batches(self, batches, dampings):
        """Trak's linear scores phi(z)^T (...)^-1 phi_i per example, times r_i, squared."""
        linear = super().per_model_batches(batches, dampings)
        return [
            [(scores * r) ** 2 for scores in per_batch]
            for per_batch, r in zip(linear, self.residuals, strict=True)
        ]

    def scores(self, targets: Targets) -> ScoreTable:
        return GradientAttributor.scores(self, targets)

    def per_model_subset_sums(self, targets, masks, dampings=None):
        n = masks.shape[1]
        return [subset_sums(masks, table.dense(n)) for table in self.per_model(targets, dampings)]
