"""Dense (segmentation) answers, torch-free: cell logits to pixel labels, and how two runs' label maps compare.

A segmentation bundle's graphs return class logits per fine cell [B, K, G, G]; the bilinear upsampling to pixels
(Segmenter's, ``align_corners=False``) is linear and fixed, so the host does it (``upsample``), and a device copies
back 1/64 of the pixel logits at the demo's 8 px patches. ``upsample`` reproduces
``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`` to float rounding (a test holds it
to PyTorch's). Reference label maps mark unlabelled pixels ``IGNORED`` (-1), whatever the data set's ignore index.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from msvit_edge.bundle.metrics import SegmentationScores, confusion_matrix, segmentation_scores

IGNORED = -1  # unlabelled pixels in a reference's label maps
CHUNK = 64  # images upsampled at once: [64, K, S, S] float32 stays small at any size


@lru_cache(maxsize=8)
def _weights(grid: int, size: int) -> np.ndarray:
    """[size, grid] bilinear weights of PyTorch's ``align_corners=False`` rule (source clamped at 0)."""
    src = np.maximum((np.arange(size) + 0.5) * (grid / size) - 0.5, 0.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, grid - 1)
    frac = src - lo
    w = np.zeros((size, grid))
    np.add.at(w, (np.arange(size), lo), 1 - frac)
    np.add.at(w, (np.arange(size), hi), frac)
    return w.astype(np.float32)


def upsample(logits: np.ndarray, size: int) -> np.ndarray:
    """Cell logits [N, K, G, G] -> pixel logits [N, K, size, size], float32."""
    w = _weights(logits.shape[-1], size)
    return np.einsum("sg,nkgh,th->nkst", w, np.asarray(logits, np.float32), w, optimize=True)


def pixel_labels(logits: np.ndarray, size: int) -> np.ndarray:
    """Cell logits [N, K, G, G] -> predicted class per pixel [N, size, size] (int16), in chunks of ``CHUNK``."""
    out = np.empty((len(logits), size, size), np.int16)
    for i in range(0, len(logits), CHUNK):
        out[i : i + CHUNK] = upsample(logits[i : i + CHUNK], size).argmax(1)
    return out


def scores(labels: np.ndarray, target: np.ndarray, num_classes: int) -> SegmentationScores:
    """mIoU, pixel accuracy and per-class IoU of predicted label maps against ``target`` (``IGNORED`` left out)."""
    return segmentation_scores(confusion_matrix(labels, target, num_classes, IGNORED))


def mark_ignored(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """Label maps as bundles store them: int64, the data set's unlabelled value (``ignore_index``) as ``IGNORED``."""
    labels = np.array(labels, np.int64)
    labels[labels == ignore_index] = IGNORED
    return labels


def fine_regions(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Which regions the tokenizer made fine, from its gate probabilities [..., R]: above the threshold, and every
    region at threshold 0 (the tokenizer compares logits with logit(0) = -inf; a probability can round to 0)."""
    probs = np.asarray(probs)
    return np.ones(probs.shape, bool) if threshold <= 0 else probs > threshold


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels whose predicted class is the same in two label maps of the same images."""
    return float((np.asarray(a) == np.asarray(b)).mean())
