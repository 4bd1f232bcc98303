"""Turn a `datasets.Dataset` into batches of the model protocol: `{"content", "caption", "id"}`.

The columns are read into memory once (numpy / lists): these datasets are small, and gathering
rows from arrays is far cheaper per step than going through Arrow for every item.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader


class InMemory(torch.utils.data.Dataset):
    def __init__(self, ds: Dataset):
        self.ids = list(ds["id"])
        self.captions = list(ds["caption"])
        if "image" in ds.column_names:
            self.images = torch.from_numpy(np.asarray(ds.with_format("numpy")["image"], dtype=np.float32))
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


def loader(ds: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    data = InMemory(ds)
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen, collate_fn=data.collate)


def batch_of(ds: Dataset) -> dict:
    """The whole dataset as one batch."""
    data = InMemory(ds)
    return data.collate(list(range(len(data))))
