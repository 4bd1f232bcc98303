import re

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from PIL import Image

from influence_lab.data import load_data
from influence_lab.data.captions import NUMBER_WORDS
from influence_lab.data.dataset import fingerprint
from influence_lab.data.sources import load_digits, load_imagefolder, load_names
from influence_lab.errors import InfluenceLabError
from tests.conftest import typed

CAPTION = re.compile(r"^digit (\w+), (thin|regular|bold), (leaning left|upright|leaning right)$")


def data_cfg(*overrides):
    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        return typed(compose(config_name="train", overrides=list(overrides)).data)


def test_digits_columns_ids_and_captions():
    ds = load_digits()
    assert ds.column_names == ["id", "image", "caption", "label"]
    assert len(ds) == 1797
    assert np.asarray(ds[0]["image"]).shape == (1, 8, 8)
    assert ds["id"] == load_digits()["id"]  # stable across loads
    assert fingerprint(ds) == fingerprint(load_digits())
    for caption, label in zip(ds["caption"], ds["label"], strict=True):
        match = CAPTION.match(caption)
        assert match, caption
        assert match.group(1) == NUMBER_WORDS[label]
    weights = [CAPTION.match(c).group(2) for c in ds["caption"]]
    # terciles within each class: each weight word covers about a third
    for word in ("thin", "regular", "bold"):
        assert 0.25 < weights.count(word) / len(ds) < 0.42
    slants = {CAPTION.match(c).group(3) for c in ds["caption"]}
    assert slants == {"leaning left", "upright", "leaning right"}


def test_digits_slant_measures_shear():
    from influence_lab.data.captions import slant

    img = np.zeros((1, 8, 8))
    for row in range(8):  # a stroke whose top is to the right
        img[0, row, 7 - row // 2 - 2] = 1.0
    assert slant(img)[0] > 0.3
    assert slant(img[:, :, ::-1])[0] < -0.3


def test_names_columns_and_captions():
    ds = load_names()
    assert ds.column_names == ["id", "text", "caption", "label"]
    assert set(ds["caption"]) == {"male first name", "female first name"}
    assert len(ds) == 1219 + 4275
    assert ds["id"] == load_names()["id"]
    assert "female-mary" in ds["id"] and "male-james" in ds["id"]
    assert ds[ds["id"].index("female-mary")]["text"] == "Mary"
    with_surnames = load_names(genders=["female"], surnames=50)
    assert with_surnames["caption"].count("surname") == 50
    assert "surname-smith" in with_surnames["id"]


def _write_images(folder, n=5, caption=True, size=(12, 10), mode="L"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.full((size[1], size[0], 3), i * 40, dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(folder / f"img{i}.png")
        if caption:
            (folder / f"img{i}.txt").write_text(f"a square of shade {i}\n")


def test_imagefolder_captions_resize_and_rgb(tmp_path):
    _write_images(tmp_path / "imgs")
    ds = load_imagefolder(str(tmp_path / "imgs"), size=6, mode="L")
    assert ds["id"] == [f"img{i}" for i in range(5)]
    assert ds["caption"][2] == "a square of shade 2"
    images = np.asarray(ds.with_format("numpy")["image"])
    assert images.shape == (5, 1, 6, 6)
    assert images[1].mean() == pytest.approx(40 / 255, abs=0.01)
    rgb = load_imagefolder(str(tmp_path / "imgs"), size=[4, 5], mode="RGB")
    assert np.asarray(rgb[0]["image"]).shape == (3, 4, 5)


def test_imagefolder_metadata_jsonl(tmp_path):
    folder = tmp_path / "meta"
    _write_images(folder, n=3, caption=False)
    (folder / "metadata.jsonl").write_text(
        "\n".join(f'{{"file_name": "img{i}.png", "text": "shade {i}"}}' for i in range(3)) + "\n"
    )
    ds = load_imagefolder(str(folder), size=4)
    assert ds["caption"] == ["shade 0", "shade 1", "shade 2"]


def test_split_is_deterministic_and_removal_by_id(tmp_path):
    a = load_data(data_cfg("data.split.seed=3"))
    b = load_data(data_cfg("data.split.seed=3"))
    c = load_data(data_cfg("data.split.seed=4"))
    assert a.train["id"] == b.train["id"] and a.val["id"] == b.val["id"]
    assert a.val["id"] != c.val["id"]
    assert len(a.val) == 180 and len(a.train) == 1617
    assert not set(a.train["id"]) & set(a.val["id"])

    drop = a.train["id"][:3]
    listed = load_data(data_cfg("data.split.seed=3", f"data.exclude_ids=[{','.join(drop)}]"))
    assert len(listed.train) == len(a.train) - 3
    assert not set(drop) & set(listed.train["id"])
    assert listed.val["id"] == a.val["id"]
    assert listed.fingerprint != a.fingerprint

    id_file = tmp_path / "ids.txt"
    id_file.write_text("\n".join(drop) + "\n")
    from_file = load_data(data_cfg("data.split.seed=3", f"data.exclude_ids={id_file}"))
    assert from_file.train["id"] == listed.train["id"]


def test_unknown_exclude_id_is_an_error():
    with pytest.raises(
        InfluenceLabError, match=r"data.exclude_ids names 1 id\(s\) not in the dataset \(nope\)"
    ):
        load_data(data_cfg("data.exclude_ids=[nope]"))


def test_removal_that_empties_the_dataset_is_an_error(tmp_path):
    cfg = data_cfg()
    bundle = load_data(cfg)
    id_file = tmp_path / "all.txt"
    id_file.write_text("\n".join(bundle.train["id"]))
    with pytest.raises(InfluenceLabError, match="removes all 1617 training items"):
        load_data(data_cfg(f"data.exclude_ids={id_file}"))


def test_imagefolder_bad_inputs(tmp_path):
    with pytest.raises(InfluenceLabError, match="is not a directory"):
        load_imagefolder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InfluenceLabError, match="holds no images"):
        load_imagefolder(str(tmp_path / "empty"))
    _write_images(tmp_path / "nocap", n=2, caption=False)
    with pytest.raises(InfluenceLabError, match="has no caption file img0.txt"):
        load_imagefolder(str(tmp_path / "nocap"))


def reference_fingerprint(ds) -> str:
    """`fingerprint` as it was written first (chunk by chunk through the dataset's rows): the
    columns read once must hash to the same digest."""
    import hashlib

    digest = hashlib.sha256()
    for start in range(0, len(ds), 1024):
        chunk = ds[start : start + 1024]
        digest.update("\x1f".join(chunk["id"]).encode())
        digest.update("\x1f".join(chunk["caption"]).encode())
        if "image" in ds.column_names:
            digest.update(
                np.ascontiguousarray(np.asarray(chunk["image"], dtype=np.float32)).tobytes()
            )
        else:
            digest.update("\x1f".join(chunk["text"]).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=digits"],
        ["data=digits", "+data.canaries.count=3", "+data.canaries.token=zxq"],
        ["data=names", "data.source.max_per_list=150"],
    ],
    ids=lambda o: " ".join(o),
)
def test_a_bundle_without_ids_is_what_load_data_gives(overrides):
    """A member's data made from the full bundle (no source read again) has the items and the
    fingerprint that `load_data` with its `data.exclude_ids` gives, so its train signature is the
    same."""
    full = load_data(data_cfg(*overrides))
    assert full.fingerprint == reference_fingerprint(full.train)
    assert full.full_fingerprint == reference_fingerprint(full.full)
    ids = list(full.train["id"])
    removed = ids[1200:1201] + ids[3:40:3] + ids[-2:]  # across chunks of 1,024, unsorted
    for exclude in (removed, [], ids[:1]):
        made = full.without(exclude)
        loaded = load_data(data_cfg(*overrides, f"data.exclude_ids=[{','.join(exclude)}]"))
        assert made.excluded == loaded.excluded == exclude
        assert made.train["id"] == loaded.train["id"]
        assert made.fingerprint == loaded.fingerprint == reference_fingerprint(loaded.train)
        assert made.full_fingerprint == loaded.full_fingerprint and made.val["id"] == full.val["id"]
    with pytest.raises(InfluenceLabError, match="not in the dataset"):
        full.without(["no-such-id"])
    with pytest.raises(ValueError):
        full.without(removed).without(ids[:1])
