"""K-FAC and EK-FAC influence functions (`kfac`, `ekfac`) through kronfluence (Grosse et al. 2023;
pomonam/kronfluence), the curvature Mlodozeniec et al. (ICLR 2025) fit for diffusion models.

The wrapper adds nothing to kronfluence's computation: the model's measured loss is kronfluence's
`Task` (its training loss and its measurement, each summed over a batch), every example carries its
fixed noise (`measure_noise`, row by example, as the gradient methods' features and queries), and
the score of item i for a target is kronfluence's pairwise score g_target^T H^-1 g_i with H its
K-FAC or EK-FAC approximation of the Fisher of the measured loss over the training set (the GGN
where the model draws its loss's targets, `sampled_measured_loss`; else the empirical Fisher)
("higher = the item lowers the target's loss", the convention of every method here; a target's
group of outputs is summed). Only the `nn.Linear` and `nn.Conv2d` layers that train are tracked
(kronfluence's supported modules; frozen parts have no gradient); embeddings and norms are not.
`tests/test_kronecker.py` checks the scores against kronfluence used directly on the same model
and data.

The factors are fitted once per model and cached under `<root>/kronecker/`; scoring reads them.
Cost: the attribute stage prints the factor fit once and the time per target.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...console import console
from ...errors import InfluenceLabError
from ...models.build import load_model
from ...models.protocol import NOISE_SEED
from ...store.files import RunDir
from ...store.signature import signature
from ...training.batches import batch_of
from .attributor import Attributor, ScoreTable, Targets, Traits
from .gradient import per_target, query_batches

NOISE = "noise."  # prefix of the fixed-noise entries of an example


class ExampleRows(Dataset):
    """The rows of a prepared batch, each with its fixed noise (`NOISE`-prefixed keys)."""

    def __init__(self, model, batch: dict, noise_seed: int = NOISE_SEED):
        prepared = model.prepare(batch)
        n = len(prepared["caption"])
        self.tensors = {k: v for k, v in prepared.items() if isinstance(v, torch.Tensor)}
        noise = model.measure_noise(n, noise_seed)
        self.tensors.update({NOISE + k: v.contiguous() for k, v in noise.items()})
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.tensors.items()}


def measured(model, rows: dict, sample: bool = False) -> torch.Tensor:
    """The summed measured loss of a collated batch of `ExampleRows`; `sample`: with targets drawn
    from the model (`sampled_measured_loss`, for the models that define it)."""
    batch = {k: v for k, v in rows.items() if not k.startswith(NOISE)}
    noise = {k[len(NOISE) :]: v for k, v in rows.items() if k.startswith(NOISE)}
    loss = model.sampled_measured_loss if sample else model.measured_loss
    return loss(batch, noise).sum()


def samples_targets(model) -> bool:
    """Whether the model can draw its loss's targets from itself (then the factors fit the true
    Fisher, the GGN; else the empirical Fisher of the measured loss)."""
    return callable(getattr(model, "sampled_measured_loss", None))


def trained_layers(model) -> list[str]:
    """The `nn.Linear` and `nn.Conv2d` layers (kronfluence's supported modules) whose weights
    train: not the parts a model holds frozen (DALL-E's tokenizer, the latent DDPM's autoencoder,
    their weights buffers), which have no gradient to fit factors to."""
    kinds = (torch.nn.Linear, torch.nn.Conv2d)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, kinds)
        and any(p.requires_grad for p in module.parameters(recurse=False))
    ]


def measured_loss_task(model):
    """A kronfluence Task whose training loss and measurement are the model's measured loss, over
    the model's trained layers."""
    from kronfluence.task import Task

    layers = trained_layers(model)

    class MeasuredLoss(Task):
        def compute_train_loss(self, batch, model, sample: bool = False) -> torch.Tensor:
            return measured(model, batch, sample)

        def compute_measurement(self, batch, model) -> torch.Tensor:
            return measured(model, batch)

        def get_influence_tracked_modules(self):
            return layers

    return MeasuredLoss()


def analyzer_for(model, output_dir: Path, name: str):
    """`model` prepared for kronfluence (in place) and its Analyzer writing under `output_dir`."""
    from kronfluence.analyzer import Analyzer, prepare_model

    task = measured_loss_task(model)
    model = prepare_model(model.eval(), task)
    return Analyzer(
        analysis_name=name,
        model=model,
        task=task,
        cpu=True,
        log_level=logging.WARNING,
        disable_tqdm=True,
        output_dir=str(output_dir),
    )


class EKFAC(Attributor):
    """EK-FAC influence (kronfluence's `ekfac` strategy) on the measured loss."""

    strategy = "ekfac"
    traits = Traits(family="gradient")
    batch_size = 64  # examples per kronfluence batch (factors and scores)

    def prepare(self, context) -> None:
        super().prepare(context)
        try:
            import kronfluence  # noqa: F401
        except ImportError as exc:
            raise InfluenceLabError(
                f"{self.name} needs kronfluence, which is not importable here ({exc}); run "
                "`make setup` (it installs kronfluence 1.0.1)."
            ) from None
        self.model = load_model(context.model_dir)
        self.model.eval()
        self.train = ExampleRows(self.model, batch_of(context.bundle.train))
        self.empirical = not samples_targets(self.model)
        fisher = "empirical" if self.empirical else "ggn"
        sig = signature(context.model_signature, context.bundle.fingerprint, NOISE_SEED, fisher)
        self.run = RunDir(context.root, "kronecker", f"{self.strategy}-{context.bundle.name}", sig)
        self.run.compute_once(lambda: None, self.fit_factors)

    def fit_factors(self) -> None:
        from kronfluence.arguments import FactorArguments

        start = time.perf_counter()
        empirical = self.empirical
        analyzer = analyzer_for(self.model, self.run.path, self.strategy)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(NOISE_SEED)  # the sampled targets: the same factors on every run
            analyzer.fit_all_factors(
                factors_name=self.strategy,
                dataset=self.train,
                per_device_batch_size=self.batch_size,
                factor_args=FactorArguments(strategy=self.strategy, use_empirical_fisher=empirical),
                overwrite_output_dir=True,
            )
        console.print(
            f"{self.name}: {self.strategy} factors ({'empirical Fisher' if empirical else 'GGN'}) "
            f"of {len(self.train):,} items in {time.perf_counter() - start:.0f} s",
            highlight=False,
        )

    def pairwise(self, query: Dataset) -> np.ndarray:
        """kronfluence's (queries, items) pairwise scores, read from the cached factors (linked
        into a scratch folder: the cached result is never written to again)."""
        with tempfile.TemporaryDirectory() as scratch:
            factors = Path(scratch, self.strategy, f"factors_{self.strategy}")
            factors.parent.mkdir(parents=True)
            factors.symlink_to(self.run.path / self.strategy / f"factors_{self.strategy}")
            analyzer = analyzer_for(
                load_model(self.context.model_dir), Path(scratch), self.strategy
            )
            analyzer.compute_pairwise_scores(
                scores_name="scores",
                factors_name=self.strategy,
                query_dataset=query,
                train_dataset=self.train,
                per_device_query_batch_size=self.batch_size,
                per_device_train_batch_size=self.batch_size * 4,
                overwrite_output_dir=True,
            )
            return analyzer.load_pairwise_scores("scores")["all_modules"].double().numpy()

    def scores(self, targets: Targets) -> ScoreTable:
        if not len(targets):
            return ScoreTable(np.zeros((0, len(self.train))))
        start = time.perf_counter()
        batches = query_batches(targets)
        rows = [ExampleRows(self.model, batch) for batch in batches]
        query = torch.utils.data.ConcatDataset(rows)
        scores = self.pairwise(query)
        per_batch = np.split(scores, np.cumsum([len(r) for r in rows])[:-1])
        table = per_target(per_batch, targets)
        console.print(
            f"{self.name}: {(time.perf_counter() - start) / len(targets):.2f} s per target "
            f"({len(self.train):,} training items)",
            highlight=False,
        )
        return ScoreTable(np.asarray(table) if targets.joint else np.stack(table))


class KFAC(EKFAC):
    """K-FAC influence (kronfluence's `kfac` strategy): EK-FAC without the eigenvalue correction."""

    strategy = "kfac"
