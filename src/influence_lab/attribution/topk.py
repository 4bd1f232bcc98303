"""Scores in bounded memory: each target's top-k training items, and the sum of its scores over
every item, streamed over blocks of items and of targets; the targets x items matrix is never
held. Peak memory is four blocks of features (`BLOCK_ROWS` x dim: the one multiplied, two read
ahead by a thread, one being read), one block of scores (`TARGET_BLOCK` x `BLOCK_ROWS`) and the
top-k tables, whatever the number of items (docs/scale.md). The merge keeps, per row, the scores
above its current k-th best (`merge`): the same selection TRAK's and faiss's heaps make, written
here because the scores come from our own kernel product, not from an index."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..console import track
from .feature_store import Features

TARGET_BLOCK = 256


@dataclass
class TopScores:
    indices: np.ndarray  # (targets, k) item positions, best first
    values: np.ndarray  # (targets, k) their scores
    sums: np.ndarray  # (targets,) the sum of every item's score (float64)


def top_scores(
    left: np.ndarray, phi: Features, k: int, dtype=np.float32, target_block: int = TARGET_BLOCK
) -> TopScores:
    """The top-k of scores = left @ Phi^T per row of `left` (targets, dim), in `dtype` (float32:
    twice float64's speed; rankings in float32 differ from float64 only at near-ties), streamed
    over `phi`'s row blocks."""
    return top_scores_of([(left, phi)], k, dtype, target_block)


def top_scores_of(
    terms: list[tuple[np.ndarray, Features]],
    k: int,
    dtype=np.float32,
    target_block: int = TARGET_BLOCK,
    desc: str = "scores",
) -> TopScores:
    """`top_scores` of a sum of products, scores = sum_j left_j @ Phi_j^T (an ensemble's models,
    each with its own features of the same items), the row blocks of every Phi_j read in step.
    Progress over the blocks: a bar on a terminal, a line per tenth in a log."""
    targets, items = len(terms[0][0]), len(terms[0][1])
    k = min(k, items)
    lefts = [np.asarray(left, dtype=dtype) for left, _ in terms]
    best_v = np.full((targets, k), -np.inf, dtype=dtype)
    best_i = np.zeros((targets, k), dtype=np.int64)
    sums = np.zeros(targets)
    offset = 0
    steps = ahead(zip(*(phi.blocks(dtype=dtype) for _, phi in terms), strict=True))
    for blocks in track(steps, desc, terms[0][1].block_count(), log_tenths=True):
        for t0 in range(0, targets, target_block):
            rows = slice(t0, t0 + target_block)
            s = sum(left[rows] @ block.T for left, block in zip(lefts, blocks, strict=True))
            sums[rows] += s.sum(1, dtype=np.float64)
            best_v[rows], best_i[rows] = merge(best_v[rows], best_i[rows], s, offset)
        offset += len(blocks[0])
    order = np.argsort(-best_v, axis=1, kind="stable")
    return TopScores(
        np.take_along_axis(best_i, order, 1), np.take_along_axis(best_v, order, 1), sums
    )


def merge(best_v: np.ndarray, best_i: np.ndarray, s: np.ndarray, offset: int):
    """The running top-k (rows, k), unordered, merged with a block of scores s (rows, items)
    whose item positions start at `offset`. Only scores above a row's current k-th best can
    enter: once the first blocks are seen they are few, and those are merged by one sort of the
    rows' entries; while many are (the first blocks), by an argpartition of every candidate."""
    k = best_v.shape[1]
    enters = s > best_v.min(1)[:, None]
    count = int(np.count_nonzero(enters))
    if count == 0:
        return best_v, best_i
    if count > 2 * best_v.size:
        cand_v = np.concatenate([best_v, s], 1)
        cand_i = np.concatenate(
            [best_i, np.broadcast_to(np.arange(offset, offset + s.shape[1]), s.shape)], 1
        )
        part = np.argpartition(-cand_v, k - 1, axis=1)[:, :k]
        return np.take_along_axis(cand_v, part, 1), np.take_along_axis(cand_i, part, 1)
    rows, cols = np.nonzero(enters)
    owner = np.concatenate([np.repeat(np.arange(len(s)), k), rows])
    values = np.concatenate([best_v.ravel(), s[rows, cols]])
    ids = np.concatenate([best_i.ravel(), cols + offset])
    order = np.lexsort((-values, owner))  # by row, then best first
    starts = np.searchsorted(owner[order], np.arange(len(s)))
    pick = order[starts[:, None] + np.arange(k)]
    return values[pick], ids[pick]


def ahead(steps: Iterator, depth: int = 2) -> Iterator:
    """`steps`, produced up to `depth` items ahead by a thread: the next blocks are read from
    disk and converted (numpy releases the GIL for both) while the current one is multiplied.
    Written here because the standard library's executors hand back futures in a pool, not a
    bounded read-ahead of one iterator; an error in the producer is raised in the consumer."""
    buffer: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def hand(item) -> bool:
        """Put `item` once there is room; False when the consumer has stopped."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for step in steps:
                if not hand(step):
                    return
            hand(end)
        except BaseException as error:  # handed to the consumer
            hand(error)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while (step := buffer.get()) is not end:
            if isinstance(step, BaseException):
                raise step
            yield step
    finally:
        stop.set()
        worker.join()
