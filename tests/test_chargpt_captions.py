"""CharGPT follows rare captions: a caption held by a handful of training texts steers sampling.

Five texts captioned "zorblat name" (all starting "Zorb") are planted among 1,000 first names; the
model with its default settings (20 epochs) must draw "Zorb..." for most samples of that caption
and not for an ordinary caption. Measured (seed 0): 16 of 20 with `caption_gain` 30 (the default),
0 of 20 with `caption_gain` 0 (the model before per-word position embeddings); 0 of 20 "Zorb..."
for "female first name" either way.
"""

from __future__ import annotations

import pytest
import torch
from datasets import concatenate_datasets

from influence_lab.data.dataset import DataBundle, split_indices
from influence_lab.data.sources import load_names, text_dataset
from influence_lab.models.build import build_model
from influence_lab.models.threads import fixed_threads
from influence_lab.settings.model import CharGPTSettings
from influence_lab.settings.trainer import TrainerSettings
from influence_lab.training.fit import fit

PLANTED = ["Zorbla", "Zorblin", "Zorbex", "Zorbana", "Zorbulo"]
RARE = "zorblat name"


def planted_names(per_list: int = 500) -> DataBundle:
    """`per_list` male and `per_list` female first names (90 % train) plus the planted texts."""
    full = load_names(max_per_list=per_list)
    train_idx, val_idx = split_indices(len(full), 0.1, 0)
    n = len(PLANTED)
    rows = text_dataset([f"planted-{i}" for i in range(n)], PLANTED, [RARE] * n, [3] * n)
    train = concatenate_datasets([full.select(train_idx), rows])
    full = concatenate_datasets([full, rows])
    return DataBundle("names", "text", full, train, full.select(val_idx), [])


def resembles(text: str) -> bool:
    """Shares the planted texts' prefix (no real first name starts with "Zorb")."""
    return text.startswith("Zorb")


def test_no_real_name_has_the_planted_prefix():
    assert not any(resembles(t) for t in load_names()["text"])


def test_caption_position_embeddings_start_at_zero_and_follow_the_caption_words():
    bundle = planted_names(per_list=20)
    model = build_model(CharGPTSettings(), bundle, seed=0)
    plain = build_model(CharGPTSettings(caption_gain=0.0), bundle, seed=0)
    batch = {"content": PLANTED[:2] + ["Anna"], "caption": [RARE, RARE, "female first name"]}
    # untrained, the model is the plain one (same initial weights, steering zero)
    assert torch.equal(model.example_loss(batch), plain.example_loss(batch))
    model.example_loss(batch).sum().backward()
    grad = model.caption_pos.grad.abs().sum((1, 2))
    vocab = model.text.vocab
    assert vocab == ["female", "first", "male", "name", "zorblat"]
    # every word of the batch's captions gets gradient, "male" (in no caption here) none
    assert [bool(g > 0) for g in grad] == [True, True, False, True, True]


@pytest.mark.slow
def test_a_caption_of_five_texts_steers_most_samples(tmp_path):
    with fixed_threads(1):  # restored after: later tests run at the machine's count
        _steers_most_samples(tmp_path)


def _steers_most_samples(tmp_path):
    bundle = planted_names()
    assert len(bundle.train) == 905 and len(bundle.full) == 1005
    settings = CharGPTSettings()
    assert settings.fit.max_epochs == 20 and settings.caption_gain == 30.0
    model = build_model(settings, bundle, seed=0)
    fit(model, bundle, settings.fit, TrainerSettings(progress_bar=False), tmp_path, seed=0)
    model.eval()
    seeds = list(range(100, 120))
    rare = model.sample([RARE] * 20, seeds)
    ordinary = model.sample(["female first name"] * 20, seeds)
    assert sum(map(resembles, rare)) >= 11, rare  # measured 16 of 20
    assert sum(map(resembles, ordinary)) <= 1, ordinary  # measured 0 of 20
