"""From the data settings to train/val splits: deterministic split by seed, removal by id,
fingerprints. The settings are checked by their schema (`settings.data`); what needs the data
(unknown ids, a removal that empties the training split) is checked here."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset, concatenate_datasets

from ..errors import InfluenceLabError
from ..settings import DataSettings
from ..settings.data import SOURCES_MODULE
from ..store.paths import check_name
from . import sources
from .canaries import add_canaries


def fingerprint(ds: Dataset) -> str:
    """Hash of the ids and content (and captions) of a dataset, in order."""
    return digest_columns(*columns(ds))


def columns(ds: Dataset) -> tuple[list[str], list[str], np.ndarray | list[str]]:
    """What a fingerprint hashes, read once: ids, captions, and the images as one float32 array
    (N, C, H, W) or the texts."""
    ids, captions = list(ds["id"]), list(ds["caption"])
    if "image" not in ds.column_names:
        return ids, captions, list(ds["text"])
    if not len(ds):
        return ids, captions, np.zeros((0,), np.float32)
    images = ds.with_format("numpy", columns=["image"])[:]["image"]
    return ids, captions, np.asarray(images, dtype=np.float32)


def digest_columns(ids: list[str], captions: list[str], content) -> str:
    """The fingerprint of the items with these columns: SHA-256 over chunks of 1,024 items."""
    digest = hashlib.sha256()
    for start in range(0, len(ids), 1024):
        stop = start + 1024
        digest.update("\x1f".join(ids[start:stop]).encode())
        digest.update("\x1f".join(captions[start:stop]).encode())
        if isinstance(content, np.ndarray):
            digest.update(np.ascontiguousarray(content[start:stop], dtype=np.float32).tobytes())
        else:
            digest.update("\x1f".join(content[start:stop]).encode())
    return digest.hexdigest()[:16]


def read_exclude_ids(spec) -> list[str]:
    """`data.exclude_ids`: a list of ids, or the path of a file with one id per line."""
    if spec is None:
        return []
    if isinstance(spec, (list, tuple)) or type(spec).__name__ == "ListConfig":
        return [str(s) for s in spec]
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise InfluenceLabError(
            f"data.exclude_ids is '{spec}', "
            "which is neither a list of ids nor an existing file of ids."
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= val_fraction < 1.0:
        raise InfluenceLabError(
            f"data.split.val_fraction is {val_fraction}; it must lie in [0, 1)."
        )
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass
class DataBundle:
    name: str
    kind: str  # "image" or "text"
    full: Dataset  # every item, before the split and removal
    train: Dataset  # training split with the excluded ids removed
    val: Dataset
    excluded: list[str]

    @functools.cached_property
    def train_columns(self) -> tuple:
        """The training split's ids, captions and content (`columns`), read once."""
        return columns(self.train)

    @functools.cached_property
    def fingerprint(self) -> str:
        return digest_columns(*self.train_columns)

    @functools.cached_property
    def full_fingerprint(self) -> str:
        return fingerprint(self.full)

    @functools.cached_property
    def captions(self) -> list[str]:
        return list(self.full["caption"])

    @functools.cached_property
    def full_ids(self) -> set[str]:
        return set(self.full["id"])

    def without(self, exclude: list[str]) -> DataBundle:
        """The bundle `load_data` gives for the same data settings with `data.exclude_ids` set to
        `exclude` (same items, same fingerprint), made from this one, which must remove nothing:
        the source is not read again and the fingerprint is hashed from this bundle's columns."""
        if self.excluded:
            raise ValueError("without() needs a bundle that removes nothing")
        exclude = [str(i) for i in exclude]
        ids, captions, content = self.train_columns
        keep = kept(ids, self.full_ids, exclude)
        train = self.train if keep is None else self.train.select(keep)
        out = DataBundle(self.name, self.kind, self.full, train, self.val, exclude)
        if keep is not None:
            content = (
                content[keep] if isinstance(content, np.ndarray) else [content[i] for i in keep]
            )
            out.train_columns = ([ids[i] for i in keep], [captions[i] for i in keep], content)
        for shared in ("captions", "full_ids", "full_fingerprint"):
            if shared in self.__dict__:
                out.__dict__[shared] = self.__dict__[shared]
        return out


def remove_ids(train: Dataset, full_ids: set[str], exclude: list[str]) -> Dataset:
    keep = kept(list(train["id"]), full_ids, exclude) if exclude else None
    return train if keep is None else train.select(keep)


def kept(train_ids: list[str], full_ids: set[str], exclude: list[str]) -> list[int] | None:
    """The positions of the training items that stay when `exclude` is removed (None: all of
    them); unknown ids, ids of the validation split and a removal of everything are refused."""
    if not exclude:
        return None
    unknown = sorted(set(exclude) - full_ids)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InfluenceLabError(
            f"data.exclude_ids names {len(unknown)} id(s) not in the dataset ({shown}); "
            f"ids look like '{next(iter(sorted(full_ids)))}'."
        )
    not_train = sorted(set(exclude) - set(train_ids))
    if not_train:
        raise InfluenceLabError(
            f"data.exclude_ids names {len(not_train)} id(s) in the validation split, "
            "not the training "
            f"split ({', '.join(not_train[:5])}); only training items can be removed."
        )
    drop = set(exclude)
    keep = [i for i, item_id in enumerate(train_ids) if item_id not in drop]
    if not keep:
        raise InfluenceLabError(
            f"data.exclude_ids removes all {len(train_ids)} training items; "
            "at least one must remain."
        )
    return keep


def source_loader(target):
    """The loader `data.source._target_` names. Only the `load_*` functions of
    influence_lab.data.sources are allowed: a config never makes the tool import or call anything
    else."""
    module, _, name = str(target).rpartition(".")
    loaders = sorted(
        n
        for n, f in vars(sources).items()
        if n.startswith("load_")
        and callable(f)
        and getattr(f, "__module__", None) == SOURCES_MODULE
    )
    if module != SOURCES_MODULE or name not in loaders:
        raise InfluenceLabError(
            f"data.source._target_ is '{target}'; it must be one of "
            f"{', '.join(f'{SOURCES_MODULE}.{n}' for n in loaders)}."
        )
    return getattr(sources, name)


def load_data(data: DataSettings) -> DataBundle:
    """Build the dataset that the `data` settings describe."""
    check_name(data.name, "data.name")
    # called directly rather than through hydra's instantiate, which would wrap our clear errors
    kwargs = data.source.plain()
    full = source_loader(kwargs.pop("_target_", None))(**kwargs)
    if len(full) == 0:
        raise InfluenceLabError(f"data source '{data.name}' is empty.")
    ids = full["id"]
    if len(set(ids)) != len(ids):
        raise InfluenceLabError(f"data source '{data.name}' has duplicate ids; ids must be unique.")
    train_idx, val_idx = split_indices(len(full), data.split.val_fraction, data.split.seed)
    train, val = full.select(train_idx), full.select(val_idx)
    if data.canary_count > 0:
        canaries = data.canaries
        train = add_canaries(
            train, canaries.count, canaries.token, canaries.seed, caption=canaries.caption
        )
        full = concatenate_datasets(
            [full, train.select(range(len(train) - canaries.count, len(train)))]
        )
        ids = full["id"]
    exclude = read_exclude_ids(data.exclude_ids)
    train = remove_ids(train, set(ids), exclude)
    kind = "image" if "image" in full.column_names else "text"
    return DataBundle(data.name, kind, full, train, val, exclude)
