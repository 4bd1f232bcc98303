"""Raw-space similarities between outputs and candidates, batched over all pairs.

Images (float arrays (N, C, H, W) in [0, 1]): pixel cosine, L2 distance, MSE and MAE, SSIM and
intensity-histogram correlation. Texts: normalised edit similarity (rapidfuzz) and character
n-gram cosine (scikit-learn). Every function returns an (m, n) matrix for m outputs and n
candidates.

SSIM is written here because scikit-image scores one pair per call and attribution scores every
output against every candidate (54,000 per output on the whole Fashion-MNIST file); it follows
scikit-image's default (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03) and is
tested against `skimage.metrics.structural_similarity`. The uniform window is separable, so the
window means are two matrix products per image stack, and an image's own means (x, x^2) are
computed once for all its pairs: only the means of the pair's product are per pair.

Every image metric runs over blocks of candidates holding at most `PAIR_BLOCK` values of output x
candidate x pixel each, so its memory does not grow with the number of candidates (SSIM of 8
outputs against 54,000 Fashion-MNIST items at once asked for 82 GB), and its temporaries stay
small enough to be reused rather than page-faulted in afresh (cosine and histograms of 54,000
items in one piece took 3 s and 6 s here, in blocks 0.2 s); each pair is computed as before, so
the blocked result equals the one-block result: bitwise for the per-pair metrics, to 1e-13 for
cosine and L2, whose matrix products may sum in another order (tests/test_raw_blocks.py).
"""

from __future__ import annotations

import functools

import numpy as np

PAIR_BLOCK = 1 << 21  # output x candidate x pixel values per block (16 MB per float64 temporary)


def blocked(fn):
    """`fn(a, b) -> (m, n)`, computed over blocks of the candidates b so that a block holds at
    most PAIR_BLOCK values of output x candidate x pixel."""

    def over_blocks(a, b, *args, **kwargs):
        per_candidate = len(a) * max(1, int(np.prod(np.shape(b)[1:])))
        step = max(1, PAIR_BLOCK // per_candidate)
        if len(b) <= step:
            return fn(a, b, *args, **kwargs)
        return np.concatenate(
            [fn(a, b[i : i + step], *args, **kwargs) for i in range(0, len(b), step)], axis=1
        )

    return functools.wraps(fn)(over_blocks)


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


@blocked
def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _flat(a), _flat(b)
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return a @ b.T


@blocked
def l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _flat(a), _flat(b)
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0))


def mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return l2(a, b) ** 2 / _flat(a).shape[1]


@blocked
def mae(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _flat(a), _flat(b)
    return np.abs(a[:, None, :] - b[None, :, :]).mean(2)


def _ssim_window(h: int, w: int) -> int:
    win = min(7, h, w)
    return win if win % 2 == 1 else win - 1


@functools.lru_cache(maxsize=8)
def _box(size: int, win: int) -> np.ndarray:
    """(size, size - win + 1): column j averages pixels j .. j + win - 1 (one axis of the
    uniform window)."""
    out = np.zeros((size, size - win + 1))
    for j in range(size - win + 1):
        out[j : j + win, j] = 1.0 / win
    return out


def _window_means(z: np.ndarray, win: int) -> np.ndarray:
    """The mean of every valid win x win window of each image z (N, h, w), (N, windows): the
    uniform filter as two matrix products (it is separable), rows then columns."""
    n, h, w = z.shape
    across = (z.reshape(n * h, w) @ _box(w, win)).reshape(n, h, -1)
    down = np.ascontiguousarray(across.transpose(0, 2, 1)).reshape(-1, h) @ _box(h, win)
    return down.reshape(n, -1)


def _ssim_map(ux, uy, uxx, uyy, uxy, n: int, data_range: float) -> np.ndarray:
    """Mean SSIM over the windows from the window means of x, y, x^2, y^2 and xy."""
    cov_norm = n / (n - 1)  # sample covariance, as scikit-image
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(-1)


def ssim_pairs(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Mean SSIM of each pair (x[i], y[i]), images (P, C, H, W); channels averaged."""
    p, c, h, w = x.shape
    win = _ssim_window(h, w)
    x = np.asarray(x, dtype=np.float64).reshape(p * c, h, w)
    y = np.asarray(y, dtype=np.float64).reshape(p * c, h, w)
    means = [_window_means(z, win) for z in (x, y, x * x, y * y, x * y)]
    return _ssim_map(*means, win * win, data_range).reshape(p, c).mean(1)


@blocked
def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of every output a (m, C, H, W) against every candidate b (n, C, H, W). The window
    means of each image (x, x^2) are computed once, not once per pair; only those of xy are per
    pair."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    (m, c, h, w), n = a.shape, len(b)
    win = _ssim_window(h, w)
    out = np.zeros((m, n))
    for ch in range(c):
        x, y = a[:, ch], b[:, ch]
        ux, uxx = _window_means(x, win), _window_means(x * x, win)
        uy, uyy = _window_means(y, win), _window_means(y * y, win)
        for i in range(m):
            uxy = _window_means(y * x[i], win)
            out[i] += _ssim_map(ux[i], uy, uxx[i], uyy, uxy, win * win, 1.0)
    return out / c


def histogram(a: np.ndarray, bins: int = 16) -> np.ndarray:
    flat = np.clip(_flat(a), 0, 1)
    idx = np.minimum((flat * bins).astype(np.int64), bins - 1)
    idx += np.arange(len(flat))[:, None] * bins  # one bincount for every image: row r's bins
    counts = np.bincount(idx.ravel(), minlength=len(flat) * bins)
    return counts.reshape(len(flat), bins).astype(np.float64)


@blocked
def hist_corr(a: np.ndarray, b: np.ndarray, bins: int = 16) -> np.ndarray:
    """Pearson correlation of intensity histograms (OpenCV's HISTCMP_CORREL)."""
    ha, hb = histogram(a, bins), histogram(b, bins)
    ha = ha - ha.mean(1, keepdims=True)
    hb = hb - hb.mean(1, keepdims=True)
    denom = np.linalg.norm(ha, axis=1)[:, None] * np.linalg.norm(hb, axis=1)[None] + 1e-12
    return (ha @ hb.T) / denom


@blocked
def ssim_of_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The original paper's 'SSIM' feature: SSIM between the saturated difference max(A - B, 0)
    (grey) and a black image, on the 0-255 scale. Kept only for the `paper` scorer."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    m, n = len(a), len(b)
    diff = np.maximum(a[:, None] - b[None], 0).mean(2, keepdims=True) * 255.0
    diff = diff.reshape(m * n, 1, *diff.shape[-2:])
    return ssim_pairs(diff, np.zeros_like(diff), data_range=255.0).reshape(m, n)


IMAGE_METRICS = {"cosine": cosine, "l2": l2, "ssim": ssim, "hist": hist_corr}
IMAGE_DISTANCES = {"l2"}  # lower is more similar


def edit_similarity(a: list[str], b: list[str]) -> np.ndarray:
    """1 - Levenshtein distance / max length, case-insensitive."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    return cdist(
        [s.lower() for s in a],
        [s.lower() for s in b],
        scorer=Levenshtein.normalized_similarity,
        dtype=np.float64,
    )


def ngram_cosine(a: list[str], b: list[str], n: tuple[int, int] = (1, 3)) -> np.ndarray:
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(analyzer="char_wb", ngram_range=n, lowercase=True).fit(list(a) + list(b))
    return cosine(vec.transform(a).toarray(), vec.transform(b).toarray())


TEXT_METRICS = {"edit": edit_similarity, "ngram": ngram_cosine}


def raw_similarities(outputs, candidates) -> dict[str, np.ndarray]:
    """All raw metrics for (m outputs) x (n candidates); distances stay distances."""
    metrics = IMAGE_METRICS if isinstance(outputs, np.ndarray) else TEXT_METRICS
    return {name: fn(outputs, candidates) for name, fn in metrics.items()}
