"""What a method costs in an LDS run: wall seconds and the process's peak resident memory while it
prepares and scores, per target and per 1,000 training items (`cost.csv` beside `lds.csv`, which
stays free of timings so that it is the same at any thread count and on any machine).

The peak is sampled from /proc/self/statm every 20 ms by a thread (torch's CPU allocations are
outside tracemalloc's view, and `ru_maxrss` only ever rises over the process's life); where
/proc is missing the memory is reported as NaN."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
STATM = Path("/proc/self/statm")


def resident_bytes() -> float:
    try:
        return int(STATM.read_text().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return float("nan")


@contextmanager
def metered(record: dict):
    """Fill `record` with `seconds` and `peak_mb` (the resident memory's peak while the block ran)
    and `base_mb` (the resident memory before it)."""
    base = resident_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], resident_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        yield record
    finally:
        record["seconds"] = record.get("seconds", 0.0) + time.perf_counter() - start
        done.set()
        sampler.join()
        peak[0] = max(peak[0], resident_bytes())
        record["peak_mb"] = max(record.get("peak_mb", 0.0), peak[0] / 2**20)
        record.setdefault("base_mb", base / 2**20)


def cost_rows(costs: dict[str, dict], targets: int, items: int) -> list[dict]:
    """One row per method: seconds in all, per target, and per target and 1,000 training items;
    the peak resident memory and its rise over the memory before the method began."""
    rows = []
    for method, record in costs.items():
        seconds = float(record.get("seconds", np.nan))
        per_target = seconds / max(targets, 1)
        rows.append(
            {
                "method": method,
                "seconds": seconds,
                "seconds_per_target": per_target,
                "seconds_per_target_per_1k_items": per_target / max(items / 1000, 1e-9),
                "peak_mb": float(record.get("peak_mb", np.nan)),
                "rise_mb": float(record.get("peak_mb", np.nan) - record.get("base_mb", np.nan)),
                "shared": record.get("shared", ""),
            }
        )
    return rows
