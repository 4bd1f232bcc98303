"""What every generative model shares: the protocol of DESIGN.md and the Lightning plumbing.

- `sample(prompts, seeds)`: one output per (prompt, seed), deterministic given the seed;
- `example_loss(batch, noise_seed) -> Tensor[B]`: per-example loss with fixed noise;
- `embed(batch) -> Tensor[B, d]`: the model's own latent representation.

A batch is `{"content": Tensor (images) or list[str] (texts), "caption": list[str]}`.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from .text_encoder import BagOfWords


class GenerativeModel(pl.LightningModule):
    kind = "image"  # or "text"

    def __init__(self, vocab: list[str], conditional: bool, cond_dim: int, lr: float, weight_decay: float):
        super().__init__()
        self.conditional = conditional
        self.cond_dim = cond_dim
        self.text = BagOfWords(vocab, cond_dim) if conditional else None

    # --- conditioning -------------------------------------------------------------------------
    def condition(self, captions: list[str], drop: torch.Tensor | None = None) -> torch.Tensor:
        if self.text is None:
            return torch.zeros(len(captions), self.cond_dim, device=self.device)
        return self.text(captions, drop)

    # --- protocol -----------------------------------------------------------------------------
    def loss(self, batch) -> torch.Tensor:  # per-example training loss, random noise
        raise NotImplementedError

    def example_loss(self, batch, noise_seed: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, prompts: list[str], seeds: list[int]):
        raise NotImplementedError

    def embed(self, batch) -> torch.Tensor:
        raise NotImplementedError

    # --- Lightning ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss = self.loss(batch).mean()
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["caption"]))
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.example_loss(batch, noise_seed=0).mean()
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["caption"]))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.trainer is None or not self.trainer.max_epochs or self.trainer.max_epochs < 0:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs, eta_min=self.hparams.lr * 0.05)
        return {"optimizer": opt, "lr_scheduler": sched}


def seeded_normal(seed: int, shape, device=None) -> torch.Tensor:
    """Standard normal noise that depends only on `seed` (not on the global RNG)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(*shape, generator=gen).to(device)
