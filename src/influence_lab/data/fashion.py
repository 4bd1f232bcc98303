"""Fashion-MNIST (Zalando's 70,000 28x28 grey product images in 10 classes, MIT licence) read from
the four standard idx files, as Debian's `dataset-fashion-mnist` installs them.

The idx format is four lines of numpy (a magic number, the sizes, the bytes), so it is read here
directly rather than through torchvision, which would add a large dependency for nothing else.

Captions name the class and three measured attributes, each a tercile within the item's class
(so a "wide" sandal is wide for a sandal), the middle tercile left unsaid:
- tone: mean brightness of the product's pixels (ink > 0.1): "dark" / "light";
- width: the product's horizontal extent, the span (interpolated between columns) from 5% to 95%
  of its ink, left to right: "narrow" / "wide";
- texture: mean absolute difference between horizontally and vertically neighbouring pixels
  inside the product: "plain" / "patterned".
e.g. "a dark, wide ankle boot", "a light, narrow, patterned shirt".
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import InfluenceLabError
from ..settings.data import FASHION_CLASSES as CLASSES
from ..settings.data import FASHION_PATH as DEFAULT_PATH
from ..settings.data import fashion_class

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
INK = 0.1  # a pixel brighter than this belongs to the product
HOW_TO_GET = (
    "install Debian's package (as root: apt-get install dataset-fashion-mnist, or make data), or "
    "put the four standard files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into a folder named by "
    "data.source.path"
)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The array in one idx file (gzip-compressed or not): uint8 images (n, 28, 28) or labels
    (n,)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InfluenceLabError(
            f"{path} cannot be read as an idx file ({exc}); {HOW_TO_GET}."
        ) from None
    dims = 3 if magic == IMAGE_MAGIC else 1
    header = 4 + 4 * dims
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise InfluenceLabError(
            f"{path} is not a Fashion-MNIST {'image' if dims == 3 else 'label'} file "
            f"(magic number {found}, expected {magic}); {HOW_TO_GET}."
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(raw) != header + int(np.prod(shape)):
        raise InfluenceLabError(
            f"{path} is truncated or corrupt ({len(raw) - header} bytes of data for "
            f"shape {shape}); {HOW_TO_GET}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) float32 in [0, 1] and labels (n,) of the official `train` or `test`
    file."""
    image_file, label_file = (folder / name for name in FILES[split])
    missing = [p.name for p in (image_file, label_file) if not p.is_file()]
    if missing:
        raise InfluenceLabError(
            f"Fashion-MNIST is not in data.source.path '{folder}' (missing "
            f"{', '.join(missing)}); {HOW_TO_GET}."
        )
    images, labels = read_idx(image_file, IMAGE_MAGIC), read_idx(label_file, LABEL_MAGIC)
    if len(images) != len(labels):
        raise InfluenceLabError(
            f"{image_file.name} holds {len(images)} images but {label_file.name} "
            f"{len(labels)} labels; {HOW_TO_GET}."
        )
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


def class_index(value) -> int:
    """A class given by name (case-insensitive, '_' for ' ') or by index 0-9."""
    index = fashion_class(value)
    if index is None:
        raise InfluenceLabError(
            f"data.source.classes has {value!r}; the classes are "
            f"{', '.join(f'{i} {c}' for i, c in enumerate(CLASSES))}."
        )
    return index


def select(labels: np.ndarray, classes, per_class: int | None) -> np.ndarray:
    """Indices of the first `per_class` items of each chosen class, in file order."""
    chosen = [class_index(c) for c in classes] if classes else list(range(len(CLASSES)))
    keep = []
    for c in chosen:
        idx = np.flatnonzero(labels == c)
        if per_class is not None and per_class > len(idx):
            raise InfluenceLabError(
                f"data.source.per_class is {per_class} but class '{CLASSES[c]}' holds only "
                f"{len(idx)} items in this file; use at most {len(idx)}."
            )
        keep.append(idx if per_class is None else idx[:per_class])
    return np.sort(np.concatenate(keep))


def _tercile_words(values: np.ndarray, labels: np.ndarray, low: str, high: str) -> list[str]:
    out = [""] * len(values)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        lo, hi = np.quantile(values[idx], [1 / 3, 2 / 3])
        for i in idx:
            out[i] = low if values[i] < lo else high if values[i] > hi else ""
    return out


def attributes(images: np.ndarray) -> dict[str, np.ndarray]:
    """Tone, width and texture of each (H, W) image (see the module docstring)."""
    ink = images > INK
    area = ink.reshape(len(images), -1).sum(1).clip(min=1)
    tone = (images * ink).reshape(len(images), -1).sum(1) / area
    columns = images.sum(1)  # (n, W)
    cdf = np.cumsum(columns, 1) / columns.sum(1, keepdims=True).clip(min=1e-9)
    cols = np.arange(images.shape[2], dtype=np.float64)
    width = np.array([np.interp(0.95, c, cols) - np.interp(0.05, c, cols) for c in cdf])
    dx = np.abs(np.diff(images, axis=2))[:, :-1, :] * ink[:, :-1, :-1]
    dy = np.abs(np.diff(images, axis=1))[:, :, :-1] * ink[:, :-1, :-1]
    texture = (dx + dy).reshape(len(images), -1).sum(1) / area
    return {"tone": tone, "width": width, "texture": texture}


def fashion_captions(images: np.ndarray, labels: np.ndarray) -> list[str]:
    """'a dark, wide ankle boot' for each (H, W) image in [0, 1] (terciles within its class)."""
    a = attributes(images)
    words = [
        _tercile_words(a["tone"], labels, "dark", "light"),
        _tercile_words(a["width"], labels, "narrow", "wide"),
        _tercile_words(a["texture"], labels, "plain", "patterned"),
    ]
    captions = []
    for i, label in enumerate(labels):
        said = [w[i] for w in words if w[i]]
        text = f"{', '.join(said)} {CLASSES[int(label)]}" if said else CLASSES[int(label)]
        captions.append(f"{'an' if text[0] in 'aeiou' else 'a'} {text}")
    return captions


def fashion_items(
    path: str = DEFAULT_PATH, classes=None, per_class: int | None = None, split: str = "train"
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Ids, images (n, 1, 28, 28), captions and labels of Fashion-MNIST from `path`: the official
    `train` file (the pool) or `test` file (held-out targets), the chosen `classes` (names or
    indices; None = all ten), the first `per_class` items of each. Ids `fashion-train-00042` (the
    row in the official file) are stable."""
    if split not in FILES:
        raise InfluenceLabError(f"data.source.split is {split!r}; allowed values are train, test.")
    images, labels = read_split(Path(str(path)).expanduser(), split)
    keep = select(labels, classes, per_class)
    images, labels = images[keep], labels[keep]
    ids = [f"fashion-{split}-{i:05d}" for i in keep]
    return ids, images[:, None], fashion_captions(images, labels), labels
