"""Token-count buckets: contiguous ranges of counts, one TensorRT optimization profile each.

A static engine shape per bucket runs an image padded to its bucket's maximum, so a plan's cost is the expected
padded compute. ``plan_buckets`` minimises it exactly: dynamic programming over the observed counts, O(K m^2) for m
distinct counts, which is instant for the at most ``3R + 1`` counts an MSViT can produce.

The buckets cover EVERY count the model can produce, ``[R + 1, 4R + 1]``, not only the observed ones: an image
that uses more fine regions than any calibration image still has a profile (the last bucket ends at all-fine), so
no input can fall outside the engine's shapes at run time.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from msvit_edge.errors import MsvitEdgeError


@dataclass(frozen=True)
class Bucket:
    min: int
    opt: int  # TensorRT tunes kernels here; = max because the runtime pads to the bucket's maximum
    max: int
    share: float  # fraction of the calibration images that fall in this bucket


@dataclass(frozen=True)
class BucketPlan:
    buckets: tuple[Bucket, ...]
    histogram: dict[int, int]  # token count -> number of calibration images
    expected_overhead: float  # padded cost / unpadded cost - 1, by the cost model
    batch: tuple[int, int, int] = (1, 1, 64)  # min, opt, max batch of every profile (the graphs' batch range)

    @property
    def mean_count(self) -> float:
        """Mean token count of the calibration images."""
        return sum(c * n for c, n in self.histogram.items()) / sum(self.histogram.values())

    def index(self, tokens: int) -> int:
        """The bucket that holds ``tokens``."""
        if not self.buckets[0].min <= tokens <= self.buckets[-1].max:
            raise MsvitEdgeError(
                f"{tokens} tokens is outside the plan's range [{self.buckets[0].min}, {self.buckets[-1].max}]"
            )
        return bisect.bisect_left([b.max for b in self.buckets], tokens)

    def ranges(self, tokens: bool = True) -> list[dict[int, tuple[int, int, int]]]:
        """The optimisation profiles' (min, opt, max) per dynamic axis: {0: batch, 1: tokens}, one profile per bucket;
        for a graph without a token axis (``tokens=False``), one profile over the batch. The one place buckets become
        profile ranges: the TensorRT build, its trtexec lines and torch-tensorrt take them through
        ``EngineShapes.profiles``."""
        if not tokens:
            return [{0: self.batch}]
        return [{0: self.batch, 1: (b.min, b.opt, b.max)} for b in self.buckets]

    def to_dict(self) -> dict:
        return {
            "buckets": [asdict(b) for b in self.buckets],
            "histogram": {str(k): v for k, v in self.histogram.items()},
            "expected_overhead": self.expected_overhead,
            "batch": list(self.batch),
        }

    @classmethod
    def from_dict(cls, d: dict) -> BucketPlan:
        histogram = {int(k): v for k, v in d["histogram"].items()}
        batch = tuple(d.get("batch", cls.batch))  # bundles before the batch range was recorded: the default
        return cls(tuple(Bucket(**b) for b in d["buckets"]), histogram, d["expected_overhead"], batch)


def plan_buckets(
    counts: Sequence[int],
    k: int,
    cost: Callable[[int], float],
    lo: int,
    hi: int,
    batch: tuple[int, int, int] = (1, 1, 64),
) -> BucketPlan:
    """The K contiguous buckets over ``[lo, hi]`` that minimise the expected padded cost of ``counts``.

    Args:
        counts: Token counts of calibration images.
        k: Number of buckets.
        cost: Cost of running one image at a given token count (e.g. the encoder's MACs).
        lo: Smallest count the model can produce (all coarse).
        hi: Largest count the model can produce (all fine).
        batch: Min, opt and max batch size of every profile.
    """
    histogram = dict(sorted(Counter(int(c) for c in counts).items()))
    values = list(histogram)
    if not values:
        raise MsvitEdgeError("no calibration token counts to plan buckets from")
    if values[0] < lo or values[-1] > hi:
        raise MsvitEdgeError(f"token counts {values[0]}..{values[-1]} fall outside the model's range [{lo}, {hi}]")
    most = len(values) + (values[-1] < hi)  # + an overflow-only last bucket when the observed counts stop short
    if not 1 <= k <= most:
        raise MsvitEdgeError(
            f"cannot plan {k} buckets from {len(values)} distinct token counts "
            f"({', '.join(map(str, values))}); use --buckets between 1 and {most}"
        )
    ends = _optimal_ends(values, [histogram[v] for v in values], k, cost, cost(hi), overflow=values[-1] < hi)
    ends[-1] = hi
    starts = [lo] + [e + 1 for e in ends[:-1]]
    total = len(counts)
    buckets = tuple(
        Bucket(s, e, e, sum(n for c, n in histogram.items() if s <= c <= e) / total)
        for s, e in zip(starts, ends, strict=True)
    )
    padded = sum(n * cost(buckets[bisect.bisect_left(ends, c)].max) for c, n in histogram.items())
    exact = sum(n * cost(c) for c, n in histogram.items())
    return BucketPlan(buckets, histogram, padded / exact - 1, batch)


def _optimal_ends(
    values: list[int], freq: list[int], k: int, cost: Callable[[int], float], last_cost: float, overflow: bool
) -> list[int]:
    """Largest observed count of each bucket; best[j][i] = cheapest cover of values[:i] by j buckets.

    The last bucket pads to the model's maximum (cost ``last_cost`` per image) whatever its observed end, so only
    where it starts matters: the recursion places the first k - 1 buckets, then the start of the last is chosen.
    With ``overflow`` the last bucket may hold no observed count at all (it starts after the largest one): then it
    costs nothing and only guarantees that every possible count has a profile.
    """
    m, inf = len(values), float("inf")
    prefix = [0]
    for f in freq:
        prefix.append(prefix[-1] + f)
    best = [[inf] * (m + 1) for _ in range(k)]
    cut = [[0] * (m + 1) for _ in range(k)]
    best[0][0] = 0.0
    for j in range(1, k):
        for i in range(j, m + 1):
            for t in range(j - 1, i):
                c = best[j - 1][t] + (prefix[i] - prefix[t]) * cost(values[i - 1])
                if c < best[j][i]:
                    best[j][i], cut[j][i] = c, t
    starts = range(k - 1, m + 1 if overflow and k > 1 else m)
    last_start = min(starts, key=lambda t: best[k - 1][t] + (prefix[m] - prefix[t]) * last_cost)
    ends, i = [values[-1]], last_start
    for j in range(k - 1, 0, -1):
        ends.append(values[i - 1])
        i = cut[j][i]
    return ends[::-1]
