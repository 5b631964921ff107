"""Interleaved timing: run the candidates in turn (A B C A B C ...) so that machine noise hits them alike."""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved(
    candidates: dict[str, Callable[[int], object]],
    repeats: int,
    warmup: int = 10,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate (called with the repeat index), after ``warmup`` untimed rounds.

    Args:
        candidates: Name -> function to time.
        repeats: Timed rounds.
        warmup: Untimed rounds first (allocations, kernel selection, caches).
        sync: Called before the clock stops (e.g. ``torch.cuda.synchronize``) for asynchronous devices.
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for i in range(warmup + repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn(i)
            if sync is not None:
                sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times
