"""The runtime pipeline every backend implements: tokenizer, selection, encoder.

A backend provides three steps on its OWN array type (numpy for ONNX Runtime on the CPU, torch tensors for the
PyTorch backend, device buffers for TensorRT), so tokens never leave the device between the stages; only token
counts and gate probabilities (after the tokenizer) and logits (at the end) come to the host as numpy:

    tokenize(images, threshold)      -> Tokenized(tokens [B, M, D] backend array, counts [B], probs [B, R][, cells])
    cut(tokens, selection)           -> tokens [b, rows, D] backend array, contiguous
    encode(tokens, selection, cells) -> logits [b, K] numpy

A segmentation bundle's tokenizer also returns ``cells`` [B, G*G] (host int64: the row covering each fine cell),
which the encoder takes for the selection's images, and its logits are per fine cell [b, K, G, G]; nothing else
changes (``msvit_edge.bundle.dense`` turns them into pixel labels).

The glue lives here once: ``msvit_edge.bundle.selection.select`` decides the encoder calls (rows, bucket, mask) from the
counts. Pipelines are context managers, like Polygraphy's runners: ``activate`` acquires sessions or devices.
Setting ``timer`` to a ``StageTimes`` records each stage's time, device-synchronised, for ``bench``.
A backend that can run a single image as ONE call (``one_call``: tokenizer, selection and encoder in one graph, as
ONNX Runtime does) skips the stages at batch 1: at that size a call's fixed costs, not arithmetic, decided the latency
(docs/batch1.md). Its one stage is then timed as ``one call``.
``run_batched`` is the one loop that runs a whole image set in batches (validation, bench, PyTorch's answers,
the precision comparisons).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.selection import Selection, select
from msvit_edge.errors import MsvitEdgeError


class Tokenized(NamedTuple):
    tokens: Any  # [B, M, D] every candidate, the selected ones first; the backend's array type
    counts: np.ndarray  # int64 [B] selected tokens per image (CLS included)
    probs: np.ndarray  # float32 [B, R] gate probability of FINE per region
    cells: np.ndarray | None = None  # int64 [B, G*G] segmentation: row covering each fine cell; None: a classifier


@dataclass
class PipelineOutput:
    logits: np.ndarray  # float32 [B, K]; segmentation: [B, K, G, G]
    counts: np.ndarray  # int64 [B]
    probs: np.ndarray  # float32 [B, R]
    calls: list[Selection]  # the encoder calls that produced the logits


@dataclass
class StageTimes:
    """Seconds per stage of each pipeline call, in call order (encoder: all of a call's encoder runs)."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


class Pipeline(ABC):
    """Tokenizer -> selection -> encoder, on normalised float32 images [B, C, H, W].

    Args:
        plan: The bundle's bucket plan.
        pad_to_bucket: Run the encoder at bucket maxima (static-shape engines and CUDA graphs need it).
        batching: ``pad`` or ``split``: see ``msvit_edge.bundle.selection``. Default: ``split`` with a plan (faster
            when a batch's counts span buckets: ``benchmarks/batching.py``), ``pad`` without one.
    """

    def __init__(self, plan: BucketPlan | None = None, pad_to_bucket: bool = False, batching: str | None = None):
        self.plan, self.pad_to_bucket = plan, pad_to_bucket
        self.batching = batching or ("split" if plan is not None else "pad")
        self.timer: StageTimes | None = None

    def __enter__(self) -> Pipeline:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:  # noqa: B027 - optional hook, most backends need nothing
        """Acquire sessions or devices."""

    def deactivate(self) -> None:  # noqa: B027
        """Release them."""

    def synchronize(self) -> None:  # noqa: B027
        """Wait for the device (asynchronous backends), so that stage times are real."""

    def device_memory(self) -> dict[str, float]:
        """Device memory the pipeline holds now, MB by purpose; {} where it manages none itself."""
        return {}

    @abstractmethod
    def tokenize(self, images: np.ndarray, threshold: float) -> Tokenized:
        """Images -> every candidate token (on the backend's device), counts and gate probabilities (host)."""

    def cut(self, tokens: Any, selection: Selection) -> Any:
        """The selection's images and rows of the candidates, contiguous (numpy-like arrays; override otherwise)."""
        rows = tokens[:, : selection.rows] if len(selection.index) == len(tokens) else tokens[selection.index, :]
        return np.ascontiguousarray(rows[:, : selection.rows])

    @abstractmethod
    def encode(self, tokens: Any, selection: Selection, cells: np.ndarray | None = None) -> np.ndarray:
        """Tokens [b, rows, D] (masked with ``selection.mask()`` where it is not None) -> logits on the host: [b, K],
        or with ``cells`` (a segmenter's [b, G*G] for the selection's images) [b, K, G, G]."""

    def plain_vit(self) -> Callable[[np.ndarray], np.ndarray]:
        """The plain ViT of the same weights (every token fine, no gate) on this backend: images -> logits.

        ``bench`` times MSViT against it. Raises ``MsvitEdgeError`` where the source has no such graph.
        """
        raise MsvitEdgeError(f"{type(self).__name__} has no plain-ViT graph")

    def run_batched(
        self,
        images: np.ndarray,
        threshold: float,
        batch: int = 32,
        prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> PipelineOutput:
        """``images`` in batches of ``batch``, their logits, counts and probs concatenated in image order.

        Args:
            images: The tokenizer's input, or what ``prepare`` turns into it batch by batch (uint8 images and
                ``bundle.preprocess``: a large set is then never held preprocessed all at once).
            threshold: The gate threshold.
            batch: Images per call.
            prepare: Applied to each batch before it runs.

        ``calls`` lists every batch's encoder calls in order; their ``index`` is within their own batch.
        """
        outs = []
        for i in range(0, len(images), batch):
            part = images[i : i + batch]
            outs.append(self(part if prepare is None else prepare(part), threshold))
        logits, counts, probs = (np.concatenate([getattr(o, k) for o in outs]) for k in ("logits", "counts", "probs"))
        return PipelineOutput(logits, counts, probs, [c for o in outs for c in o.calls])

    @property
    def one_call(self) -> bool:
        """Whether a single image runs as one backend call (``tokenize_and_encode``) rather than the three stages."""
        return False

    def tokenize_and_encode(self, images: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
        """One image [1, C, H, W] through tokenizer, selection and encoder in one backend call: logits, counts,
        probs on the host, as the stages would give them. Only where ``one_call``."""
        raise NotImplementedError(f"{type(self).__name__} runs batch 1 as three stages")

    def __call__(self, images: np.ndarray, threshold: float) -> PipelineOutput:
        if len(images) == 1 and self.one_call:
            with self._stage("one call"):
                logits, counts, probs = self.tokenize_and_encode(images, threshold)
            return PipelineOutput(logits, counts, probs, select(counts, self.plan, self.pad_to_bucket, self.batching))
        with self._stage("tokenizer"):
            tok = self.tokenize(images, threshold)
        with self._stage("selection"):
            calls = select(tok.counts, self.plan, self.pad_to_bucket, self.batching)
            cut = [self.cut(tok.tokens, c) for c in calls]
        with self._stage("encoder"):
            cells = [None if tok.cells is None else tok.cells[call.index] for call in calls]
            parts = [self.encode(t, call, c) for call, t, c in zip(calls, cut, cells, strict=True)]
        logits = parts[0] if len(calls) == 1 else _scatter(parts, calls, len(tok.counts))
        return PipelineOutput(logits, tok.counts, tok.probs, calls)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if self.timer is None:
            yield
            return
        start = time.perf_counter()
        yield
        self.synchronize()
        self.timer.seconds[name].append(time.perf_counter() - start)


def _scatter(parts: list[np.ndarray], calls: list[Selection], batch: int) -> np.ndarray:
    """Logits of sub-batches back in the batch's image order."""
    logits = np.empty((batch, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for part, call in zip(parts, calls, strict=True):
        logits[call.index] = part
    return logits
