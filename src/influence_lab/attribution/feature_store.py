"""The feature store: projected gradients of every training item, one cached result per (model,
data, output function, projection, noise), under `<root>/features/<output>-<signature>/`.

With `attribution.gradient.shard_size` the items are featurised in shards of that many, each
shard its own claimed result under `<root>/features/<output>-shard-<signature>/` (the signature
holds the shard's index and size): processes that share the output root -- a SLURM array of one
command, a second terminal -- split the shards between them (a process skips a shard another one
holds and reads it at the end), a killed run recomputes only its unfinished shards, and each shard
is read back as a memory-mapped array, so the whole set's features never need to fit in memory at
once. `attribution.gradient.feature_dtype: float16` halves what is written (scores are still
computed in float64; docs/scale.md has its effect on them)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..console import console
from ..errors import InfluenceLabError
from ..models.protocol import GenerativeModel
from ..store.files import RunDir, write_npy
from ..store.signature import signature
from .example_gradients import n_params, projected_gradients
from .projectors import make_projector

BLOCK_ROWS = 8192  # rows of features read at once when streaming over them


class Features:
    """A training set's projected gradients as a list of row blocks (memory-mapped shards, or one
    array): what the gradient methods read, block by block, in float64."""

    def __init__(self, shards: list[np.ndarray]):
        self.shards = shards
        self.shape = (sum(len(s) for s in shards), shards[0].shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def blocks(self, rows: int = BLOCK_ROWS, dtype=np.float64) -> Iterator[np.ndarray]:
        """Consecutive row blocks, in order, as `dtype` (at most `rows` rows each). A shard on
        disk is read block by block with plain reads, not through its memory map: mapped pages
        would stay in the process's resident set after use, and a pass over a set larger than
        the machine's memory would look like (and compete as) a process that holds all of it."""
        for shard in self.shards:
            if isinstance(shard, np.memmap) and shard.filename:
                yield from _read_blocks(shard, rows, dtype)
                continue
            for start in range(0, len(shard), rows):
                yield np.asarray(shard[start : start + rows], dtype=dtype)

    def block_count(self, rows: int = BLOCK_ROWS) -> int:
        """How many blocks `blocks(rows)` yields."""
        return sum(math.ceil(len(shard) / rows) for shard in self.shards)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.dense() if dtype is None else self.dense().astype(dtype)

    def dense(self) -> np.ndarray:
        """Every row in one float64 array (a training set that fits in memory)."""
        if len(self.shards) == 1:
            return np.asarray(self.shards[0]).astype(np.float64)
        return np.concatenate(list(self.blocks()))

    def gram(self) -> np.ndarray:
        """Phi^T Phi (dim x dim), accumulated over row blocks: memory dim^2, whatever the rows."""
        d = self.shape[1]
        out = np.zeros((d, d))
        for block in self.blocks():
            out += block.T @ block
        return out

    def sums_over(self, masks: np.ndarray) -> np.ndarray:
        """masks (subsets, items) @ Phi -> (subsets, dim): each subset's sum of its items' rows,
        streamed over the row blocks (what the LDS's predictions need of the features)."""
        weights = np.asarray(masks, dtype=np.float64)
        out = np.zeros((len(weights), self.shape[1]))
        offset = 0
        for block in self.blocks():
            out += weights[:, offset : offset + len(block)] @ block
            offset += len(block)
        return out

    def times(self, left: np.ndarray) -> np.ndarray:
        """left (targets, dim) @ Phi^T -> (targets, items)."""
        return self.times_many([left])[0]

    def times_many(self, lefts: list[np.ndarray]) -> list[np.ndarray]:
        """`times` of each of `lefts`, converting (one array) or reading (shards) the features
        once for all of them: one product each for one array (as the scores were always
        computed), block by block for shards."""
        if len(self.shards) == 1:
            phi_t = np.asarray(self.shards[0]).T.astype(np.float64)
            return [left @ phi_t for left in lefts]
        parts = [[] for _ in lefts]
        for block in self.blocks():
            for part, left in zip(parts, lefts, strict=True):
                part.append(left @ block.T)
        return [np.concatenate(part, axis=1) for part in parts]


def available_bytes() -> int | None:
    """The memory the kernel could give this process now (Linux's MemAvailable); None elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(method: str, items: int, dim: int, models: int, shard_size: int | None) -> None:
    """Refuse, before any gradient is computed, features in one piece that cannot fit: `models`
    x (the features and the kernel's right factor, items x dim float64 each)."""
    need = 2 * 8 * items * dim * models
    free = available_bytes()
    if shard_size is None and free is not None and need > 0.8 * free:
        raise InfluenceLabError(
            f"{method} would hold about {need / 1e9:.1f} GB of gradient features in memory "
            f"({items:,} items x {dim} dimensions x {models} model(s)) but {free / 1e9:.1f} GB "
            "are available; featurise in shards read from disk: "
            "+attribution.gradient.shard_size=8192 (docs/scale.md)."
        )


def _read_blocks(shard: np.memmap, rows: int, dtype) -> Iterator[np.ndarray]:
    width = shard.shape[1]
    with open(shard.filename, "rb") as fh:
        for start in range(0, len(shard), rows):
            n = min(rows, len(shard) - start)
            fh.seek(shard.offset + start * width * shard.dtype.itemsize)
            block = np.fromfile(fh, dtype=shard.dtype, count=n * width).reshape(n, width)
            yield block.astype(dtype, copy=False)


def train_features(
    root: Path,
    model: GenerativeModel,
    model_key: str,
    train_batch: dict,
    fingerprint: str,
    output: str,
    proj_dim: int,
    proj_seed: int,
    noise_seed: int = 0,
    projector: str = "sparse",
    options: dict | None = None,
    shard_size: int | None = None,
    dtype: str = "float32",
    only: int | None = None,
) -> Features:
    """Projected gradients of every training item, cached under `<root>/features/` by the signature
    of (model weights key, data fingerprint, output function, projection, noise). The projector
    kind enters the key when it is not `sparse`, and the output function's `options` (D-TRAK's
    K) when given, so the features cached before either existed (sparse; the measured loss)
    keep their keys. With `shard_size` (or float16 storage) the items are featurised in shards,
    each its own cached result (`_sharded`); `only`: that one shard (a job of `influence-lab
    featurise -m shard=...`), and its features alone are returned."""
    spec = {
        "model": model_key,
        "data": fingerprint,
        "output": output,
        "proj_dim": int(proj_dim),
        "proj_seed": int(proj_seed),
        "noise_seed": int(noise_seed),
    }
    if projector != "sparse":
        spec["projector"] = projector
    spec.update({k: int(v) for k, v in (options or {}).items()})
    project = make_projector(projector, n_params(model), proj_dim, proj_seed)
    if shard_size is not None or dtype != "float32":
        size = shard_size or len(train_batch["caption"])
        return _sharded(root, spec, size, dtype, model, train_batch, project, options, only)
    run = RunDir(root, "features", output, signature(spec))
    path = run / "features.npy"
    if run.done and path.exists():
        return Features([np.load(path)])
    run.prepare()
    feats = projected_gradients(
        model,
        train_batch,
        project,
        output,
        noise_seed,
        desc=f"gradients ({output})",
        options=options,
    )
    write_npy(path, feats)
    run.mark_done(spec)
    return Features([feats])


def _shard_run(root, spec: dict, index: int, size: int, dtype: str) -> RunDir:
    shard_spec = {**spec, "shard": index, "shard_size": size, "dtype": dtype}
    return RunDir(root, "features", f"{spec['output']}-shard", signature(shard_spec))


def _sharded(root, spec, size, dtype, model, train_batch, project, options, only) -> Features:
    """The features in shards of `size` items, each a claimed result: first every shard no other
    process is computing, then the others' (waiting for them, or computing one whose process
    died), so that concurrent runs of one command split the shards. `only`: that shard alone."""
    n = len(train_batch["caption"])
    count = shard_count(n, size)
    check_shard(only, n, size)
    runs = [_shard_run(root, spec, i, size, dtype) for i in range(count)]
    progress = ShardProgress(spec["output"], count, n, size)

    computed = set()

    def compute(index: int) -> None:
        computed.add(index)
        rows = slice(index * size, (index + 1) * size)
        feats = projected_gradients(
            model,
            {k: v[rows] for k, v in train_batch.items()},
            project,
            spec["output"],
            spec["noise_seed"],
            options=options,
            part_of=(rows.start, n),
        )
        write_npy(runs[index] / "features.npy", feats.astype(dtype))

    def finish(index: int, wait: bool) -> bool:
        started = time.time()
        if wait:
            runs[index].compute_once(lambda: None, lambda: compute(index))
        elif not runs[index].compute_if_free(lambda: compute(index)):
            return False
        if only is None:  # a job of one shard: its stage says what it did
            progress.done(index, time.time() - started, index in computed)
        return True

    if only is not None:
        finish(only, wait=True)
        runs = [runs[only]]
    else:
        for index in [i for i in range(count) if not finish(i, wait=False)]:
            finish(index, wait=True)
    return Features([np.load(run / "features.npy", mmap_mode="r") for run in runs])


def shard_count(items: int, shard_size: int | None) -> int:
    """How many shards `items` make in shards of `shard_size` (one without shards)."""
    return 1 if shard_size is None else math.ceil(items / shard_size)


def check_shard(shard: int | None, items: int, shard_size: int | None) -> None:
    """Refuse a shard index that `items` in shards of `shard_size` do not have."""
    count = shard_count(items, shard_size)
    if shard is not None and not 0 <= shard < count:
        raise InfluenceLabError(
            f"shard is {shard}; {items:,} items in shards of {shard_size or items:,} make "
            f"shards 0..{count - 1}."
        )


class ShardProgress:
    """'features (measured): shard 3/10, 3,000/10,000 items, 120 items/s' on the console after
    each tenth of the shards: on a terminal and in logs alike (SLURM output, a pipeline's log).
    The rate is of the shards this process computed; shards found done are not counted in it."""

    def __init__(self, output: str, count: int, items: int, size: int):
        self.output, self.count, self.items, self.size = output, count, items, size
        self.seconds, self.computed = 0.0, 0

    def done(self, index: int, seconds: float, computed: bool = True) -> None:
        items = min((index + 1) * self.size, self.items)
        if computed:
            self.seconds += seconds
            self.computed += min(self.size, self.items - index * self.size)
        if self.computed and self.seconds > 0.5:
            rate = f", {self.computed / self.seconds:,.0f} items/s"
        else:  # found done by another process or run, or too quick to time
            rate = "" if self.computed else " (found done)"
        if self.count > 1 and (index + 1 == self.count or index % max(1, self.count // 10) == 0):
            console.print(
                f"features ({self.output}): shard {index + 1}/{self.count}, "
                f"{items:,}/{self.items:,} items{rate}",
                highlight=False,
            )
