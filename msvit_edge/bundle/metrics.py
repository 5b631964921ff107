"""Segmentation scores from label maps, with numpy only: a confusion matrix, then mIoU and pixel accuracy; and the
gate's boundary recall and the regions holding a class boundary. Import-free, so training, ``eval``, bench and the
torch-free engine validation share one home.

The conventions are MMSegmentation's: pixels labelled ``ignore_index`` are left out; a class's IoU is
``TP / (TP + FP + FN)`` over the whole evaluated set (not per image); a class that is neither labelled nor predicted
anywhere has no IoU (NaN) and is left out of the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Pixel counts [K, K] (row: labelled class, column: predicted class) of equally shaped integer label maps."""
    valid = target != ignore_index
    truth, guess = target[valid].astype(np.int64), pred[valid].astype(np.int64)
    if truth.size and (truth.min() < 0 or truth.max() >= num_classes or guess.min() < 0 or guess.max() >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1} (and not the ignore index {ignore_index})")
    return np.bincount(num_classes * truth + guess, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    miou: float  # mean of ``iou`` over the classes that have one
    pixel_accuracy: float  # correctly predicted labelled pixels / labelled pixels
    iou: tuple[float, ...]  # per class; NaN for a class neither labelled nor predicted


def segmentation_scores(confusion: np.ndarray) -> SegmentationScores:
    """mIoU, pixel accuracy and per-class IoU of a confusion matrix (``confusion_matrix``, summed over images)."""
    confusion = np.asarray(confusion, np.float64)
    hits = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - hits
    iou = np.divide(hits, union, out=np.full_like(hits, np.nan), where=union > 0)
    miou = float(np.nanmean(iou)) if (union > 0).any() else float("nan")
    total = confusion.sum()
    return SegmentationScores(miou, float(hits.sum() / total) if total else float("nan"), tuple(iou.tolist()))


def json_number(value: float | None) -> float | None:
    """A score as JSON keeps it: JSON has no NaN, so an undefined score is null."""
    return None if value is None or np.isnan(value) else float(value)


def boundary_recall(fine: np.ndarray, boundary: np.ndarray) -> tuple[int, int]:
    """(boundary regions tokenized fine, boundary regions) of bool [..., R] decisions and ``boundary_regions`` maps
    of the same shape; the recall is their ratio (undefined when no region holds a boundary)."""
    fine, boundary = np.asarray(fine, bool), np.asarray(boundary, bool)
    if fine.shape != boundary.shape:
        raise ValueError(f"fine decisions {fine.shape} and boundary regions {boundary.shape} differ in shape")
    return int((fine & boundary).sum()), int(boundary.sum())


def boundary_regions(labels: np.ndarray, region: int, ignore_index: int = 255) -> np.ndarray:
    """Which coarse regions of label maps hold a class boundary.

    A boundary is a pair of 4-neighbouring pixels with different labels, neither of them ``ignore_index``; both pixels
    of the pair count, so a boundary along a region's edge marks the regions on either side.

    Args:
        labels: Integer labels [..., H, W] (one map or a batch).
        region: Side of a coarse region, px; pixels past the last whole region are ignored.
        ignore_index: Label of unlabelled pixels.

    Returns:
        bool [..., H // region, W // region], row-major as ``msvit_edge.data.region_overlap``'s.
    """
    if region <= 0:
        raise ValueError(f"region must be positive, got {region}")
    labels = np.asarray(labels)
    labelled, edge = labels != ignore_index, np.zeros(labels.shape, bool)
    for axis in (-2, -1):
        a = tuple(slice(None, -1) if k == labels.ndim + axis else slice(None) for k in range(labels.ndim))
        b = tuple(slice(1, None) if k == labels.ndim + axis else slice(None) for k in range(labels.ndim))
        differ = (labels[a] != labels[b]) & labelled[a] & labelled[b]
        edge[a] |= differ
        edge[b] |= differ
    *lead, height, width = labels.shape
    gh, gw = height // region, width // region
    return edge[..., : gh * region, : gw * region].reshape(*lead, gh, region, gw, region).any((-3, -1))
