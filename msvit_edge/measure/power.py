"""What a source costs besides time: host memory, and on a Jetson the power of every rail while it runs."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from msvit_edge.machine import jetson
from msvit_edge.measure.latency import batches


def memory() -> dict:
    """Host resident memory now and at its peak (the process's, since it started), MB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kb = {k: float(status[k].split()[0]) for k in ("VmRSS", "VmHWM") if k in status}
    return {"rss_mb": kb.get("VmRSS", math.nan) / 1e3, "peak_rss_mb": kb.get("VmHWM", math.nan) / 1e3}


def power(pipe, x: np.ndarray, threshold: float, min_seconds: float, idle_s: float = 2.0) -> dict:
    """Jetson rail power: idle for ``idle_s``, then batch-1 inference for ``min_seconds`` (at least 2 s)."""
    info = jetson.detect()
    calls = batches(x, 1)
    with jetson.open_power_sampler(100) as sampler:
        t0 = time.monotonic()
        time.sleep(idle_s)
        t1, n = time.monotonic(), 0
        while time.monotonic() - t1 < max(min_seconds, 2.0):
            pipe(calls[n % len(calls)], threshold)
            n += 1
        pipe.synchronize()
        t2 = time.monotonic()
    summary = sampler.summary((t1, t2), n, (t0, t1), info, jetson.passive_trips())
    return summary.to_dict()
