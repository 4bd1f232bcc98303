"""How good are the generations? Numbers that need no human eye.

- images with labels: the judge is the small label CNN of `models.classifier`, fitted once on
  every item of the dataset (train and validation splits, 20 epochs, seed 0) and cached by
  signature under `<output root>/embedders/classifier-<sig>` -- the same network the `classifier`
  embedder uses with its default settings. A prompt's class is the class most common among the
  items whose caption holds every word of the prompt; prompts that match no caption are left out.
  - `prompt_match` (higher is better, 1 at most): the fraction of outputs the CNN assigns to the
    prompt's class;
  - `frechet` (lower is better, 0 at least): the Fréchet distance between Gaussians fitted to the
    CNN's 64 features of the outputs and of the held-out (validation) images of the prompted
    classes (as FID does in Inception space);
  - `frechet_train`: the same distance for real training images, as many per class as there are
    outputs per class: the value that real images reach with this sample size (the estimate is
    biased upwards for small samples, so `frechet` is read against it, not against 0).
- texts: `novel` (fraction not in the training data), `in_prompt_list` (fraction found among the
  items whose caption is the prompt, e.g. real female first names for "female first name"),
  `mean_length`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..data import DataBundle
from ..models.classifier import cached_classifier, classifier_features, frechet_distance, predict
from ..models.text_encoder import caption_tokens


def prompt_labels(bundle: DataBundle, prompts: list[str]) -> list[int | None]:
    """Each prompt's class: the most common label among the items whose caption holds every word
    of the prompt (None when no caption does)."""
    words = [set(caption_tokens(cap)) for cap in bundle.full["caption"]]
    labels = list(bundle.full["label"])
    found: list[int | None] = []
    for prompt in prompts:
        want = set(caption_tokens(prompt))
        hits = Counter(lab for ws, lab in zip(words, labels, strict=True) if want <= ws)
        found.append(int(hits.most_common(1)[0][0]) if hits else None)
    return found


def _images(ds) -> np.ndarray:
    """The images as one (N, C, H, W) array, formatted as one batch (reading the column row by row
    takes ~1 s per 2,000 items)."""
    return np.asarray(ds.with_format("numpy", columns=["image"])[:]["image"], dtype=np.float32)


def quality(bundle: DataBundle, prompts: list[str], outputs, root: Path | str) -> dict[str, float]:
    """The numbers for `outputs` ((prompts, m, C, H, W) images or lists of texts, one row per
    prompt); `root` is the output root, where the judging classifier is cached."""
    if isinstance(outputs, np.ndarray):
        return image_quality(bundle, prompts, outputs, root)
    return text_quality(bundle, prompts, outputs)


def image_quality(
    bundle: DataBundle, prompts: list[str], outputs: np.ndarray, root: Path | str
) -> dict[str, float]:
    if "label" not in bundle.full.column_names:
        return {}
    net, _ = cached_classifier(
        _images(bundle.full), np.asarray(bundle.full["label"]), bundle.full_fingerprint, root
    )
    wanted = prompt_labels(bundle, prompts)
    rows = [i for i, w in enumerate(wanted) if w is not None and w >= 0]  # -1: canaries
    if not rows:
        return {}
    generated = np.clip(np.asarray(outputs[rows], dtype=np.float32), 0.0, 1.0)
    generated = generated.reshape(-1, *generated.shape[2:])
    want = np.repeat([wanted[i] for i in rows], outputs.shape[1])
    scores = {"prompt_match": float((predict(net, generated) == want).mean())}
    return {**scores, **frechet_scores(net, bundle, generated, want)}


def frechet_scores(net, bundle: DataBundle, generated: np.ndarray, want: np.ndarray) -> dict:
    """`frechet` of the outputs and `frechet_train` of as many real training images per class,
    both against the validation images of the prompted classes; {} with fewer than two of
    those."""
    val_labels = np.asarray(bundle.val["label"])
    val_rows = np.flatnonzero(np.isin(val_labels, np.unique(want)))
    if len(val_rows) < 2 or len(generated) < 2:
        return {}
    reference = classifier_features(net, _images(bundle.val.select(val_rows)))
    train_labels = np.asarray(bundle.train["label"])
    rng = np.random.default_rng(0)
    picks = []
    for label, count in zip(*np.unique(want, return_counts=True), strict=True):
        pool = np.flatnonzero(train_labels == label)
        if len(pool):
            picks.append(rng.choice(pool, size=count, replace=count > len(pool)))
    scores = {"frechet": frechet_distance(classifier_features(net, generated), reference)}
    if picks:
        real = _images(bundle.train.select(np.concatenate(picks)))
        scores["frechet_train"] = frechet_distance(classifier_features(net, real), reference)
    return scores


def text_quality(bundle: DataBundle, prompts: list[str], outputs) -> dict[str, float]:
    known = set(bundle.train["text"])
    by_caption: dict[str, set[str]] = {}
    for text, cap in zip(bundle.full["text"], bundle.full["caption"], strict=True):
        by_caption.setdefault(cap, set()).add(text)
    flat = [(p, t) for p, row in zip(prompts, outputs, strict=True) for t in row]
    return {
        "novel": float(np.mean([t not in known for _, t in flat])),
        "in_prompt_list": float(np.mean([t in by_caption.get(p, set()) for p, t in flat])),
        "mean_length": float(np.mean([len(t) for _, t in flat])),
    }
