"""A small caption-conditioned denoising diffusion model (DDPM, epsilon prediction) for small
images, with an MLP or a tiny UNet denoiser and classifier-free guidance at sampling time.
`Diffusion` holds what the pixel DDPM and the latent DDPM (`latent_ddpm.py`) share."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InfluenceLabError
from ..settings.model import DDPMSettings
from .protocol import GenerativeModel, seeded_normal

DTRAK_TIMESTEPS = 10  # D-TRAK's K when none is given (attribution.gradient.dtrak_timesteps)


def dtrak_seed(seed: int, t: int) -> int:
    """The seed of D-TRAK's noise at timestep t (as its authors, one seed per timestep, so the
    draw at t does not depend on K), apart from the small seeds used elsewhere."""
    return 1_000_003 * (int(seed) + 1) + int(t)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], 1)


class MLPDenoiser(nn.Module):
    def __init__(self, shape, hidden: int, cond_dim: int, depth: int = 3):
        super().__init__()
        self.shape = tuple(shape)
        d = math.prod(self.shape)
        self.inp = nn.Linear(d, hidden)
        self.emb = nn.Sequential(
            nn.Linear(128 + cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, d))

    def features(self, x, t, c):
        h = self.inp(x.flatten(1)) + self.emb(torch.cat([timestep_embedding(t, 128), c], 1))
        for block in self.blocks:
            h = h + block(h)
        return h

    def forward(self, x, t, c):
        return self.out(self.features(x, t, c)).view(-1, *self.shape)


class ResBlock(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, emb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, ch_in)
        self.conv1 = nn.Conv2d(ch_in, ch_out, 3, padding=1)
        self.emb = nn.Linear(emb, ch_out)
        self.norm2 = nn.GroupNorm(8, ch_out)
        self.conv2 = nn.Conv2d(ch_out, ch_out, 3, padding=1)
        self.skip = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else nn.Identity()

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class TinyUNet(nn.Module):
    """Two resolutions (H and H/2) with a skip connection; H and W must be even."""

    def __init__(self, shape, hidden: int, cond_dim: int, channels: int = 32):
        super().__init__()
        c = shape[0]
        self.shape = tuple(shape)
        self.emb = nn.Sequential(
            nn.Linear(128 + cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.inp = nn.Conv2d(c, channels, 3, padding=1)
        self.down = ResBlock(channels, channels, hidden)
        self.pool = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1)
        self.mid = ResBlock(2 * channels, 2 * channels, hidden)
        self.upsample = nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1)
        self.up = ResBlock(2 * channels, channels, hidden)
        self.out = nn.Sequential(
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, c, 3, padding=1)
        )

    def features(self, x, t, c):
        e = self.emb(torch.cat([timestep_embedding(t, 128), c], 1))
        h1 = self.down(self.inp(x), e)
        h2 = self.mid(self.pool(h1), e)
        return self.up(torch.cat([self.upsample(h2), h1], 1), e), e

    def forward(self, x, t, c):
        return self.out(self.features(x, t, c)[0])


class Diffusion(GenerativeModel):
    """Epsilon-prediction diffusion over a tensor of shape `space`, shared by the pixel DDPM and
    the latent DDPM so that both have one definition of the noise schedule, the training and
    measured losses, D-TRAK's output and the sampling loop. A subclass sets `self.net` (a denoiser
    with `features`), `self.space`, the schedule (`_register_schedule`), and says what is diffused
    (`_x0`) and how a sample becomes an image (`_decode`)."""

    kind = "image"
    x0_clip: float | None = 1.0  # clamp the predicted clean tensor while sampling (None: do not)

    def _register_schedule(self, timesteps: int) -> None:
        betas = torch.linspace(1e-4, 0.02 * 1000 / timesteps, timesteps)
        alphas_bar = torch.cumprod(1 - betas, 0)
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_bar", alphas_bar, persistent=False)

    def _x0(self, batch) -> torch.Tensor:
        """The clean tensor the model diffuses: here the image, scaled to [-1, 1]."""
        return batch["content"] * 2 - 1

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        """A finished sample as an image in [0, 1]."""
        return ((x + 1) / 2).clamp(0, 1)

    def _noised(self, x0, t, eps):
        ab = self.alphas_bar[t].reshape(-1, *(1,) * (x0.dim() - 1))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def draw_noise(self, n, generator):
        return {
            "t": torch.randint(0, self.hparams.timesteps, (n,), generator=generator),
            "eps": torch.randn(n, *self.space, generator=generator),
            "drop": torch.rand(n, generator=generator)
            < (self.hparams.p_uncond if self.conditional else 0.0),
        }

    def loss(self, batch, noise):
        x0 = self._x0(batch)
        t, eps = noise["t"], noise["eps"]
        pred = self.net(self._noised(x0, t, eps), t, self.cond(batch, noise["drop"]))
        return (pred - eps).pow(2).flatten(1).mean(1)

    def loss_timestep_grid(self) -> torch.Tensor:
        k, T = self.hparams.loss_timesteps, self.hparams.timesteps
        return torch.linspace(0, T - 1, k).round().long()

    def dtrak_timestep_grid(self, k: int) -> torch.Tensor:
        """D-TRAK's K timesteps, evenly spaced as its authors' `range(0, T, T // K)`, exactly K."""
        T = self.hparams.timesteps
        if not 1 <= k <= T:
            raise InfluenceLabError(
                f"attribution.gradient.dtrak_timesteps is {k}; "
                f"it must be from 1 to model.timesteps ({T})."
            )
        return torch.arange(k) * (T // k)

    def measure_noise(self, n, seed, dtrak_timesteps: int | None = None):
        """The fixed noise, example first. "eps": each example's own noise at each of the
        `loss_timesteps` timesteps of `measured_loss`, (n, loss_timesteps, *space). "eps_dtrak":
        D-TRAK's, one draw per timestep t of `dtrak_timestep_grid` (from the seed (seed, t))
        shared by every example, a view (n, K, *space) of (K, *space); K = `dtrak_timesteps`
        (attribution.gradient.dtrak_timesteps), or DTRAK_TIMESTEPS (at most T) when None."""
        k = dtrak_timesteps or min(DTRAK_TIMESTEPS, self.hparams.timesteps)
        shared = torch.stack(
            [seeded_normal(dtrak_seed(seed, t), self.space) for t in self.dtrak_timestep_grid(k)]
        )
        eps = seeded_normal(seed, (self.hparams.loss_timesteps, n, *self.space)).transpose(0, 1)
        return {"eps": eps, "eps_dtrak": shared.expand(n, *shared.shape)}

    def _over_timesteps(self, batch, eps, grid, per_step):
        """The mean over the timesteps of `grid` of per_step(predicted noise, noise), each
        averaged over the pixels; eps (n, len(grid), *space) is the noise at each timestep."""
        x0 = self._x0(batch)
        n = len(x0)
        c = self.cond(batch)
        total = x0.new_zeros(
            n
        )  # devices from the data: under a pack the module itself is on "meta"
        for k, t_val in enumerate(grid.tolist()):
            t = torch.full((n,), t_val, device=x0.device, dtype=torch.long)
            eps_k = eps[:, k]
            total = total + per_step(self.net(self._noised(x0, t, eps_k), t, c), eps_k).flatten(
                1
            ).mean(1)
        return total / len(grid)

    def measured_loss(self, batch, noise):
        """Denoising loss averaged over `loss_timesteps` fixed timesteps with fixed noise."""
        return self._over_timesteps(
            batch, noise["eps"], self.loss_timestep_grid(), lambda pred, eps: (pred - eps).pow(2)
        )

    def sampled_measured_loss(self, batch, noise):
        """`measured_loss` with its targets drawn from the model's own predictive distribution (the
        predicted noise plus a standard normal draw, torch's generator): its gradients' covariance
        is the Fisher of the Gaussian denoising likelihood, i.e. the GGN that Mlodozeniec et al.
        fit K-FAC to, where the `measured_loss` gives the empirical Fisher."""
        return self._over_timesteps(
            batch,
            noise["eps"],
            self.loss_timestep_grid(),
            lambda pred, eps: (pred - (pred.detach() + torch.randn_like(pred))).pow(2),
        )

    def output_dtrak(self, batch, noise):
        """D-TRAK's output function as its authors compute it (Zheng et al., ICLR 2024;
        sail-sg/D-TRAK grad_unconditional.py): the squared predicted noise averaged over the
        pixels, then over K evenly spaced timesteps, with one noise draw per timestep shared by
        every example (`eps_dtrak` of `measure_noise`; K is its second dimension)."""
        eps = noise["eps_dtrak"]
        grid = self.dtrak_timestep_grid(eps.shape[1])
        return self._over_timesteps(batch, eps, grid, lambda pred, eps: pred.pow(2))

    def output_das(self, batch, noise):
        """DAS's output function (Lin et al., ICLR 2025; Jinxu-Lin/DAS, its "mean" output): the
        predicted noise itself, averaged over the pixels and over D-TRAK's K timesteps and shared
        noise draws; DAS linearises how this output changes when an item is removed."""
        eps = noise["eps_dtrak"]
        grid = self.dtrak_timestep_grid(eps.shape[1])
        return self._over_timesteps(batch, eps, grid, lambda pred, eps: pred)

    def das_residual(self, batch, noise):
        """The residual of DAS's output on a prepared batch: predicted minus drawn noise, averaged
        like `output_das` (what a Gauss-Newton step on the item fits away)."""
        eps = noise["eps_dtrak"]
        grid = self.dtrak_timestep_grid(eps.shape[1])
        return self._over_timesteps(batch, eps, grid, lambda pred, eps: pred - eps)

    def _eps(self, x, t, c, c_null):
        if not self.conditional or self.hparams.guidance == 1.0:
            return self.net(x, t, c)
        both = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, c_null]))
        e_c, e_u = both.chunk(2)
        return e_u + self.hparams.guidance * (e_c - e_u)

    @torch.no_grad()
    def sample(self, prompts, seeds):
        """Ancestral DDPM sampling; every random draw of output i comes from its own seed."""
        T, n = self.hparams.timesteps, len(seeds)
        noise = torch.stack([seeded_normal(s, (T + 1, *self.space)) for s in seeds], 1).to(
            self.device
        )
        prompts = list(prompts)
        c = self.condition(prompts)
        c_null = self.condition(prompts, torch.ones(n, dtype=torch.bool, device=self.device))
        x = noise[T]
        for step in reversed(range(T)):
            t = torch.full((n,), step, device=self.device, dtype=torch.long)
            eps = self._eps(x, t, c, c_null)
            ab, beta = self.alphas_bar[step], self.betas[step]
            ab_prev = (
                self.alphas_bar[step - 1] if step > 0 else torch.tensor(1.0, device=self.device)
            )
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            if self.x0_clip is not None:
                x0 = x0.clamp(-self.x0_clip, self.x0_clip)
            mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + (
                (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
            ) * x
            var = beta * (1 - ab_prev) / (1 - ab)
            x = mean + (var.sqrt() * noise[step] if step > 0 else 0)
        return self._decode(x)

    @torch.no_grad()
    def embed(self, batch):
        """Denoiser features of the clean tensor lightly noised (t = T/10, fixed noise)."""
        x0 = self._x0(batch)
        n = len(x0)
        t = torch.full((n,), self.hparams.timesteps // 10, device=self.device, dtype=torch.long)
        xt = self._noised(x0, t, seeded_normal(0, x0.shape, self.device))
        feats = self.net.features(xt, t, self.cond(batch))
        return feats[0].flatten(1) if isinstance(feats, tuple) else feats


class DDPM(Diffusion):
    """Diffusion in pixel space (images scaled to [-1, 1])."""

    settings_class = DDPMSettings

    def __init__(self, settings: DDPMSettings, data_shape: list[int], vocab: list[str]):
        super().__init__(
            vocab, settings.conditional, settings.cond_dim, settings.lr, settings.weight_decay
        )
        self.save_hyperparameters(settings.init_args() | {"data_shape": data_shape, "vocab": vocab})
        self.shape = self.space = tuple(data_shape)
        if settings.arch == "mlp":
            self.net = MLPDenoiser(self.shape, settings.hidden, settings.cond_dim, settings.depth)
        elif settings.arch == "unet":
            self.net = TinyUNet(self.shape, settings.hidden, settings.cond_dim)
        else:
            raise InfluenceLabError(
                f"model.arch is '{settings.arch}'; allowed values are 'mlp' and 'unet'."
            )
        self._register_schedule(settings.timesteps)
