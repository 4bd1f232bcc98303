"""A bag-of-words caption encoder: a multi-hot vector over the caption vocabulary, projected.

Enough for captions built from a few attribute words; the vocabulary is fixed at model creation
from the full dataset's captions, so models retrained on subsets share it.
"""

from __future__ import annotations

import re

import torch
from torch import nn

TOKEN = re.compile(r"[a-z0-9]+")


def caption_tokens(caption: str) -> list[str]:
    return TOKEN.findall(caption.lower())


def build_vocab(captions) -> list[str]:
    return sorted({tok for c in captions for tok in caption_tokens(c)})


class BagOfWords(nn.Module):
    def __init__(self, vocab: list[str], dim: int):
        super().__init__()
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.proj = nn.Linear(max(len(self.vocab), 1), dim)

    def bags(self, captions: list[str]) -> torch.Tensor:
        out = torch.zeros(len(captions), max(len(self.vocab), 1), device=self.proj.weight.device)
        for row, caption in enumerate(captions):
            for tok in caption_tokens(caption):
                col = self.index.get(tok)
                if col is not None:
                    out[row, col] = 1.0
        return out

    def embed_bags(self, bags: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Embed multi-hot bags; rows where `drop` is True get the empty bag (the null
        condition)."""
        if drop is not None:
            bags = bags * (~drop).to(bags.dtype)[:, None]
        return self.proj(bags)

    def forward(self, captions: list[str], drop: torch.Tensor | None = None) -> torch.Tensor:
        return self.embed_bags(self.bags(captions), drop)
