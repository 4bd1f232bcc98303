"""The prompt filter B(x, x_i): how well each training caption matches the prompt.

TF-IDF cosine (scikit-learn, the original paper's choice) or BM25 (bm25s). `pool` keeps the
`pool_size` best-matching items (the paper used 100); with no captions at all B is 1 everywhere.
"""

from __future__ import annotations

import numpy as np

from ..errors import InfluenceLabError
from ..settings.attribution import FILTERS

METHODS = FILTERS  # declared in settings.attribution
WORD = r"(?u)\b\w+\b"  # single-character words count too


class PromptFilter:
    def __init__(self, captions: list[str], method: str = "tfidf"):
        if method not in METHODS:
            raise InfluenceLabError(
                f"attribution.filter is '{method}'; allowed values are {', '.join(METHODS)}."
            )
        self.method = method
        self.n = len(captions)
        self.empty = not any(c.strip() for c in captions)
        if self.empty:
            return
        if method == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            # the paper used the default TfidfVectorizer; single-character words are kept here too
            self.vectorizer = TfidfVectorizer(token_pattern=WORD)
            self.matrix = self.vectorizer.fit_transform(captions)
        else:
            import bm25s

            self.bm25 = bm25s.BM25()
            self.bm25.index(
                bm25s.tokenize(captions, stopwords=None, show_progress=False, token_pattern=WORD),
                show_progress=False,
            )

    def scores(self, prompt: str) -> np.ndarray:
        """B for every training item, in [0, 1] (BM25 divided by its best score)."""
        if self.empty:
            return np.ones(self.n)
        if self.method == "tfidf":
            query = self.vectorizer.transform([prompt])
            return np.asarray((self.matrix @ query.T).todense()).ravel()  # rows are L2-normalised
        import bm25s

        tokens = bm25s.tokenize(
            [prompt], stopwords=None, show_progress=False, return_ids=False, token_pattern=WORD
        )[0]
        raw = np.asarray(self.bm25.get_scores(tokens), dtype=np.float64)
        return raw / raw.max() if raw.max() > 0 else raw

    def pool(self, prompt: str, size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the `size` best items (all items if None), best first, and their B.

        Items tied with the last one kept are kept too: a pool never drops an item whose caption
        matches the prompt exactly as well as one that is in it (e.g. thousands of names that all
        share the caption "female first name").
        """
        b = self.scores(prompt)
        order = np.argsort(-b, kind="stable")
        if size is not None and int(size) < len(order):
            cutoff = b[order[int(size) - 1]]
            order = order[b[order] >= cutoff - 1e-12]
        return order, b[order]
