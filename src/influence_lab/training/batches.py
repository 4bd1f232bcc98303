"""Turn a `datasets.Dataset` into batches of the model protocol: `{"content", "caption", "id"}`.

The columns are read into memory once (numpy / lists): these datasets are small, and gathering
rows from arrays is far cheaper per step than going through Arrow for every item.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader


class InMemory(torch.utils.data.Dataset):
    def __init__(self, ds: Dataset):
        self.ids = list(ds["id"])
        self.captions = list(ds["caption"])
        if "image" in ds.column_names:
            self.images = torch.from_numpy(
                np.asarray(ds.with_format("numpy")["image"], dtype=np.float32)
            )
            self.texts = None
        else:
            self.images = None
            self.texts = list(ds["text"])

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return i

    def collate(self, indices: list[int]) -> dict:
        idx = torch.as_tensor(indices, dtype=torch.long)
        content = self.images[idx] if self.images is not None else [self.texts[i] for i in indices]
        return {
            "content": content,
            "caption": [self.captions[i] for i in indices],
            "id": [self.ids[i] for i in indices],
        }


class RemovalStableSampler(torch.utils.data.Sampler):
    """Shuffles by a per-item key hashed from (item id, seed, epoch), so removing items leaves the
    order of the others unchanged: a model retrained without some items sees the rest in the same
    sequence as the full model did, which keeps counterfactual comparisons precise.

    (torch's RandomSampler permutes positions, so one removal reshuffles everything.)
    """

    def __init__(self, ids: list[str], seed: int):
        self.base = np.array(
            [int(hashlib.sha1(i.encode()).hexdigest()[:16], 16) for i in ids], dtype=np.uint64
        )
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self):
        with np.errstate(over="ignore"):
            x = self.base ^ np.uint64(
                (self.seed * 0x9E3779B97F4A7C15 + self.epoch * 0xBF58476D1CE4E5B9) % 2**64
            )
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
        return iter(np.argsort(x, kind="stable").tolist())


def loader(ds: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    data = InMemory(ds)
    sampler = RemovalStableSampler(data.ids, seed) if shuffle else None
    return DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=data.collate)


def outputs_batch(outputs, captions: list[str]) -> dict:
    """Generated outputs (an image array or a list of texts) with one caption each, as a batch."""
    content = (
        outputs
        if isinstance(outputs, list)
        else torch.as_tensor(np.asarray(outputs, dtype=np.float32))
    )
    return {"content": content, "caption": list(captions)}


def batch_of(ds: Dataset) -> dict:
    """The whole dataset as one batch."""
    data = InMemory(ds)
    return data.collate(list(range(len(data))))
