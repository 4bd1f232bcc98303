"""Gradient attributors: TracIn, TRAK and D-TRAK, on the projected per-example gradients of
`per_example`. Every score is "higher = the item did more to make the model produce the
target" (it lowers the target's loss), the convention of the search scorers.

- TracIn (Pruthi et al. 2020): sum over the training snapshots c of lr_c * <g_c(target), g_c(item)>.
- TRAK (Park et al. 2023): per ensemble model k, phi_k(target) (Phi_k^T Phi_k + lambda I)^-1 Phi_k^T
  with Phi_k the training items' projected gradients of the example loss; averaged over the
  ensemble (models trained on the full set with seeds seed, seed+1, ...). For these outputs
  (losses, not classification margins) the TRAK Q weighting is the identity.
- D-TRAK (Zheng et al. 2024): TRAK with the mean squared predicted noise as the output function on
  both sides, over K = `dtrak_timesteps` evenly spaced timesteps with one noise draw per timestep
  shared by every example, projected by a dense Gaussian (`projector: auto`), as its authors run it
  (docs/gradients.md). Diffusion only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InfluenceLabError
from ..models.build import load_model
from ..settings import section
from ..settings.attribution import GRADIENT_METHODS, GradientSettings, projector_kind
from ..settings.stage import check_gradient_method
from ..store.files import read_json
from .per_example import make_projector, n_params, projected_gradients_many, train_features

__all__ = [
    "GRADIENT_METHODS",
    "TRAK_OUTPUTS",
    "GradientSetup",
    "TracIn",
    "Trak",
    "build_attributor",
    "check_gradient_method",
]

TRAK_OUTPUTS = {"trak": "measured", "dtrak": "dtrak"}  # the output function of each TRAK variant


@dataclass
class GradientSetup:
    """What a gradient attributor needs: the trained model(s) and the training items."""

    cfg: GradientSettings  # attribution.gradient
    root: Path  # output dir (feature cache)
    model_dir: Path  # the attributed model's train result
    model_signature: str
    ensemble: list[tuple[Path, str]]  # (train result, signature) of the TRAK ensemble, model first
    train_batch: dict
    fingerprint: str

    def __post_init__(self):
        self.cfg = section(GradientSettings, self.cfg, "attribution.gradient")


def _projection(cfg: GradientSettings, output: str) -> dict:
    """The projection and output options of `train_features` for a method's output function."""
    method = "dtrak" if output == "dtrak" else "trak"
    return {
        "projector": projector_kind(cfg.projector, method),
        "dtrak_timesteps": cfg.dtrak_timesteps if output == "dtrak" else None,
    }


def _target_features(
    model, batches: list[dict], output: str, cfg: GradientSettings, seed: int, noise_seed: int
) -> list[np.ndarray]:
    """The projected query gradients of each batch (one projector for all of them)."""
    options = _projection(cfg, output)
    projector = make_projector(options["projector"], n_params(model), cfg.proj_dim, seed)
    return projected_gradients_many(
        model,
        batches,
        projector,
        output,
        noise_seed,
        dtrak_timesteps=options["dtrak_timesteps"],
    )


class TracIn:
    def __init__(self, setup: GradientSetup):
        folder = setup.model_dir / "snapshots"
        if not (folder / "index.json").exists():
            raise InfluenceLabError(
                f"tracin needs the training snapshots of {setup.model_dir}, which has none "
                f"(model.fit.snapshots was 0, or the model was trained in a pack); "
                f"retrain it with model.fit.snapshots=4 force=true."
            )
        self.setup, self.snapshots = setup, read_json(folder / "index.json")
        self.models, self.features = [], []
        cfg = setup.cfg
        for snap in self.snapshots:
            model = load_model(setup.model_dir)
            model.load_state_dict(
                torch.load(folder / snap["file"], map_location="cpu", weights_only=True)
            )
            self.models.append(model.eval())
            self.features.append(
                train_features(
                    setup.root,
                    model,
                    f"{setup.model_signature}/{snap['file']}",
                    setup.train_batch,
                    setup.fingerprint,
                    "measured",
                    cfg.proj_dim,
                    cfg.proj_seed,
                    **_projection(cfg, "measured"),
                )
            )

    def scores(self, batch: dict, noise_seed: int = 0) -> np.ndarray:
        return self.scores_many([batch], noise_seed)[0]

    def scores_many(self, batches: list[dict], noise_seed: int = 0) -> list[np.ndarray]:
        """`scores` of each batch, the query gradients of all batches projected together."""
        totals = [0.0] * len(batches)
        for snap, model, phi in zip(self.snapshots, self.models, self.features, strict=True):
            queries = _target_features(
                model, batches, "measured", self.setup.cfg, self.setup.cfg.proj_seed, noise_seed
            )
            phi_t = phi.T.astype(np.float64)
            for i, q in enumerate(queries):
                totals[i] = totals[i] + float(snap["lr"]) * (q.astype(np.float64) @ phi_t)
        return [np.asarray(total) for total in totals]


class Trak:
    """TRAK (output = "measured") or D-TRAK (output = "dtrak") over the first `ensemble` models.

    Each model's kernel is diagonalised once, so that scores for any damping (a grid of them, when
    the LDS stage chooses one) cost a matrix product each instead of a new solve. In the dual form
    when the projection is wider than the training set: (Phi^T Phi + l I)^-1 Phi^T =
    Phi^T (Phi Phi^T + l I)^-1, both sides with the same nonzero eigenvalues."""

    def __init__(self, setup: GradientSetup, output: str = "measured", ensemble: int | None = None):
        cfg = setup.cfg
        self.setup, self.output = setup, output
        size = ensemble or cfg.ensemble
        if size > len(setup.ensemble):
            raise InfluenceLabError(
                f"TRAK asks for {size} ensemble models but {len(setup.ensemble)} were trained."
            )
        self.models, self.spectra = [], []
        for k, (path, sig) in enumerate(setup.ensemble[:size]):
            model = load_model(path)
            phi = train_features(
                setup.root,
                model,
                sig,
                setup.train_batch,
                setup.fingerprint,
                output,
                cfg.proj_dim,
                cfg.proj_seed + k,
                **_projection(cfg, output),
            ).astype(np.float64)
            self.spectra.append(_Spectrum(phi))
            self.models.append(model)

    def per_model_scores(
        self, batch: dict, noise_seed: int = 0, dampings: list[float] | None = None
    ) -> list[np.ndarray]:
        """Per ensemble model: scores (targets, items), or (dampings, targets, items) when
        `dampings` (relative to each kernel's mean diagonal) are given."""
        return [each[0] for each in self._per_model_many([batch], noise_seed, dampings)]

    def _per_model_many(
        self, batches: list[dict], noise_seed: int, dampings: list[float] | None
    ) -> list[list[np.ndarray]]:
        """Per ensemble model, per batch: `per_model_scores`, the query gradients of all batches
        projected together (a dense projection is drawn once per model, not once per batch)."""
        cfg = self.setup.cfg
        grid = [cfg.damping] if dampings is None else list(dampings)
        out = []
        for k, (model, spectrum) in enumerate(zip(self.models, self.spectra, strict=True)):
            queries = _target_features(
                model, batches, self.output, cfg, cfg.proj_seed + k, noise_seed
            )
            per_batch = []
            for query in queries:
                q = query.astype(np.float64)  # once, for every damping of the grid
                scores = np.stack([spectrum.scores(q, d) for d in grid])
                per_batch.append(scores[0] if dampings is None else scores)
            out.append(per_batch)
        return out

    def scores(
        self, batch: dict, noise_seed: int = 0, dampings: list[float] | None = None
    ) -> np.ndarray:
        return self.scores_many([batch], noise_seed, dampings)[0]

    def scores_many(
        self, batches: list[dict], noise_seed: int = 0, dampings: list[float] | None = None
    ) -> list[np.ndarray]:
        """`scores` of each batch (the ensemble's mean), projected together per model."""
        per_model = self._per_model_many(batches, noise_seed, dampings)
        return [np.mean([each[i] for each in per_model], axis=0) for i in range(len(batches))]


class _Spectrum:
    """One model's kernel Phi^T Phi diagonalised (or its dual Phi Phi^T, whichever is smaller)."""

    def __init__(self, phi: np.ndarray):
        n, d = phi.shape
        self.dual = d > n
        gram = phi @ phi.T if self.dual else phi.T @ phi
        self.scale = float(np.trace(gram)) / d  # the mean diagonal of Phi^T Phi, either way
        self.eigenvalues, vectors = np.linalg.eigh(gram)
        self.vectors = vectors
        # dual: scores = (q Phi^T V) diag(1/(s+l)) V^T ; primal: (q U) diag(1/(s+l)) U^T Phi^T
        self.right = vectors.T if self.dual else vectors.T @ phi.T  # (r, n)
        self.left = phi.T @ vectors if self.dual else vectors  # (d, r)

    def scores(self, q: np.ndarray, damping: float) -> np.ndarray:
        """q (targets, d) -> scores (targets, items) at lambda = damping x the mean diagonal."""
        weights = 1.0 / (np.clip(self.eigenvalues, 0.0, None) + damping * self.scale)
        return ((q @ self.left) * weights) @ self.right


def build_attributor(method: str, setup: GradientSetup):
    if method == "tracin":
        return TracIn(setup)
    if method in TRAK_OUTPUTS:
        return Trak(setup, TRAK_OUTPUTS[method])
    raise InfluenceLabError(
        f"unknown gradient method '{method}'; allowed: {', '.join(GRADIENT_METHODS)}."
    )
