"""Fashion-MNIST read from the four idx files: small synthetic files for the format and the
errors, the Debian package's files for the real data (skipped with a reason where it is not
installed, unless REQUIRE_FASHION=1)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from influence_lab.data.fashion import CLASSES, DEFAULT_PATH, FILES, fashion_items
from influence_lab.errors import InfluenceLabError
from tests.conftest import typed

HAVE = all((Path(DEFAULT_PATH) / f).is_file() for pair in FILES.values() for f in pair)
needs_package = pytest.mark.skipif(
    not HAVE and os.environ.get("REQUIRE_FASHION") != "1",
    reason="Debian's dataset-fashion-mnist is not installed (make data installs it)",
)


def write_idx(
    folder: Path, split: str, images: np.ndarray, labels: np.ndarray, magic=(2051, 2049)
) -> None:
    image_file, label_file = FILES[split]
    head = magic[0].to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    (folder / image_file).write_bytes(gzip.compress(head + images.astype(np.uint8).tobytes()))
    head = magic[1].to_bytes(4, "big") + len(labels).to_bytes(4, "big")
    (folder / label_file).write_bytes(gzip.compress(head + labels.astype(np.uint8).tobytes()))


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([7, 9, 7, 9, 7, 9, 0, 7, 9])
    images = rng.integers(0, 256, size=(len(labels), 28, 28))
    write_idx(tmp_path, "train", images, labels)
    return tmp_path, images, labels


def test_reads_idx_files_with_stable_ids_and_class_subsets(tiny):
    folder, images, labels = tiny
    ids, x, captions, y = fashion_items(str(folder), classes=["sneaker", 9], per_class=2)
    assert ids == [
        "fashion-train-00000",
        "fashion-train-00001",
        "fashion-train-00002",
        "fashion-train-00003",
    ]
    assert list(y) == [7, 9, 7, 9] and x.shape == (4, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[2, 0], images[2] / 255.0, atol=1e-7)
    assert captions[0].endswith(" sneaker") and captions[1].endswith(" ankle boot")
    assert captions[1].startswith(
        ("an ankle", "a dark", "a light", "a narrow", "a wide", "a plain", "a patterned")
    )
    all_ids, *_ = fashion_items(str(folder))
    assert len(all_ids) == 9  # no classes, no per_class: everything


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "missing",
            "Fashion-MNIST is not in data.source.path '{folder}' "
            "(missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz); "
            "install Debian's package",
        ),
        (
            "magic",
            "train-images-idx3-ubyte.gz is not a Fashion-MNIST image file "
            "(magic number 2049, expected 2051)",
        ),
        ("truncated", "train-labels-idx1-ubyte.gz is truncated or corrupt"),
        ("not gzip", "train-images-idx3-ubyte.gz cannot be read as an idx file"),
        (
            "class",
            "data.source.classes has 'boots'; the classes are 0 t-shirt/top, 1 trouser, "
            "2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot.",
        ),
        (
            "per_class",
            "data.source.per_class is 4 but class 'sneaker' holds only 3 items in this file; "
            "use at most 3.",
        ),
    ],
)
def test_bad_input_is_one_sentence(tmp_path, case, message):
    rng = np.random.default_rng(1)
    labels = np.array([7, 7, 7, 9])
    images = rng.integers(0, 256, size=(4, 28, 28))
    if case != "missing":
        write_idx(
            tmp_path,
            "train",
            images,
            labels,
            magic=(2049, 2049) if case == "magic" else (2051, 2049),
        )
    if case == "truncated":
        label_file = tmp_path / FILES["train"][1]
        label_file.write_bytes(gzip.compress(gzip.decompress(label_file.read_bytes())[:-1]))
    if case == "not gzip":
        (tmp_path / FILES["train"][0]).write_bytes(b"not a gzip file")
    kwargs = (
        {"classes": ["boots"]}
        if case == "class"
        else {"classes": [7], "per_class": 4}
        if case == "per_class"
        else {}
    )
    with pytest.raises(InfluenceLabError) as info:
        fashion_items(str(tmp_path), **kwargs)
    assert message.format(folder=tmp_path) in str(info.value)
    assert str(info.value).count(". ") == 0 or case in ("class",)  # one sentence


@needs_package
def test_the_debian_files_give_the_official_splits_and_terciles():
    ids, x, captions, y = fashion_items(classes=["sneaker", "ankle boot"], per_class=1000)
    assert len(ids) == 2000 and (np.bincount(y, minlength=10)[[7, 9]] == 1000).all()
    assert 0.2 < x.mean() < 0.3 and x.min() == 0.0 and x.max() == 1.0
    # each attribute word holds a third of its class
    boots = [c for c, label in zip(captions, y, strict=True) if label == 9]
    for word in ("dark", "light", "narrow", "wide", "plain", "patterned"):
        share = sum(f" {word}" in c.replace(",", " ") for c in boots) / len(boots)
        assert 0.3 < share < 0.36, (word, share)
    test_ids, *_ = fashion_items(split="test", per_class=5)
    assert len(test_ids) == 50 and test_ids[0].startswith("fashion-test-")
    assert len(CLASSES) == 10


def test_heldout_targets_come_from_the_test_file_of_the_same_classes(tiny, cfg_factory):
    """`lds.targets=heldout` on Fashion-MNIST: items of the official test file, of the pool's
    classes only, drawn reproducibly; the pool keeps to the training file."""
    from influence_lab.data import load_data
    from influence_lab.data.heldout import heldout_items

    folder, _, _ = tiny
    rng = np.random.default_rng(2)
    test_labels = np.array([7, 9, 0, 7, 9, 1, 7, 9, 7])
    test_images = rng.integers(0, 256, size=(len(test_labels), 28, 28))
    write_idx(folder, "test", test_images, test_labels)
    cfg = cfg_factory(
        "train",
        "data=fashion2",
        f"data.source.path={folder}",
        "data.source.per_class=3",
        "data.split.val_fraction=0",
    )
    bundle = load_data(typed(cfg.data))
    assert all(i.startswith("fashion-train-") for i in bundle.train["id"])
    ids, captions, images = heldout_items(typed(cfg.data), bundle, 4, seed=0)
    rows = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert all(i.startswith("fashion-test-") for i in ids) and len(set(rows)) == 4
    assert set(test_labels[rows]) <= {7, 9}  # sneakers and ankle boots only
    for row, caption in zip(rows, captions, strict=True):
        assert caption.endswith("sneaker" if test_labels[row] == 7 else "ankle boot")
    assert images.shape == (4, 1, 28, 28)
    np.testing.assert_allclose(images[:, 0], test_images[rows] / 255.0, atol=1e-6)
    assert heldout_items(typed(cfg.data), bundle, 4, seed=0)[0] == ids
    with pytest.raises(InfluenceLabError, match="holds 7 items; lower lds.heldout_targets"):
        heldout_items(typed(cfg.data), bundle, 8, seed=0)
