"""Calibration feeds for the encoder: real images through the FP32 tokenizer, at real token counts. Torch-free.

The encoder never sees images, only the tokenizer's selected tokens, and their count varies per image. So the
encoder is calibrated on what it will run on: each image's tokens cut to its own count, grouped so that every
bucket of the bundle's plan is represented.

- ``encoder`` (no mask) feeds hold images of one exact count each: ``tokens [b, n, D]``.
- ``encoder_masked`` feeds hold one bucket each, padded to the bucket's maximum as a static-shape engine runs it:
  ``tokens [b, max, D]`` (padding rows are the image's unselected candidates, as at run time) and ``mask [b, max]``.
- A feed holds at most ``FEED_BATCH`` images, fewer where its activations would be large (``feed_batch``): ModelOpt's
  calibrator keeps every calibrated activation of one feed in memory at once.
- A segmentation bundle's encoders also take ``cells`` [b, G*G] (int64: the row covering each fine cell): every feed
  carries the rows of its images from the same tokenizer run as its tokens, so each index stays below the image's
  own count, inside the rows fed (the exact count, or the bucket's padded maximum), as at run time.
- A latency-only bundle (random weights) has no accuracy to keep, so its images' own token counts matter less than
  covering every bucket: ``spread=True`` tokenizes each image at a threshold of its own (``spread_thresholds``), so
  that the images' counts go round the buckets.

Checks that need no inference (dtype, size, channels, the minimum count) run before the tokenizer does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.preprocess import check_images as check_pixels
from msvit_edge.engines.ort import session
from msvit_edge.errors import MsvitEdgeError

log = logging.getLogger(__name__)

MIN_IMAGES = 128  # fewer and the last buckets' tensors get a handful of images: docs/precision.md
DEFAULT_IMAGES = 512
LATENCY_ONLY_IMAGES = 32  # spread over the buckets: a latency-only bundle has no accuracy to keep (docs/deit-s.md)
FEED_BATCH = 32  # most images per calibration feed
# At most this many bytes of one feed's token rows x width x depth in float32: ModelOpt holds a multiple of it while
# it calibrates a feed (docs/deit-s.md). The demo's feeds stay at FEED_BATCH; DeiT-S's all-fine feeds hold 4 images.
FEED_BYTES = 2**24
TOKENIZER_BATCH = 64

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class CalibrationFeeds:
    """Encoder inputs made from calibration images, and how they cover the bucket plan."""

    encoder: list[Feed]  # one exact token count per feed: {"tokens": [b, n, D]} (segmentation: + "cells" [b, G*G])
    encoder_masked: list[Feed]  # one bucket per feed: {"tokens": [b, max, D], "mask": [b, max]} (and "cells")
    counts: np.ndarray  # int64 [N] token count of each image (CLS included)
    coverage: list[int]  # images per bucket of the plan

    def for_graph(self, name: str) -> list[Feed]:
        """The feeds of graph ``name`` ("encoder" or "encoder_masked")."""
        if name not in ("encoder", "encoder_masked"):
            raise MsvitEdgeError(f"no calibration feeds for graph {name!r}; only the encoders are calibrated")
        return getattr(self, name)


def check_images(bundle: Bundle, images: np.ndarray, minimum: int = MIN_IMAGES) -> None:
    """Refuse calibration images the model cannot take, or too few of them, before any slow work.

    Args:
        bundle: The export bundle to calibrate.
        images: uint8 images [N, H, W, C].
        minimum: Fewest images accepted.
    """
    pre = bundle.record.preprocessing
    check_pixels(images, pre.size, len(pre.mean))  # dtype, layout, size and channels
    if len(images) < minimum:
        raise MsvitEdgeError(
            f"{len(images)} calibration images are too few: INT8 calibration needs at least {minimum} "
            f"(default {DEFAULT_IMAGES}), so that every bucket's token counts are represented"
        )


def encoder_feeds(
    bundle: Bundle,
    images: np.ndarray,
    threads: int | None = None,
    minimum: int = MIN_IMAGES,
    spread: bool = False,
) -> CalibrationFeeds:
    """Run the bundle's FP32 tokenizer on ``images`` and group its tokens into encoder calibration feeds.

    Args:
        bundle: The export bundle.
        images: uint8 images [N, H, W, C] (checked with ``check_images`` first).
        threads: Intra-op threads of the tokenizer session (None: ONNX Runtime's default).
        minimum: Fewest images accepted (below ``MIN_IMAGES`` only to measure what too few does, or with ``spread``).
        spread: Tokenize each image at its own threshold so that the counts cover every bucket
            (``spread_thresholds``; for a latency-only bundle), instead of at the bundle's threshold.
    """
    check_images(bundle, images, minimum)
    plan = bundle.plan
    sess = session(bundle.graph("tokenizer"), threads)
    thresholds = spread_thresholds(bundle, sess, images) if spread else None
    tokens, counts, cells = _tokenize(bundle, sess, images, thresholds)
    buckets = np.array([plan.index(int(c)) for c in counts])
    coverage = [int((buckets == i).sum()) for i in range(len(plan.buckets))]
    log.info(describe_coverage(plan, coverage))
    for i, (b, n) in enumerate(zip(plan.buckets, coverage, strict=True)):
        if n == 0:
            log.warning(
                f"calibration misses bucket {i} (tokens {b.min}..{b.max}): no image has that many tokens, "
                "so its activation ranges come from the other buckets' images"
            )
    exact = [f for n in np.unique(counts) for f in _exact_feeds(bundle, tokens, counts, cells, int(n))]
    padded = [
        f for i, b in enumerate(plan.buckets) for f in _bucket_feeds(bundle, tokens, counts, cells, buckets == i, b.max)
    ]
    return CalibrationFeeds(exact, padded, counts, coverage)


def spread_thresholds(bundle: Bundle, sess, images: np.ndarray) -> np.ndarray:
    """A gate threshold per image [N] that gives image ``i`` a token count in bucket ``i mod buckets``.

    The targets are the counts the bundle's plan saw in each bucket (and its maximum, which every bucket can reach),
    taken in turn. A count rises linearly from the plan's minimum (no region fine) to its maximum (all ``R`` regions
    fine); an image gets ``k`` fine regions from a threshold between its ``k``-th and ``k+1``-th largest gate
    probability. Two equal probabilities (flat regions) make that impossible, and the image lands one region off: the
    coverage that ``encoder_feeds`` reports is measured, not assumed.
    """
    plan = bundle.plan
    probs = np.concatenate(
        [sess.run(["probs"], _feed(bundle, chunk, bundle.threshold))[0] for chunk in _batches(images)]
    )
    lo, hi, regions = plan.buckets[0].min, plan.buckets[-1].max, probs.shape[1]
    targets = [sorted({b.max, *(c for c in plan.histogram if b.min <= c <= b.max)}, reverse=True) for b in plan.buckets]
    thresholds = np.empty(len(images), np.float32)
    for i, p in enumerate(probs):
        options = targets[i % len(targets)]
        k = (options[(i // len(targets)) % len(options)] - lo) * regions // (hi - lo)
        ranked = np.concatenate([[1.0], np.sort(p)[::-1], [0.0]])  # k fine regions: between ranked[k] and [k + 1]
        thresholds[i] = (ranked[k] + ranked[k + 1]) / 2
    return thresholds


def describe_coverage(plan: BucketPlan, coverage: list[int]) -> str:
    """One line: calibration images per bucket of the plan."""
    cells = ", ".join(f"{b.min}..{b.max}: {n}" for b, n in zip(plan.buckets, coverage, strict=True))
    return f"calibration: {sum(coverage)} images over {len(coverage)} buckets (tokens: images) {cells}"


def _tokenize(
    bundle: Bundle, sess, images: np.ndarray, thresholds: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every candidate token [N, M, D] (selected first), counts [N] and, for a segmenter, cells [N, G*G] (rows of
    those tokens: each below its image's count) from the FP32 tokenizer: at the bundle's threshold, or image by image
    at ``thresholds`` [N] (a graph input, one value per call). A classifier's cells are None."""
    if thresholds is None:
        runs = [(chunk, bundle.threshold) for chunk in _batches(images)]
    else:
        runs = [(images[i : i + 1], t) for i, t in enumerate(thresholds)]
    names = ["tokens", "counts", *(["cells"] if bundle.dense else [])]
    outs = [sess.run(names, _feed(bundle, chunk, threshold)) for chunk, threshold in runs]
    tokens, counts = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]).astype(np.int64)
    cells = np.concatenate([o[2] for o in outs]).astype(np.int64) if bundle.dense else None
    if cells is not None and not (cells < counts[:, None]).all():  # the export's contract, relied on by every feed
        raise MsvitEdgeError("the tokenizer's cells index rows past the image's token count", bundle.graph("tokenizer"))
    return tokens, counts, cells


def _batches(images: np.ndarray) -> list[np.ndarray]:
    return [images[i : i + TOKENIZER_BATCH] for i in range(0, len(images), TOKENIZER_BATCH)]


def _feed(bundle: Bundle, images: np.ndarray, threshold: float) -> Feed:
    return {"images": bundle.preprocess(images), "threshold": np.asarray(threshold, dtype=np.float32)}


def feed_batch(bundle: Bundle, rows: int) -> int:
    """Images per calibration feed of ``rows`` token rows: ``FEED_BATCH``, fewer where their activations would
    pass ``FEED_BYTES``."""
    vit = bundle.record.model["vit"]  # read, not built: this runs once per token count and bucket
    return max(1, min(FEED_BATCH, FEED_BYTES // (rows * vit["embed_dim"] * vit["depth"] * 4)))


def _exact_feeds(
    bundle: Bundle, tokens: np.ndarray, counts: np.ndarray, cells: np.ndarray | None, n: int
) -> list[Feed]:
    index = np.flatnonzero(counts == n)
    return [
        {"tokens": np.ascontiguousarray(tokens[c, :n]), **_cells(cells, c)}
        for c in _chunks(index, feed_batch(bundle, n))
    ]


def _bucket_feeds(
    bundle: Bundle, tokens: np.ndarray, counts: np.ndarray, cells: np.ndarray | None, members: np.ndarray, rows: int
) -> list[Feed]:
    feeds = []
    for c in _chunks(np.flatnonzero(members), feed_batch(bundle, rows)):
        mask = np.arange(rows)[None, :] < counts[c, None]
        feeds.append({"tokens": np.ascontiguousarray(tokens[c, :rows]), "mask": mask, **_cells(cells, c)})
    return feeds


def _cells(cells: np.ndarray | None, index: np.ndarray) -> Feed:
    """A segmenter's ``cells`` input for the feed's images (none for a classifier)."""
    return {} if cells is None else {"cells": np.ascontiguousarray(cells[index])}


def _chunks(index: np.ndarray, batch: int) -> list[np.ndarray]:
    return [index[i : i + batch] for i in range(0, len(index), batch)]


def save_feeds(path: Path, feeds: list[Feed]) -> None:
    """Feeds of different shapes in one .npz (keys ``<index>/<input>``), for a quantizer in another process."""
    np.savez(path, **{f"{i}/{name}": a for i, feed in enumerate(feeds) for name, a in feed.items()})


def load_feeds(path: Path) -> list[Feed]:
    """The inverse of ``save_feeds``."""
    feeds: dict[int, Feed] = {}
    with np.load(path) as z:
        for key in z.files:
            i, name = key.split("/", 1)
            feeds.setdefault(int(i), {})[name] = z[key]
    return [feeds[i] for i in sorted(feeds)]
