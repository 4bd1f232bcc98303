"""Raw-space similarities between outputs and candidates, batched over all pairs.

Images (float arrays (N, C, H, W) in [0, 1]): pixel cosine, L2 distance, MSE and MAE, SSIM and
intensity-histogram correlation. Texts: normalised edit similarity (rapidfuzz) and character
n-gram cosine (scikit-learn). Every function returns an (m, n) matrix for m outputs and n
candidates.

SSIM is written here with torch because scikit-image scores one pair per call and attribution
scores every output against every candidate (thousands of pairs per prompt); it follows
scikit-image's default (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03) and is
tested against `skimage.metrics.structural_similarity`.

The metrics that compare every pixel of every (output, candidate) pair (MAE, SSIM, the paper's
SSIM-of-difference) run over blocks of candidates holding at most `PAIR_BLOCK` values each, so
their memory does not grow with the number of candidates (SSIM of 8 outputs against 54,000
Fashion-MNIST items at once asked for 82 GB); each pair is computed as before, so the blocked
result equals the one-block result.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

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


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _flat(a), _flat(b)
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return a @ b.T


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


def ssim_pairs(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of each pair (x[i], y[i]), images (P, C, H, W); channels averaged."""
    p, c, h, w = x.shape
    win = _ssim_window(h, w)
    x = x.reshape(p * c, 1, h, w).double()
    y = y.reshape(p * c, 1, h, w).double()
    kernel = torch.full((1, 1, win, win), 1.0 / win**2, dtype=torch.float64)
    n = win * win
    cov_norm = n / (n - 1)
    ux, uy = F.conv2d(x, kernel), F.conv2d(y, kernel)
    uxx, uyy, uxy = F.conv2d(x * x, kernel), F.conv2d(y * y, kernel), F.conv2d(x * y, kernel)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).reshape(p, c).mean(1)


@blocked
def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta, tb = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    m, n = len(ta), len(tb)
    out = ssim_pairs(ta.repeat_interleave(n, 0), tb.repeat(m, 1, 1, 1))
    return out.reshape(m, n).numpy()


def histogram(a: np.ndarray, bins: int = 16) -> np.ndarray:
    flat = np.clip(_flat(a), 0, 1)
    idx = np.minimum((flat * bins).astype(int), bins - 1)
    out = np.zeros((len(flat), bins))
    for row in range(len(flat)):
        out[row] = np.bincount(idx[row], minlength=bins)
    return out


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
    ta, tb = torch.as_tensor(np.asarray(a)).double(), torch.as_tensor(np.asarray(b)).double()
    m, n = len(ta), len(tb)
    diff = (ta[:, None] - tb[None]).clamp(min=0).mean(2, keepdim=True) * 255.0
    diff = diff.reshape(m * n, 1, *diff.shape[-2:])
    return ssim_pairs(diff, torch.zeros_like(diff), data_range=255.0).reshape(m, n).numpy()


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
