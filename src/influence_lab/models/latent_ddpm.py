"""A latent DDPM: the caption-conditioned diffusion of `ddpm.py`, run in the 16-d latent space of a
small frozen VAE instead of on pixels (the recipe of Stable Diffusion, at toy scale).

Why: on a CPU, an MLP denoiser on 784 pixels learns only noise at 28x28 in minutes, while the same
denoiser on 16 normalised latents learns recognisable Fashion-MNIST classes (docs/data-and-models.md
has the measured numbers). The autoencoder is trained once, on every item of the dataset's pool
(`bundle.full`, a fixed seed), by `fit_frozen` when `build_model` makes the model; it is then
frozen: its weights are stored as persistent buffers (not parameters), so the denoiser's optimiser,
packs (which stack parameters only) and gradient attributors (which differentiate parameters only)
never see it, and `weights.pt` carries it, so `load_model` needs no data. Counterfactual retrains
remove items from the denoiser's training set, not from the autoencoder's (as Stable Diffusion's
retrains would keep its pretrained VAE): the autoencoder has seen the removed items.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..settings.model import LDMSettings
from .ddpm import Diffusion, MLPDenoiser
from .frozen import fit_once, frozen, pool_images, require_fitted
from .threads import FIT_THREADS, fixed_threads


class Autoencoder(nn.Module):
    """An MLP VAE: image -> (mean, log-variance) of a `latent_dim` Gaussian -> image logits."""

    def __init__(self, data_shape, hidden: int, latent_dim: int):
        super().__init__()
        d, half = math.prod(data_shape), max(1, hidden // 2)
        self.enc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, hidden),
            nn.SiLU(),
            nn.Linear(hidden, half),
            nn.SiLU(),
            nn.Linear(half, 2 * latent_dim),
        )
        self.dec = nn.Sequential(
            nn.Linear(latent_dim, half),
            nn.SiLU(),
            nn.Linear(half, hidden),
            nn.SiLU(),
            nn.Linear(hidden, d),
        )

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x).chunk(2, 1)[0]

    def neg_elbo(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Bernoulli reconstruction (pixels in [0, 1]) plus KL, per item, summed over pixels: the
        KL keeps the latent space smooth enough for a diffusion model to fill."""
        mu, logvar = self.enc(x).chunk(2, 1)
        z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x.flatten(1), reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        return (rec + kl) / len(x)


class LatentDDPM(Diffusion):
    """Caption-conditioned DDPM (MLP denoiser, classifier-free guidance) over the normalised
    latent means of a frozen VAE; samples are decoded to images in [0, 1]."""

    # the predicted clean latent is clamped to +-6 standard deviations of the pool's latents while
    # sampling: far outside anything the decoder saw, yet finite when a short chain's last beta is 1
    x0_clip = 6.0
    # what a trained model's signature must also name (training.members.train_spec): its frozen
    # autoencoder is fitted at FIT_THREADS, so a model trained before that is not reused
    frozen_fit = {"ae_threads": FIT_THREADS}

    settings_class = LDMSettings

    def __init__(self, settings: LDMSettings, data_shape: list[int], vocab: list[str]):
        super().__init__(
            vocab, settings.conditional, settings.cond_dim, settings.lr, settings.weight_decay
        )
        self.save_hyperparameters(settings.init_args() | {"data_shape": data_shape, "vocab": vocab})
        self.shape = tuple(data_shape)
        self.space = (settings.latent_dim,)
        self.net = MLPDenoiser(self.space, settings.hidden, settings.cond_dim, settings.depth)
        self.ae = frozen(Autoencoder(self.shape, settings.ae_hidden, settings.latent_dim))
        self.register_buffer("latent_mean", torch.zeros(settings.latent_dim))
        self.register_buffer("latent_std", torch.ones(settings.latent_dim))
        self.register_buffer("ae_fitted", torch.tensor(False))
        self._register_schedule(settings.timesteps)

    # --- the frozen autoencoder -------------------------------------------------------------
    def ae_spec(self) -> dict:
        hp = self.hparams
        keys = ("latent_dim", "ae_hidden", "ae_epochs", "ae_lr", "ae_seed")
        return {"shape": list(self.shape), "threads": FIT_THREADS, **{k: hp[k] for k in keys}}

    def fit_frozen(self, bundle, cache_root: Path | None = None) -> None:
        """Train the autoencoder on every item of `bundle.full` (once per pool: the full model and
        its retrains share it, within a process and, through `cache_root`, across processes) and
        load it with its latent statistics; at one thread (`models.threads`), so that its latent
        space does not depend on the machine's thread count."""

        def train() -> dict[str, torch.Tensor]:
            with fixed_threads():
                return self._train_autoencoder(pool_images(bundle.full, self.shape))

        state = fit_once(
            "ldm-autoencoder", self.ae_spec(), bundle.full_fingerprint, cache_root, train
        )
        self.load_state_dict({**self.state_dict(), **state})

    def _train_autoencoder(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Adam on the negative ELBO, seeded by `ae_seed` alone (not the model's seed), so every
        model of one dataset gets the same autoencoder; then the per-dimension mean and spread of
        the pool's latent means, which scale the diffused latents to unit variance."""
        hp = self.hparams
        gen = torch.Generator().manual_seed(int(hp.ae_seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(hp.ae_seed))
            net = Autoencoder(self.shape, hp.ae_hidden, hp.latent_dim)
        opt = torch.optim.Adam(net.parameters(), lr=hp.ae_lr)
        for _ in range(hp.ae_epochs):
            for idx in torch.randperm(len(x), generator=gen).split(128):
                loss = net.neg_elbo(x[idx], gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            mu = torch.cat([net.mean(chunk) for chunk in x.split(1024)])
        state = {f"ae.{k}": v.detach().clone() for k, v in net.state_dict().items()}
        state["latent_mean"] = mu.mean(0)
        state["latent_std"] = mu.std(0).clamp(min=1e-6)
        state["ae_fitted"] = torch.tensor(True)
        return state

    def _check_fitted(self) -> None:
        require_fitted(self.ae_fitted, "ae_fitted", "LatentDDPM's autoencoder")

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised latent means of images in [0, 1] (what the denoiser diffuses)."""
        self._check_fitted()
        mu = self.ae.mean(images.to(self.latent_mean.device, torch.float32))
        return (mu - self.latent_mean) / self.latent_std

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] with the data's shape from normalised latents."""
        self._check_fitted()
        logits = self.ae.dec(z * self.latent_std + self.latent_mean)
        return torch.sigmoid(logits).view(-1, *self.shape)

    # --- the diffusion hooks -----------------------------------------------------------------
    def prepare(self, batch: dict) -> dict:
        """Caption bags and the batch's latents, computed once outside `vmap` (a pack's table and
        the per-example gradients then never run the encoder)."""
        batch = super().prepare(batch)
        if "latent" not in batch:
            batch = {**batch, "latent": self.encode(batch["content"])}
        return batch

    def sample(self, prompts, seeds):
        self._check_fitted()  # before the chain, not after it
        return super().sample(prompts, seeds)

    def _x0(self, batch) -> torch.Tensor:
        return batch["latent"] if "latent" in batch else self.encode(batch["content"])

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(x)
