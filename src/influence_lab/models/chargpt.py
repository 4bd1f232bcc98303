"""A caption-conditioned character-level transformer for short texts such as names (nanoGPT-style
causal self-attention; the caption embedding is added at every position)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import GenerativeModel


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout)
        )
        self.dropout = dropout

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (
            self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )
        # written out rather than F.scaled_dot_product_attention, which has no vmap batching rule on
        # the CPU (packs would fall back to a Python loop over members)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        weights = F.softmax(scores.masked_fill(causal, float("-inf")), dim=-1)
        if self.training and self.dropout:
            weights = F.dropout(weights, self.dropout)
        x = x + self.proj((weights @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class CharGPT(GenerativeModel):
    kind = "text"
    # vmap over this model's attention runs ~5x slower per member than a plain fit on CPU
    # (measured: 0.5-1 s per packed step vs 0.11 s solo), so its members are fitted one by one
    packable = False

    def __init__(
        self,
        alphabet: str,
        vocab: list[str],
        conditional: bool = True,
        block_size: int = 24,
        n_layer: int = 3,
        n_head: int = 4,
        n_embd: int = 96,
        dropout: float = 0.0,
        temperature: float = 1.0,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
    ):
        super().__init__(vocab, conditional, n_embd, lr, weight_decay)
        self.save_hyperparameters()
        self.alphabet = alphabet
        self.stoi = {ch: i + 1 for i, ch in enumerate(alphabet)}  # 0 = start / end of text
        self.tok = nn.Embedding(len(alphabet) + 1, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, len(alphabet) + 1)

    def encode_texts(self, texts: list[str]):
        """Inputs [0, c1..cn] and targets [c1..cn, 0], right-padded (targets with -1)."""
        t = self.hparams.block_size
        inp = torch.zeros(len(texts), t, dtype=torch.long)
        tgt = torch.full((len(texts), t), -1, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.stoi[ch] for ch in text if ch in self.stoi][: t - 1]
            inp[row, 1 : len(ids) + 1] = torch.tensor(ids, dtype=torch.long)
            tgt[row, : len(ids) + 1] = torch.tensor(ids + [0], dtype=torch.long)
        return inp.to(self.device), tgt.to(self.device)

    def hidden(self, idx, c):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(pos)[None] + c[:, None, :]
        for block in self.blocks:
            x = block(x)
        return self.ln(x)

    def prepare(self, batch):
        batch = super().prepare(batch)
        if "inp" not in batch:
            inp, tgt = self.encode_texts(batch["content"])
            batch = {**batch, "inp": inp, "tgt": tgt}
        return batch

    def _nll(self, batch):
        batch = self.prepare(batch)
        inp, tgt = batch["inp"], batch["tgt"]
        logits = self.head(self.hidden(inp, self.cond(batch)))
        nll = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-1, reduction="none")
        return nll.sum(1), (tgt >= 0).sum(1)

    def loss(self, batch, noise):
        nll, count = self._nll(batch)
        return nll / count  # per-character, for training

    def measured_loss(self, batch, noise):
        """Negative log-likelihood of the whole text, end token included (nats); no noise."""
        return self._nll(batch)[0]

    @torch.no_grad()
    def sample(self, prompts, seeds):
        texts = []
        conds = self.condition(list(prompts))
        for c, seed in zip(conds, seeds, strict=True):
            gen = torch.Generator().manual_seed(int(seed))
            idx = torch.zeros(1, 1, dtype=torch.long, device=self.device)
            out = []
            for _ in range(self.hparams.block_size - 1):
                logits = self.head(self.hidden(idx, c[None]))[0, -1] / self.hparams.temperature
                nxt = int(torch.multinomial(F.softmax(logits, -1).cpu(), 1, generator=gen))
                if nxt == 0:
                    break
                out.append(self.alphabet[nxt - 1])
                idx = torch.cat([idx, torch.tensor([[nxt]], device=self.device)], 1)
            texts.append("".join(out))
        return texts

    @torch.no_grad()
    def embed(self, batch):
        """Mean final hidden state over the text's positions."""
        batch = self.prepare(batch)
        inp, tgt = batch["inp"], batch["tgt"]
        h = self.hidden(inp, self.cond(batch))
        mask = (tgt >= 0).float()[:, :, None]
        return (h * mask).sum(1) / mask.sum(1)
