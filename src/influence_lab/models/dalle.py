"""A small DALL-E (Ramesh et al. 2021; the model class of the paper this tool reproduces): a
discrete image tokenizer (models/tokenizer.py) and a decoder-only transformer over the caption's
word tokens followed by the image's tokens, trained with the caption as a prefix.

The details follow DALLE-pytorch (lucidrains), the implementation the paper used: a begin token
before the caption, each padding position of the caption its own token (so padding carries its
position), separate embeddings for text and image tokens, learnt text positions and axial (row +
column) image positions, one output layer whose text positions are scored over the text tokens and
image positions over the codebook, the loss (text + 7 x image) / 8, and sampling of the image
tokens by Gumbel-max over the top half of the logits (`filter_thres` 0.5) at `temperature` 1.

The tokenizer is fitted once on every item of the pool (`fit_frozen`, a fixed seed, at one thread)
and frozen: its weights are buffers, so the transformer's optimiser, packs and gradient attributors
never see it, and `weights.pt` carries it. A counterfactual retrain removes items from the
transformer's training set, not from the tokenizer's, as the latent DDPM keeps its autoencoder
(`tok_refit=true` fits the tokenizer on each model's own training set instead).

The measured loss (the paper's output) is the negative log-likelihood of the image's tokens given
its caption, summed over the tokens (nats); it draws no noise.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InfluenceLabError
from ..settings.model import DalleSettings
from .frozen import fit_once, frozen, pool_images, require_fitted
from .protocol import GenerativeModel, seeded_uniform
from .text_encoder import caption_tokens
from .threads import FIT_THREADS, fixed_threads
from .tokenizer import VQTokenizer, downsample_factor, fit_tokenizer
from .transformer import Block


class DALLE(GenerativeModel):
    kind = "image"
    # members train as one vmapped pack, on a CPU too: measured on 6 December 2026 (digits, 8
    # retrains of the default model, 3 epochs, 2 cores shared with other jobs;
    # benchmarks/retrain_throughput.py --models dalle --members 8): 1.9 models/min packed against
    # 0.9 fitted one by one and 0.6 as a process each (c/b 2.0x, c/a 3.0x)
    packable = True
    pack_on_cpu = True

    settings_class = DalleSettings

    def __init__(self, settings: DalleSettings, data_shape: list[int], vocab: list[str]):
        super().__init__(vocab, False, settings.dim, settings.lr, settings.weight_decay)
        self.save_hyperparameters(settings.init_args() | {"data_shape": data_shape, "vocab": vocab})
        self.conditional = settings.conditional
        self.shape = tuple(data_shape)
        self.factor = downsample_factor(self.shape, settings.downsample)
        self.tokenizer = frozen(
            VQTokenizer(
                self.shape,
                settings.tok_hidden,
                settings.code_dim,
                settings.codebook_size,
                self.factor,
            )
        )
        self.register_buffer("tok_fitted", torch.tensor(False))
        self.register_buffer("tok_mse", torch.tensor(float("nan")))
        gh, gw = self.tokenizer.grid
        self.word_ids = {w: i + 1 for i, w in enumerate(vocab)}  # 0: the begin token
        self.n_text = (
            1 + len(vocab) + settings.text_len
        )  # begin, words, one padding token per position
        self.text_emb = nn.Embedding(self.n_text, settings.dim)
        self.text_pos = nn.Embedding(settings.text_len + 1, settings.dim)
        self.image_emb = nn.Embedding(settings.codebook_size, settings.dim)
        self.row_pos = nn.Embedding(gh, settings.dim)
        self.col_pos = nn.Embedding(gw, settings.dim)
        self.blocks = nn.ModuleList(
            Block(settings.dim, settings.heads, settings.dropout) for _ in range(settings.depth)
        )
        self.ln = nn.LayerNorm(settings.dim)
        self.head = nn.Linear(settings.dim, self.n_text + settings.codebook_size)
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        self.register_buffer("rows", rows.flatten(), persistent=False)
        self.register_buffer("cols", cols.flatten(), persistent=False)

    # --- the frozen tokenizer ----------------------------------------------------------------
    def tok_spec(self) -> dict:
        hp = self.hparams
        keys = ("codebook_size", "code_dim", "tok_hidden", "tok_epochs", "tok_lr", "tok_seed")
        spec = {k: hp[k] for k in keys}
        return {
            "shape": list(self.shape),
            "downsample": self.factor,
            "threads": FIT_THREADS,
            **spec,
        }

    def fit_frozen(self, bundle, cache_root: Path | None = None) -> None:
        """Fit the tokenizer on every item of `bundle.full` (on `bundle.train` with `tok_refit`),
        once per pool: the full model and its retrains share it, within a process and, through
        `cache_root`, across processes; at one thread, so its codes do not depend on the
        machine's thread count."""
        hp = self.hparams
        data = bundle.train if hp.tok_refit else bundle.full
        fingerprint = bundle.fingerprint if hp.tok_refit else bundle.full_fingerprint

        def train() -> dict[str, torch.Tensor]:
            images = pool_images(data, self.shape)
            with fixed_threads():
                net, mse = fit_tokenizer(
                    images,
                    self.shape,
                    hp.tok_hidden,
                    hp.code_dim,
                    hp.codebook_size,
                    self.factor,
                    hp.tok_epochs,
                    hp.tok_lr,
                    hp.tok_seed,
                )
            state = {f"tokenizer.{k}": v.detach().clone() for k, v in net.state_dict().items()}
            return {**state, "tok_fitted": torch.tensor(True), "tok_mse": torch.tensor(mse)}

        state = fit_once("dalle-tokenizer", self.tok_spec(), fingerprint, cache_root, train)
        self.load_state_dict({**self.state_dict(), **state})

    def _check_fitted(self) -> None:
        require_fitted(self.tok_fitted, "tok_fitted", "DALLE's tokenizer")

    @torch.no_grad()
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return self.tokenizer.encode(images.to(self.tok_mse.device, torch.float32))

    # --- the sequence ------------------------------------------------------------------------
    def text_tokens(self, captions: list[str]) -> torch.Tensor:
        """(B, text_len + 1): the begin token, the caption's word ids, then a padding token per
        remaining position; all padding for an unconditional model. Unknown words are skipped."""
        length = self.hparams.text_len
        pads = 1 + len(self.word_ids) + torch.arange(length)
        out = torch.zeros(len(captions), length + 1, dtype=torch.long)
        for row, caption in enumerate(captions):
            words = caption_tokens(caption)
            if len(words) > length:
                raise InfluenceLabError(
                    f"the caption '{caption}' has {len(words)} words but model.text_len is "
                    f"{length}; set model.text_len={len(words)} or more."
                )
            ids = [self.word_ids[w] for w in words if w in self.word_ids]
            if not self.conditional:
                ids = []
            out[row, 1:] = pads
            out[row, 1 : len(ids) + 1] = torch.tensor(ids, dtype=torch.long)
        return out.to(self.device)

    def hidden(self, txt: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """Final hidden states of [text tokens ; the first img.shape[1] image tokens]."""
        m = img.shape[1]
        x_t = self.text_emb(txt) + self.text_pos.weight[None, : txt.shape[1]]
        x_i = self.image_emb(img) + (self.row_pos(self.rows[:m]) + self.col_pos(self.cols[:m]))
        x = torch.cat([x_t, x_i], 1)
        for block in self.blocks:
            x = block(x)
        return self.ln(x)

    def prepare(self, batch: dict) -> dict:
        """The caption's and the image's tokens, computed once outside `vmap` (packs and the
        per-example gradients never run the tokenizer)."""
        batch = super().prepare(batch)
        if "txt" not in batch:
            batch = {
                **batch,
                "txt": self.text_tokens(list(batch["caption"])),
                "img": self.image_tokens(batch["content"]),
            }
        return batch

    def _nll(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token negative log-likelihoods of the caption's tokens after the begin token
        (B, text_len) and of the image's tokens (B, n_tokens)."""
        batch = self.prepare(batch)
        txt, img = batch["txt"], batch["img"]
        length = txt.shape[1] - 1
        logits = self.head(self.hidden(txt, img[:, :-1]))
        text_logits = logits[:, :length, : self.n_text]
        image_logits = logits[:, length:, self.n_text :]
        text_nll = F.cross_entropy(text_logits.transpose(1, 2), txt[:, 1:], reduction="none")
        image_nll = F.cross_entropy(image_logits.transpose(1, 2), img, reduction="none")
        return text_nll, image_nll

    def loss(self, batch, noise):
        """DALL-E's training loss: (text + w x image) / (1 + w), token means, per example."""
        text_nll, image_nll = self._nll(batch)
        w = self.hparams.loss_img_weight
        return (text_nll.mean(1) + w * image_nll.mean(1)) / (1 + w)

    def measured_loss(self, batch, noise):
        """Negative log-likelihood of the image's tokens given its caption (nats); no noise."""
        return self._nll(batch)[1].sum(1)

    # --- sampling and the model's own space ---------------------------------------------------
    @torch.no_grad()
    def sample(self, prompts, seeds):
        """Image tokens one at a time after the prompt, each the Gumbel-max draw from the top
        (1 - filter_thres) of the logits at `temperature`, every random number of output i from
        its own seed; then decoded by the tokenizer."""
        self._check_fitted()
        hp = self.hparams
        n_tok, codes = self.tokenizer.n_tokens, hp.codebook_size
        txt = self.text_tokens(list(prompts))
        gumbel = torch.stack(
            [-torch.log(-torch.log(seeded_uniform(s, (n_tok, codes)))) for s in seeds]
        ).to(self.device)
        keep = max(int((1 - hp.filter_thres) * codes), 1)
        img = torch.zeros(len(seeds), 0, dtype=torch.long, device=self.device)
        for step in range(n_tok):
            logits = self.head(self.hidden(txt, img)[:, -1])[:, self.n_text :]
            top = logits.topk(keep, -1)
            filtered = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
            nxt = (filtered / hp.temperature + gumbel[:, step]).argmax(-1)
            img = torch.cat([img, nxt[:, None]], 1)
        return self.tokenizer.decode(img)

    @torch.no_grad()
    def embed(self, batch):
        """Mean final hidden state over the image's token positions, given its caption."""
        batch = self.prepare(batch)
        h = self.hidden(batch["txt"], batch["img"])
        return h[:, batch["txt"].shape[1] :].mean(1)
