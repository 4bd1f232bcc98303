"""The search methods: similarity between a prompt's outputs and every training item, in the raw
space, the latent spaces (faiss) and the caption space of the prompt filter (`scorers.py` holds
the signals and the paper's features; `evidence.py` measures them once per prompt for every
search method at once). Each class turns one prompt's evidence into scores of its candidates."""

from __future__ import annotations

import numpy as np

from ...errors import InfluenceLabError
from ...settings.attribution import paper_space
from ..scorers import PAPER_WEIGHTS, paper_features, signal, signal_names
from .attributor import Traits
from .evidence import EvidenceAttributor


class Fused(EvidenceAttributor):
    """Each signal min-max normalised over the prompt filter's pool, a weighted mean alpha(y, i)
    (`attribution.fused_weights`), Influence(i) = sum_y alpha(y, i) * B(x, i) over the pool."""

    traits = Traits(family="search", auto=("attribute",))

    def from_evidence(self, ev, weights):
        alpha = signal(ev, ev.pool, signal_names(ev), weights)
        return ev.pool, (alpha * ev.b[ev.pool][None]).sum(0)


class CaptionOnly(EvidenceAttributor):
    """The prompt filter's caption score B alone, over every item."""

    traits = Traits(family="search", auto=("attribute",))

    def from_evidence(self, ev, weights):
        return np.arange(len(ev.b)), ev.b.copy()


class RawOnly(EvidenceAttributor):
    """The raw-space signals, normalised and summed over the outputs, over every item."""

    traits = Traits(family="search", auto=("attribute",))
    raw_everywhere = True

    def from_evidence(self, ev, weights):
        every = np.arange(len(ev.b))
        return every, signal(ev, every, [f"raw_{k}" for k in ev.raw], {}).sum(0)


class LatentOnly(EvidenceAttributor):
    """Every searched latent space's cosine, normalised and summed, over every item."""

    traits = Traits(family="search", needs=("embedders",), auto=("attribute",))

    def from_evidence(self, ev, weights):
        every = np.arange(len(ev.b))
        return every, signal(ev, every, [f"latent_{k}" for k in ev.latent], {}).sum(0)


class LatentSpace(EvidenceAttributor):
    """`latent:<embedder>`: one latent space's cosine, normalised and summed, over every item."""

    traits = Traits(family="search")

    @classmethod
    def check(cls, settings, model_cls, option):
        embedders = list(settings.attribution.embedders)
        if option not in embedders:
            return (
                f"method latent:{option} names embedder '{option}', not in "
                f"attribution.embedders ({', '.join(embedders)})."
            )
        return None

    def prepare(self, context) -> None:
        super().prepare(context)
        embedders = list(context.attribution.embedders)
        if self.option not in embedders:
            raise InfluenceLabError(
                f"method {self.name} names embedder '{self.option}', not in "
                f"attribution.embedders ({', '.join(embedders)})."
            )

    def from_evidence(self, ev, weights):
        every = np.arange(len(ev.b))
        return every, signal(ev, every, [f"latent_{self.option}"], {}).sum(0)


class Paper(EvidenceAttributor):
    """The original code's fixed weighted sum of nine un-normalised features over the prompt
    filter's pool, averaged over the outputs (weights and order in `scorers.PAPER_WEIGHTS`;
    lower meant more similar there, so the sum is negated). Images only."""

    traits = Traits(family="search", needs=("images",), auto=("attribute",))

    @classmethod
    def check(cls, settings, model_cls, option):
        att = settings.attribution
        if att.paper_embedder not in ("auto", *att.embedders):
            return (
                f"attribution.paper_embedder '{att.paper_embedder}' is not in "
                "attribution.embedders."
            )
        return None

    @classmethod
    def spaces(cls, att, labelled, option):
        names = list(att.embedders)
        space = paper_space(att.paper_embedder, labelled)
        return names + ([] if space in names else [space])

    def add_evidence(self, ev, outs, content, queries, caches):
        att, labelled = self.context.attribution, self.context.labelled
        name = paper_space(att.paper_embedder, labelled)
        ev.paper = paper_features(
            outs, content[ev.pool], queries[name], caches[name].embeddings[ev.pool]
        )

    def from_evidence(self, ev, weights):
        if not ev.paper:
            raise InfluenceLabError("the paper scorer works on images only.")
        weighted = sum(PAPER_WEIGHTS[k] * ev.paper[k] for k in PAPER_WEIGHTS)  # (m, pool)
        return ev.pool, -weighted.mean(0)
