"""The runtime pipeline every backend implements: tokenizer, selection, encoder.

Backends (ONNX Runtime, PyTorch, later TensorRT) provide ``tokenize`` and ``encode``; the glue between them lives
here once: read the token counts, cut the candidates to the batch's longest selection (or to its bucket's maximum
with ``pad_to_bucket``, for static-shape engines), add a key mask only when the images' counts differ, encode.
Batch-1 inference therefore never needs the mask.

Pipelines are context managers, like Polygraphy's runners: ``activate`` acquires sessions or devices.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from msvit_edge.buckets import BucketPlan


@dataclass
class PipelineOutput:
    logits: np.ndarray  # float32 [B, K]
    counts: np.ndarray  # int64 [B] tokens per image (CLS included)
    probs: np.ndarray  # float32 [B, R] gate probability of FINE per region
    encoded_length: int  # N the encoder ran at (>= max count: padding to a bucket adds rows)


class Pipeline(ABC):
    """Tokenizer -> selection -> encoder, on normalised float32 images [B, C, H, W]."""

    name = "pipeline"

    def __init__(self, plan: BucketPlan | None = None, pad_to_bucket: bool = False):
        self.plan, self.pad_to_bucket = plan, pad_to_bucket

    def __enter__(self) -> Pipeline:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:  # noqa: B027 - optional hook, most backends need nothing
        """Acquire sessions or devices."""

    def deactivate(self) -> None:  # noqa: B027
        """Release them."""

    @abstractmethod
    def tokenize(self, images: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images -> (candidate tokens [B, M, D] selected first, counts [B], gate probabilities [B, R])."""

    @abstractmethod
    def encode(self, tokens: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Tokens [B, N, D] (+ key mask [B, N]) -> logits [B, K]."""

    def __call__(self, images: np.ndarray, threshold: float) -> PipelineOutput:
        tokens, counts, probs = self.tokenize(images, threshold)
        n = self.encoded_length(counts)
        mask = None if bool((counts == n).all()) else np.arange(n)[None, :] < counts[:, None]
        return PipelineOutput(self.encode(np.ascontiguousarray(tokens[:, :n]), mask), counts, probs, n)

    def encoded_length(self, counts: np.ndarray) -> int:
        """Rows the encoder runs on: the longest selection, or its bucket's maximum when padding to buckets."""
        n = int(counts.max())
        return self.plan.buckets[self.plan.index(n)].max if self.pad_to_bucket and self.plan else n
