"""A caption-conditioned character-level transformer for short texts such as names (nanoGPT-style
causal self-attention).

The caption enters twice: its bag-of-words embedding is added at every position, and each caption
word adds its own learned vector per position (`caption_pos`, one table of position embeddings per
word). A caption word held by a handful of texts (a planted canary) gets gradient only from those
few, and AdamW moves a weight about lr per step: through the shared embedding alone it does not
move the samples at all (measured: 0 of 20 samples for a 5-text caption among 1,000 names resembled
those texts). `caption_pos` is stored divided by `caption_gain` and multiplied back in the forward
pass, so AdamW (solo or the pack's) moves it `caption_gain` times as far per step as other weights;
it starts at zero, so the untrained model is the plain one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..settings.model import CharGPTSettings
from .packed import embed_bags, layer_norm, linear
from .protocol import GenerativeModel
from .transformer import Block


class CharGPT(GenerativeModel):
    kind = "text"
    # packs run `packed_loss` (an explicit member dimension) instead of vmapping this module: vmap
    # over its attention ran ~5x slower per member than a solo fit on CPU (0.5-1 s per packed step
    # against 0.11 s solo). On a CPU even the batched pack only matches solo fits (a solo step of
    # 128 names is already ~40% of the matmul peak; 100-130 ms per member-step packed at 1-16
    # members against 90-120 ms solo, and 0.7x sequential fits at 32), so members are fitted one
    # by one there and packed on an accelerator
    packable = True
    pack_on_cpu = False

    settings_class = CharGPTSettings

    def __init__(self, settings: CharGPTSettings, alphabet: str, vocab: list[str]):
        super().__init__(
            vocab, settings.conditional, settings.n_embd, settings.lr, settings.weight_decay
        )
        self.save_hyperparameters(settings.init_args() | {"alphabet": alphabet, "vocab": vocab})
        self.alphabet = alphabet
        self.stoi = {ch: i + 1 for i, ch in enumerate(alphabet)}  # 0 = start / end of text
        self.tok = nn.Embedding(len(alphabet) + 1, settings.n_embd)
        self.pos = nn.Embedding(settings.block_size, settings.n_embd)
        self.blocks = nn.ModuleList(
            Block(settings.n_embd, settings.n_head, settings.dropout)
            for _ in range(settings.n_layer)
        )
        self.ln = nn.LayerNorm(settings.n_embd)
        self.head = nn.Linear(settings.n_embd, len(alphabet) + 1)
        # per caption word, a position embedding (zero at start; stored / settings.caption_gain)
        words = max(len(vocab), 1)
        self.caption_pos = nn.Parameter(torch.zeros(words, settings.block_size, settings.n_embd))

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

    def hidden(self, idx, c, bags):
        """Final hidden states of token ids `idx` under caption embedding `c` and caption bags."""
        t = idx.shape[1]
        pos = torch.arange(t, device=idx.device)
        x = self.tok(idx) + self.pos(pos)[None] + c[:, None, :]
        if self.conditional:
            steer = torch.einsum("bw,wtd->btd", bags, self.caption_pos[:, :t])
            x = x + self.hparams.caption_gain * steer
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
        logits = self.head(self.hidden(inp, self.cond(batch), batch["bags"]))
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
        bags = super().prepare({"caption": list(prompts)})["bags"]
        for c, bag, seed in zip(conds, bags, seeds, strict=True):
            gen = torch.Generator().manual_seed(int(seed))
            idx = torch.zeros(1, 1, dtype=torch.long, device=self.device)
            out = []
            for _ in range(self.hparams.block_size - 1):
                logits = (
                    self.head(self.hidden(idx, c[None], bag[None]))[0, -1]
                    / self.hparams.temperature
                )
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
        h = self.hidden(inp, self.cond(batch), batch["bags"])
        mask = (tgt >= 0).float()[:, :, None]
        return (h * mask).sum(1) / mask.sum(1)

    def packed_loss(self, params: dict, batch: dict, noise: dict) -> torch.Tensor | None:
        """The training loss of M members at once, (M, B): `params` are the members' parameters
        stacked on a leading member dimension (`torch.func.stack_module_state` names), `batch`
        the members' prepared batches stacked likewise (`inp`, `tgt`, `bags`: (M, B, ...)). The
        same arithmetic as `loss`, written with batched matrix products; reads only hyperparameters
        from `self`, so a structure-only (meta) copy serves. None with dropout (its random masks
        are not drawn here): the pack then vmaps `loss`."""
        hp = self.hparams
        if hp.dropout:
            return None
        inp, tgt, bags = batch["inp"], batch["tgt"], batch["bags"]
        members, t = inp.shape[0], inp.shape[2]
        rows = torch.arange(members, device=inp.device)[:, None, None]
        x = params["tok.weight"][rows, inp] + params["pos.weight"][:, None, :t]
        if self.conditional:
            c = embed_bags(bags, params)
            steer = torch.einsum("mbw,mwtd->mbtd", bags, params["caption_pos"][:, :, :t])
            x = x + c[:, :, None, :] + hp.caption_gain * steer
        heads = hp.n_head
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        for i in range(hp.n_layer):
            p = f"blocks.{i}."
            qkv = linear(layer_norm(x, params, p + "ln1"), params, p + "qkv")
            m, b, _, d = x.shape
            q, k, v = qkv.view(m, b, t, 3, heads, d // heads).permute(3, 0, 1, 4, 2, 5)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            weights = F.softmax(scores.masked_fill(causal, float("-inf")), dim=-1)
            x = x + linear((weights @ v).transpose(2, 3).reshape(m, b, t, d), params, p + "proj")
            h = F.gelu(linear(layer_norm(x, params, p + "ln2"), params, p + "mlp.0"))
            x = x + linear(h, params, p + "mlp.2")
        logits = linear(layer_norm(x, params, "ln"), params, "head")
        flat = logits.flatten(0, 1).transpose(1, 2)
        nll = F.cross_entropy(flat, tgt.flatten(0, 1), ignore_index=-1, reduction="none")
        nll = nll.view(members, -1, t)
        return nll.sum(2) / (tgt >= 0).sum(2)
