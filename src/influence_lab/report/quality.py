"""How good are the generations? Numbers that need no human eye.

- images with labels: a logistic-regression classifier fitted on the whole dataset labels each
  output; `prompt_match` is the fraction labelled as the prompt's class (the class most common
  among items whose caption holds every word of the prompt);
- texts: `novel` (fraction not in the training data), `in_prompt_list` (fraction found among the
  items whose caption is the prompt, e.g. real female first names for "female first name"),
  `mean_length`.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..data import DataBundle
from ..models.text_encoder import caption_tokens


def _prompt_label(bundle: DataBundle, prompt: str) -> int | None:
    words = set(caption_tokens(prompt))
    labels = [
        lab
        for cap, lab in zip(bundle.full["caption"], bundle.full["label"], strict=True)
        if words <= set(caption_tokens(cap))
    ]
    return Counter(labels).most_common(1)[0][0] if labels else None


def quality(bundle: DataBundle, prompts: list[str], outputs) -> dict[str, float]:
    if isinstance(outputs, np.ndarray):
        if "label" not in bundle.full.column_names:
            return {}
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(bundle.full.with_format("numpy")["image"]).reshape(len(bundle.full), -1)
        clf = LogisticRegression(max_iter=2000).fit(x, bundle.full["label"])
        hits, total = 0, 0
        for i, prompt in enumerate(prompts):
            want = _prompt_label(bundle, prompt)
            if want is None:
                continue
            pred = clf.predict(outputs[i].reshape(len(outputs[i]), -1))
            hits += int((pred == want).sum())
            total += len(pred)
        return {"prompt_match": hits / total} if total else {}
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
