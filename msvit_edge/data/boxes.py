"""Region geometry for the gate's object scores: which coarse regions of the canvas an object's box touches, and which
hold a boundary between two classes of a label map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def region_overlap(box: Sequence[int], canvas: int, region: int) -> np.ndarray:
    """Which coarse regions of a square canvas a box overlaps.

    Args:
        box: (x0, y0, x1, y1) in px, ends exclusive.
        canvas: Side of the canvas, px.
        region: Side of a coarse region, px; pixels past the last whole region are ignored.

    Returns:
        bool [G, G] with G = canvas // region; [r, c] covers rows r*region.. and columns c*region.. of the canvas.
    """
    if region <= 0:
        raise ValueError(f"region must be positive, got {region}")
    x0, y0, x1, y1 = box
    starts = np.arange(canvas // region) * region
    rows = (starts < y1) & (starts + region > y0)
    cols = (starts < x1) & (starts + region > x0)
    return rows[:, None] & cols[None, :]


def boundary_regions(labels: np.ndarray, region: int, ignore_index: int = 255) -> np.ndarray:
    """Which coarse regions of a label map hold a class boundary.

    A boundary is a pair of 4-neighbouring pixels with different labels, neither of them ``ignore_index``; both pixels
    of the pair count, so a boundary along a region's edge marks the regions on either side.

    Args:
        labels: Integer labels [H, W].
        region: Side of a coarse region, px; pixels past the last whole region are ignored.
        ignore_index: Label of unlabelled pixels.

    Returns:
        bool [H // region, W // region], row-major as ``region_overlap``'s.
    """
    if region <= 0:
        raise ValueError(f"region must be positive, got {region}")
    labelled = labels != ignore_index
    edge = np.zeros(labels.shape, bool)
    for axis in (0, 1):
        first = [slice(None), slice(None)]
        second = [slice(None), slice(None)]
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(first), tuple(second)
        differ = (labels[a] != labels[b]) & labelled[a] & labelled[b]
        edge[a] |= differ
        edge[b] |= differ
    gh, gw = labels.shape[0] // region, labels.shape[1] // region
    return edge[: gh * region, : gw * region].reshape(gh, region, gw, region).any((1, 3))
