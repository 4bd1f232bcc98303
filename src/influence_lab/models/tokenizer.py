"""DALL-E's discrete image tokenizer at toy scale: a convolutional VQ-VAE that turns an image into
a grid of codebook indices (a 28x28 image into 7x7 tokens, an 8x8 digit into 4x4) and a grid of
indices back into an image.

The codebook is learnt with `vector_quantize_pytorch.VectorQuantize` (exponential-moving-average
updates, k-means initialisation, re-seeding of dead codes: the parts of VQ training that are easy
to get subtly wrong). The fitted tokenizer keeps only what inference needs: the encoder, the
decoder and the codebook as a plain tensor; encoding is a nearest-code lookup, so a frozen
tokenizer holds no library state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InfluenceLabError

MAX_SIDE = 8  # the automatic downsampling gives at most this many tokens a side


def downsample_factor(shape, requested: int | None) -> int:
    """The encoder's downsampling factor for images of `shape` (c, h, w): `requested`, or the
    smallest power of two that divides both sides and leaves at most MAX_SIDE tokens a side."""
    _, h, w = shape
    if requested is not None:
        if requested < 2 or requested & (requested - 1) or h % requested or w % requested:
            raise InfluenceLabError(
                f"model.downsample is {requested} but the images are {h}x{w}; it must be a power "
                "of two (2 or more) that divides both sides, or null to pick one."
            )
        return requested
    f = 2
    while h % f == 0 and w % f == 0:
        if max(h, w) // f <= MAX_SIDE:
            return f
        f *= 2
    raise InfluenceLabError(
        f"the images are {h}x{w}: no power of two divides both sides down to at most "
        f"{MAX_SIDE} tokens a side; set model.downsample (a power of two dividing {h} and {w})."
    )


class VQTokenizer(nn.Module):
    """Image (c, h, w) in [0, 1] -> (h/f) x (w/f) codebook indices -> image logits."""

    def __init__(self, shape, hidden: int, code_dim: int, codebook_size: int, downsample: int):
        super().__init__()
        c, h, w = shape
        self.shape = tuple(shape)
        self.grid = (h // downsample, w // downsample)
        stages = int(math.log2(downsample))
        enc: list[nn.Module] = [nn.Conv2d(c, hidden, 4, 2, 1), nn.SiLU()]
        dec: list[nn.Module] = [nn.Conv2d(code_dim, hidden, 3, 1, 1), nn.SiLU()]
        for _ in range(stages - 1):
            enc += [nn.Conv2d(hidden, hidden, 4, 2, 1), nn.SiLU()]
            dec += [nn.ConvTranspose2d(hidden, hidden, 4, 2, 1), nn.SiLU()]
        enc.append(nn.Conv2d(hidden, code_dim, 1))
        dec.append(nn.ConvTranspose2d(hidden, c, 4, 2, 1))
        self.enc, self.dec = nn.Sequential(*enc), nn.Sequential(*dec)
        self.register_buffer("codebook", torch.zeros(codebook_size, code_dim))

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder outputs, one code_dim vector per grid cell: (B, n_tokens, code_dim)."""
        return self.enc(images).flatten(2).transpose(1, 2)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The nearest codebook entry of every grid cell, row-major: (B, n_tokens) indices."""
        z = self.features(images)
        dist = (
            z.pow(2).sum(-1, keepdim=True)
            - 2 * z @ self.codebook.T
            + self.codebook.pow(2).sum(-1)[None, None]
        )
        return dist.argmin(-1)

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixel logits from code vectors (B, n_tokens, code_dim)."""
        b = codes.shape[0]
        grid = codes.transpose(1, 2).reshape(b, -1, *self.grid)
        return self.dec(grid)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from (B, n_tokens) indices."""
        return torch.sigmoid(self.logits(self.codebook[tokens]))


def fit_tokenizer(
    images: torch.Tensor,
    shape,
    hidden: int,
    code_dim: int,
    codebook_size: int,
    downsample: int,
    epochs: int,
    lr: float,
    seed: int,
) -> tuple[VQTokenizer, float]:
    """A tokenizer fitted on `images` (Adam on the pixels' binary cross-entropy plus the
    commitment loss; the codebook by EMA), seeded by `seed` alone; and its reconstruction error
    on them (mean squared error per pixel, images in [0, 1])."""
    from vector_quantize_pytorch import VectorQuantize

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # the initial weights and the codebook's k-means draws
        net = VQTokenizer(shape, hidden, code_dim, codebook_size, downsample)
        vq = VectorQuantize(
            dim=code_dim,
            codebook_size=codebook_size,
            decay=0.8,
            commitment_weight=0.25,
            kmeans_init=True,
            threshold_ema_dead_code=2,
        )
        gen = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(epochs):
            for idx in torch.randperm(len(images), generator=gen).split(128):
                x = images[idx]
                quantized, _, commit = vq(net.features(x))
                rec = F.binary_cross_entropy_with_logits(net.logits(quantized), x)
                loss = rec + commit.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.codebook.copy_(vq.codebook.detach().reshape(codebook_size, code_dim))
    net.eval()
    with torch.no_grad():
        mse = torch.cat(
            [(net.decode(net.encode(x)) - x).pow(2).flatten(1) for x in images.split(512)]
        ).mean()
    return net, float(mse)
