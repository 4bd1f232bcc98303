"""A user's own generative model for influence-lab: a small caption-conditioned VAE (one hidden
layer each way, a 4-dimensional latent so that the caption carries the class, Bernoulli pixels).

What influence-lab needs from a model (influence_lab.models.protocol.GenerativeModel):
- required: `loss(batch, noise)` (per-example training loss), `draw_noise(n, generator)` (the
  random numbers of one training step), `measure_noise(n, seed)` and `measured_loss(batch, noise)`
  (the per-example loss under fixed noise: counterfactual targets, LDS, gradients),
  `sample(prompts, seeds)` (one output per pair, deterministic given the seed) and `embed(batch)`
  (the model's own latent space, a search space of `attribute`);
- `kind`: "image" or "text"; the constructor takes `vocab` (caption words) and `data_shape`
  (images) or `alphabet` (texts), then the keys of the model's YAML;
- optional: `packable = False` when `loss` cannot run under torch.func.vmap (the model is then
  fitted member by member), an `output_dtrak(batch, noise)` for D-TRAK.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from influence_lab.models.protocol import GenerativeModel, seeded_normal


class TinyVAE(GenerativeModel):
    kind = "image"

    def __init__(
        self,
        data_shape: list[int],
        vocab: list[str],
        conditional: bool = True,
        latent_dim: int = 4,
        hidden: int = 128,
        cond_dim: int = 16,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
    ):
        super().__init__(vocab, conditional, cond_dim, lr, weight_decay)
        self.save_hyperparameters()
        self.shape = tuple(data_shape)
        d = math.prod(self.shape)
        self.encoder = nn.Sequential(
            nn.Linear(d + cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, d)
        )

    def _encode(self, x, c):
        mu, logvar = self.encoder(torch.cat([x.flatten(1), c], 1)).chunk(2, dim=1)
        return mu, logvar.clamp(-8, 8)

    def _logits(self, z, c):
        return self.decoder(torch.cat([z, c], 1)).view(-1, *self.shape)

    def _neg_elbo(self, batch, eps):
        x, c = batch["content"], self.cond(batch)
        mu, logvar = self._encode(x, c)
        z = mu + torch.exp(0.5 * logvar) * eps
        rec = F.binary_cross_entropy_with_logits(self._logits(z, c), x, reduction="none")
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return rec.flatten(1).sum(1) + kl

    def draw_noise(self, n, generator):
        return {"eps": torch.randn(n, self.hparams.latent_dim, generator=generator)}

    def loss(self, batch, noise):
        return self._neg_elbo(batch, noise["eps"])

    def measure_noise(self, n, seed):
        return {"eps": seeded_normal(seed, (n, self.hparams.latent_dim))}

    def measured_loss(self, batch, noise):
        return self._neg_elbo(batch, noise["eps"])

    @torch.no_grad()
    def sample(self, prompts, seeds):
        z = torch.stack([seeded_normal(s, (self.hparams.latent_dim,)) for s in seeds])
        c = self.condition(list(prompts))
        return torch.sigmoid(self._logits(z.to(self.device), c))

    @torch.no_grad()
    def embed(self, batch):
        return self._encode(batch["content"], self.cond(batch))[0]
