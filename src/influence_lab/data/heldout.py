"""Held-out targets: items no model was trained on, for an LDS measured on real data rather than
on generated outputs (as D-TRAK and TRAK report both). A source with an official test file
(`data.source.split`, e.g. Fashion-MNIST) gives items of that file, of the same classes;
any other source gives items of the validation split (`data.split.val_fraction`)."""

from __future__ import annotations

import numpy as np

from ..errors import InfluenceLabError
from ..settings import DataSettings
from .dataset import DataBundle, columns, source_loader


def heldout_items(data: DataSettings, bundle: DataBundle, count: int, seed: int):
    """`count` held-out items drawn at random (by `seed`) without replacement: (ids, captions,
    content), content as `dataset.columns` gives it (images (n, C, H, W) float32, or texts)."""
    kwargs = data.source.plain()
    if "split" in kwargs:  # the official test file, the same classes, every item of each
        loader = source_loader(kwargs.pop("_target_", None))
        kwargs.update(split="test", per_class=None)
        pool, where = loader(**kwargs), f"the test file of data source '{data.name}'"
    else:
        pool, where = bundle.val, f"the validation split of '{data.name}'"
    if len(pool) < count:
        raise InfluenceLabError(
            f"lds.heldout_targets is {count}, but {where} holds {len(pool)} items"
            + (
                "; raise data.split.val_fraction or lower lds.heldout_targets."
                if "split" not in kwargs
                else "; lower lds.heldout_targets."
            )
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(pool), count, replace=False))
    return columns(pool.select(chosen))
