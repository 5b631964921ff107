"""Region geometry for the gate's object scores: which coarse regions of the canvas an object's box touches. (Which
hold a class boundary of a label map: ``msvit_edge.bundle.metrics.boundary_regions``, torch-free for bench.)"""

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
