"""A caption-conditioned VAE for small images (MLP or a small conv net), Bernoulli pixels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InfluenceLabError
from ..settings.model import VAESettings
from .packed import embed_bags, silu_mlp
from .protocol import GenerativeModel, seeded_normal


class MLPCoder(nn.Module):
    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, d_out),
        )

    def forward(self, x):
        return self.net(x)


class ConvEncoder(nn.Module):
    def __init__(self, shape, hidden: int, cond_dim: int, d_out: int):
        super().__init__()
        c, h, w = shape
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.SiLU(),
            nn.Flatten(),
        )
        self.head = MLPCoder(64 * math.ceil(h / 4) * math.ceil(w / 4) + cond_dim, hidden, d_out)

    def forward(self, x, c):
        return self.head(torch.cat([self.conv(x), c], 1))


class ConvDecoder(nn.Module):
    def __init__(self, shape, hidden: int, d_in: int):
        super().__init__()
        self.shape = shape
        c, h, w = shape
        self.h4, self.w4 = math.ceil(h / 4), math.ceil(w / 4)
        self.fc = nn.Sequential(
            nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, 64 * self.h4 * self.w4), nn.SiLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(32, c, 4, 2, 1)
        )

    def forward(self, z):
        out = self.deconv(self.fc(z).view(-1, 64, self.h4, self.w4))
        return out[:, :, : self.shape[1], : self.shape[2]]


class VAE(GenerativeModel):
    kind = "image"

    settings_class = VAESettings

    def __init__(self, settings: VAESettings, data_shape: list[int], vocab: list[str]):
        super().__init__(
            vocab, settings.conditional, settings.cond_dim, settings.lr, settings.weight_decay
        )
        self.save_hyperparameters(settings.init_args() | {"data_shape": data_shape, "vocab": vocab})
        self.shape = tuple(data_shape)
        d = math.prod(self.shape)
        if settings.arch == "mlp":
            self.encoder = MLPCoder(d + settings.cond_dim, settings.hidden, 2 * settings.latent_dim)
            self.decoder = MLPCoder(settings.latent_dim + settings.cond_dim, settings.hidden, d)
        elif settings.arch == "conv":
            self.encoder = ConvEncoder(
                self.shape, settings.hidden, settings.cond_dim, 2 * settings.latent_dim
            )
            self.decoder = ConvDecoder(
                self.shape, settings.hidden, settings.latent_dim + settings.cond_dim
            )
        else:
            raise InfluenceLabError(
                f"model.arch is '{settings.arch}'; allowed values are 'mlp' and 'conv'."
            )

    def encode(self, x, c):
        inp = (torch.cat([x.flatten(1), c], 1),) if self.hparams.arch == "mlp" else (x, c)
        mu, logvar = self.encoder(*inp).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode_logits(self, z, c):
        return self.decoder(torch.cat([z, c], 1)).view(-1, *self.shape)

    def _neg_elbo(self, batch, eps):
        x = batch["content"]
        c = self.cond(batch)
        mu, logvar = self.encode(x, c)
        z = mu + torch.exp(0.5 * logvar) * eps
        rec = (
            F.binary_cross_entropy_with_logits(self.decode_logits(z, c), x, reduction="none")
            .flatten(1)
            .sum(1)
        )
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return rec + self.hparams.beta * kl

    def packed_loss(self, params: dict, batch: dict, noise: dict) -> torch.Tensor | None:
        """The training loss of M members at once, (M, B), for the MLP architecture (the same
        arithmetic as `loss`, layers of `packed.py`; None for the conv one: the pack vmaps `loss`).
        `params` and the prepared batch and noise are stacked on a leading member dimension."""
        hp = self.hparams
        if hp.arch != "mlp":
            return None
        x = batch["content"].flatten(2)
        members, n = x.shape[:2]
        c = (
            embed_bags(batch["bags"], params)
            if self.text is not None
            else x.new_zeros(members, n, self.cond_dim)
        )
        mu, logvar = silu_mlp(torch.cat([x, c], 2), params, "encoder.net").chunk(2, dim=2)
        logvar = logvar.clamp(-10, 10)
        z = mu + torch.exp(0.5 * logvar) * noise["eps"]
        logits = silu_mlp(torch.cat([z, c], 2), params, "decoder.net")
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(2)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(2)
        return rec + hp.beta * kl

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
        z = torch.stack([seeded_normal(s, (self.hparams.latent_dim,)) for s in seeds]).to(
            self.device
        )
        return torch.sigmoid(self.decode_logits(z, self.condition(list(prompts))))

    @torch.no_grad()
    def embed(self, batch):
        return self.encode(batch["content"], self.cond(batch))[0]
