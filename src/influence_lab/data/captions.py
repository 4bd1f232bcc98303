"""Captions for the digits, generated from the label and measured attributes of each image.

Stroke weight compares an image's ink with the other images of its class (terciles), so a bold
"1" and a bold "8" are both among the heaviest of their kind. Slant is the shear of the ink's
second moments: the horizontal shift of the strokes per row, upward positive to the right,
measured from the dataset's median shear (the writers' typical stance reads as upright).
"""

from __future__ import annotations

import numpy as np

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SLANT_THRESHOLD = 0.12  # |shear - median shear| below this reads as upright


def slant(images: np.ndarray) -> np.ndarray:
    """Shear of each (H, W) image: > 0 when the top leans right."""
    n, h, w = images.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    mass = images.reshape(n, -1).sum(1) + 1e-9
    xbar = (images * xs).reshape(n, -1).sum(1) / mass
    ybar = (images * ys).reshape(n, -1).sum(1) / mass
    dx = xs[None] - xbar[:, None, None]
    dy = ys[None] - ybar[:, None, None]
    mu11 = (images * dx * dy).reshape(n, -1).sum(1)
    mu02 = (images * dy * dy).reshape(n, -1).sum(1) + 1e-9
    # rows grow downward, so a stroke whose top is to the right has negative covariance
    return -mu11 / mu02


def stroke_weight(images: np.ndarray, labels: np.ndarray) -> list[str]:
    ink = images.reshape(len(images), -1).sum(1)
    out = ["regular"] * len(images)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        lo, hi = np.quantile(ink[idx], [1 / 3, 2 / 3])
        for i in idx:
            out[i] = "thin" if ink[i] < lo else "bold" if ink[i] > hi else "regular"
    return out


def digit_captions(images: np.ndarray, labels: np.ndarray) -> list[str]:
    """'digit seven, bold, leaning right' for each (H, W) image in [0, 1]."""
    weights = stroke_weight(images, labels)
    shears = slant(images)
    shears = shears - np.median(shears)
    captions = []
    for label, weight, shear in zip(labels, weights, shears, strict=True):
        lean = (
            "leaning right"
            if shear > SLANT_THRESHOLD
            else "leaning left"
            if shear < -SLANT_THRESHOLD
            else "upright"
        )
        captions.append(f"digit {NUMBER_WORDS[int(label)]}, {weight}, {lean}")
    return captions
