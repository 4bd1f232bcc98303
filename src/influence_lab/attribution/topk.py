"""Scores in bounded memory: each target's top-k training items, and the sum of its scores over
every item, streamed over blocks of items and of targets; the targets x items matrix is never
held. Peak memory is one block of features (`BLOCK_ROWS` x dim), one block of scores
(`TARGET_BLOCK` x `BLOCK_ROWS`) and the top-k tables, whatever the number of items
(docs/scale.md). The merge is numpy's `argpartition` over the running top-k and the new block:
the same selection TRAK's and faiss's heaps make, written here because the scores come from our
own kernel product, not from an index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tracking.console import track
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
    steps = zip(*(phi.blocks(dtype=dtype) for _, phi in terms), strict=True)
    for blocks in track(steps, desc, terms[0][1].block_count(), log_tenths=True):
        ids = np.arange(offset, offset + len(blocks[0]))
        for t0 in range(0, targets, target_block):
            rows = slice(t0, t0 + target_block)
            s = sum(left[rows] @ block.T for left, block in zip(lefts, blocks, strict=True))
            sums[rows] += s.sum(1, dtype=np.float64)
            cand_v = np.concatenate([best_v[rows], s], 1)
            cand_i = np.concatenate([best_i[rows], np.broadcast_to(ids, s.shape)], 1)
            part = np.argpartition(-cand_v, k - 1, axis=1)[:, :k]
            best_v[rows] = np.take_along_axis(cand_v, part, 1)
            best_i[rows] = np.take_along_axis(cand_i, part, 1)
        offset += len(blocks[0])
    order = np.argsort(-best_v, axis=1, kind="stable")
    return TopScores(
        np.take_along_axis(best_i, order, 1), np.take_along_axis(best_v, order, 1), sums
    )
