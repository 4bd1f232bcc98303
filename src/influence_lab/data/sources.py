"""Data sources. Each returns a `datasets.Dataset` with columns `id`, content (`image` as a
float32 (C, H, W) array in [0, 1], or `text`), `caption` and optionally `label`."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from datasets import Array3D, Dataset, Features, Value

from ..errors import InfluenceLabError
from ..settings.data import IMAGE_MODES
from ..store.paths import inside
from .captions import digit_captions
from .fashion import DEFAULT_PATH as FASHION_PATH
from .fashion import fashion_items

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_dataset(ids, images: np.ndarray, captions, labels=None) -> Dataset:
    images = np.asarray(images, dtype=np.float32)
    columns = {"id": list(ids), "image": images, "caption": list(captions)}
    features = {
        "id": Value("string"),
        "image": Array3D(shape=images.shape[1:], dtype="float32"),
        "caption": Value("string"),
    }
    if labels is not None:
        columns["label"] = [int(v) for v in labels]
        features["label"] = Value("int64")
    return Dataset.from_dict(columns, features=Features(features))


def text_dataset(ids, texts, captions, labels=None) -> Dataset:
    columns = {"id": list(ids), "text": list(texts), "caption": list(captions)}
    if labels is not None:
        columns["label"] = [int(v) for v in labels]
    return Dataset.from_dict(columns)


def load_digits(max_items: int | None = None) -> Dataset:
    """scikit-learn's bundled 1,797 8x8 digits, captioned by label, stroke weight and slant
    (`max_items` keeps the first n, for small experiments)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    captions = digit_captions(images, bunch.target)
    ids = [f"digit-{i:04d}" for i in range(len(images))]
    n = len(ids) if max_items is None else int(max_items)
    return image_dataset(ids[:n], images[:n, None], captions[:n], bunch.target[:n])


NAME_LISTS = {
    "male": ("first:male", "male first name"),
    "female": ("first:female", "female first name"),
}


def _read_names(path: str, limit: int | None = None) -> list[str]:
    out = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                out.append(line.split()[0].capitalize())
            if limit is not None and len(out) >= limit:
                break
    return out


def load_names(
    genders=("male", "female"), surnames: int = 0, max_per_list: int | None = None
) -> Dataset:
    """First names (and optionally the `surnames` most common surnames) from the `names` package.

    Captions are "male first name", "female first name" and "surname"; labels 0, 1, 2.
    """
    import names as names_pkg

    ids, texts, captions, labels = [], [], [], []
    for gender in genders:
        if gender not in NAME_LISTS:
            raise InfluenceLabError(
                f"data.source.genders has '{gender}'; allowed values are {sorted(NAME_LISTS)}."
            )
        key, caption = NAME_LISTS[gender]
        for name in _read_names(names_pkg.FILES[key], max_per_list):
            ids.append(f"{gender}-{name.lower()}")
            texts.append(name)
            captions.append(caption)
            labels.append(0 if gender == "male" else 1)
    if surnames:
        for name in _read_names(names_pkg.FILES["last"], surnames):
            ids.append(f"surname-{name.lower()}")
            texts.append(name)
            captions.append("surname")
            labels.append(2)
    if not ids:
        raise InfluenceLabError(
            "data.source selects no names; give data.source.genders or data.source.surnames."
        )
    return text_dataset(ids, texts, captions, labels)


def _to_array(img, size, mode: str) -> np.ndarray:
    from PIL import Image

    img = img.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _safe_id(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "item"


def _metadata_file(root: Path, name, where: str) -> Path:
    """The image a metadata.jsonl `file_name` names, which must be a relative path inside `root`:
    no absolute path or drive, no '..' (with '/' or '\\' as separator), no NUL, no link out."""
    text = name if isinstance(name, str) else None
    if (
        not text
        or "\x00" in text
        or PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).anchor
        or ".." in PureWindowsPath(text).parts
    ):
        raise InfluenceLabError(
            f"{where}: file_name {name!r} is not a relative path inside data.source.path ({root}); "
            f"file names must stay inside the folder (no absolute paths, no '..')."
        )
    return _inside_folder(root, root / text, f"{where}: file_name {name!r}")


def _inside_folder(root: Path, path: Path, what: str) -> Path:
    """`path` if it resolves (links followed) inside the data folder `root`: nothing outside the
    folder is ever read."""
    try:
        return inside(root, path, what)
    except InfluenceLabError:
        raise InfluenceLabError(
            f"{what} leads outside data.source.path ({root}); "
            f"every file of the dataset must lie inside "
            f"the folder (copy it in rather than linking to it)."
        ) from None


def _size(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check_mode(mode: str) -> str:
    if mode not in IMAGE_MODES:
        raise InfluenceLabError(
            f"data.source.mode is '{mode}'; allowed values are 'L' (grey) and 'RGB'."
        )
    return mode


def load_imagefolder(path: str, size=16, mode: str = "L", caption_column: str = "text") -> Dataset:
    """A folder of images, each with a same-named `.txt` caption beside it, or an HF-style
    `metadata.jsonl` (one `{"file_name": ..., "<caption_column>": ...}` per line)."""
    from PIL import Image

    _check_mode(mode)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InfluenceLabError(
            f"data.source.path '{path}' is not a directory; point it at a folder of images."
        )
    size = _size(size)
    metadata = root / "metadata.jsonl"
    if metadata.exists():
        entries = _metadata_entries(root, metadata, caption_column)
    else:
        entries = _caption_file_entries(root)
    if not entries:
        raise InfluenceLabError(
            f"data.source.path '{path}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    ids, images, captions = [], [], []
    seen: set[str] = set()
    for file, caption in entries:
        if not file.exists():
            raise InfluenceLabError(f"{metadata} names {file.name}, which does not exist.")
        item_id = _safe_id(str(file.relative_to(root).with_suffix("")))
        if item_id in seen:
            raise InfluenceLabError(
                f"two images in '{path}' map to the same id '{item_id}'; rename one."
            )
        seen.add(item_id)
        try:
            with Image.open(file) as img:
                images.append(_to_array(img, size, mode))
        except OSError as exc:  # PIL's UnidentifiedImageError is an OSError
            raise InfluenceLabError(
                f"{file} in data.source.path cannot be read as an image ({exc})."
            ) from exc
        ids.append(item_id)
        captions.append(caption)
    return image_dataset(ids, np.stack(images), captions)


def _metadata_entries(root: Path, metadata: Path, caption_column: str) -> list[tuple[Path, str]]:
    """(image file, caption) of each line of the folder's metadata.jsonl."""
    _inside_folder(root, metadata, f"{metadata}")
    entries = []
    for n, line in enumerate(metadata.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InfluenceLabError(f"{metadata} line {n} is not valid JSON ({exc.msg}).") from exc
        if not isinstance(row, dict) or "file_name" not in row or caption_column not in row:
            raise InfluenceLabError(
                f"{metadata} line {n} needs 'file_name' and '{caption_column}' "
                "(data.source.caption_column)."
            )
        file = _metadata_file(root, row["file_name"], f"{metadata} line {n}")
        entries.append((file, str(row[caption_column])))
    return entries


def _caption_file_entries(root: Path) -> list[tuple[Path, str]]:
    """(image file, caption) of each image under `root`, captioned by the same-named .txt file."""
    entries = []
    for file in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        _inside_folder(root, file, f"image {file}")
        caption_file = file.with_suffix(".txt")
        if not caption_file.exists():
            raise InfluenceLabError(
                f"image {file} has no caption file {caption_file.name}; every image in "
                f"data.source.path needs a same-named .txt caption (or use metadata.jsonl)."
            )
        _inside_folder(root, caption_file, f"caption file {caption_file}")
        entries.append((file, caption_file.read_text().strip()))
    return entries


def load_hub(
    name: str,
    split: str = "train",
    config_name: str | None = None,
    image_column: str | None = "image",
    text_column: str | None = None,
    caption_column: str | None = "text",
    label_column: str | None = None,
    id_column: str | None = None,
    size=16,
    mode: str = "L",
    max_items: int | None = 5000,
) -> Dataset:
    """Any Hugging Face dataset by name (needs the network or a local cache). Never runs remote
    code. Exactly one of `image_column` and `text_column` names the content."""
    import datasets

    if (image_column is None) == (text_column is None):
        raise InfluenceLabError("data.source needs exactly one of image_column and text_column.")
    try:
        # Security: never pass trust_remote_code (or any other option that runs a dataset's own
        # loading script); only data files are read. datasets >= 4 has no loading scripts at all.
        ds = datasets.load_dataset(name, config_name, split=split)
    except Exception as exc:  # network, missing dataset, bad split: one sentence
        raise InfluenceLabError(
            f"data.source.name '{name}' could not be loaded from the hub: {exc}"
        ) from exc
    if max_items is not None:
        ds = ds.select(range(min(max_items, len(ds))))
    for col in (image_column, text_column, caption_column, label_column, id_column):
        if col is not None and col not in ds.column_names:
            raise InfluenceLabError(f"column '{col}' is not in {name}; it has {ds.column_names}.")
    ids = (
        [_safe_id(str(v)) for v in ds[id_column]]
        if id_column
        else [f"{_safe_id(name)}-{i:06d}" for i in range(len(ds))]
    )
    captions = [str(c) for c in ds[caption_column]] if caption_column else [""] * len(ds)
    labels = ds[label_column] if label_column else None
    if text_column:
        return text_dataset(ids, [str(t) for t in ds[text_column]], captions, labels)
    size = _size(size)
    images = np.stack([_to_array(img, size, _check_mode(mode)) for img in ds[image_column]])
    return image_dataset(ids, images, captions, labels)


def load_fashion(
    path: str = FASHION_PATH, classes=None, per_class: int | None = 600, split: str = "train"
) -> Dataset:
    """Fashion-MNIST (28x28 grey product images, 10 classes) from the four idx files in `path`:
    the official `train` file (the pool) or `test` file, the chosen `classes`, the first
    `per_class` of each; captions from class, tone, width and texture (see `data.fashion`)."""
    return image_dataset(*fashion_items(path, classes, per_class, split))
