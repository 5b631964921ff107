"""Selection: how a batch's tokens cross from the tokenizer to the encoder. Pure numpy, one home for every backend.

The tokenizer returns every candidate token with the selected ones first and each image's count. The encoder runs
on ``rows`` tokens per image: the batch's largest count, or that count's bucket maximum when an engine needs
bucket-sized shapes. Any image with fewer tokens than ``rows`` needs the key mask (True = a real token), at batch
1 too when padding to a bucket.

Two ways to batch images whose counts differ:
- ``pad``: one encoder call, every image padded to the batch's largest count (the largest bucket it touches).
- ``split``: one encoder call per bucket, each sub-batch padded only within its bucket. Cheaper when counts spread
  over several buckets; more calls when the batch is small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msvit_edge.bundle.buckets import BucketPlan

BATCHING = ("pad", "split")


@dataclass(frozen=True)
class Selection:
    """One encoder call: which images of the batch, at how many rows, in which bucket."""

    index: np.ndarray  # int64 [b]: the batch's images this call encodes (all of them unless batching by bucket)
    counts: np.ndarray  # int64 [b]: their token counts (CLS included)
    rows: int  # N: tokens per image the encoder runs on, >= counts.max()
    bucket: int | None  # the plan's bucket that holds ``rows`` (None without a plan)

    @property
    def masked(self) -> bool:
        """Whether some image has padding rows, so the encoder needs the key mask."""
        return bool((self.counts < self.rows).any())

    def mask(self) -> np.ndarray | None:
        """Key mask [b, rows], True on real tokens; None when every image fills every row."""
        return np.arange(self.rows)[None, :] < self.counts[:, None] if self.masked else None


def select(
    counts: np.ndarray, plan: BucketPlan | None = None, pad_to_bucket: bool = False, batching: str = "pad"
) -> list[Selection]:
    """The encoder calls for a batch with these token counts.

    Args:
        counts: Selected tokens per image [B], as the tokenizer returns them.
        plan: The bundle's bucket plan; needed for ``pad_to_bucket`` and ``split``.
        pad_to_bucket: Run each call at its bucket's maximum (static-shape engines, CUDA graphs).
        batching: ``pad`` (one call) or ``split`` (one call per bucket present).

    Runs once per pipeline call, so it stays on arrays: at batch 1 its Python overhead was a visible share of a
    small model's latency (docs/batch1.md).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    if plan is None and (pad_to_bucket or batching == "split"):
        raise ValueError("padding or splitting by bucket needs the bucket plan")
    if batching == "pad" or len(counts) == 1:  # one image: one bucket, so split is pad
        return [_call(np.arange(len(counts)), counts, plan, pad_to_bucket)]
    buckets = bucket_index(counts, plan)
    present = np.flatnonzero(np.bincount(buckets, minlength=len(plan.buckets)))
    return [_call(np.flatnonzero(buckets == b), counts, plan, pad_to_bucket) for b in present]


def bucket_index(counts: np.ndarray, plan: BucketPlan) -> np.ndarray:
    """The plan's bucket of each count [B] (``BucketPlan.index`` on an array; the same error outside the plan)."""
    ends = np.fromiter((b.max for b in plan.buckets), np.int64, len(plan.buckets))
    outside = (counts < plan.buckets[0].min) | (counts > ends[-1])
    if outside.any():
        plan.index(int(counts[outside][0]))  # raises, naming the count and the plan's range
    return np.searchsorted(ends, counts, side="left")


def _call(index: np.ndarray, counts: np.ndarray, plan: BucketPlan | None, pad_to_bucket: bool) -> Selection:
    mine = counts[index]
    n = int(mine.max())
    bucket = None if plan is None else plan.index(n)
    rows = plan.buckets[bucket].max if pad_to_bucket else n
    return Selection(index, mine, rows, bucket)
