"""Device memory for the TensorRT pipeline: tensors in Polygraphy's device arrays, and the strided copies that cut a
selection's images and token rows out of the tokenizer's output without a trip through the host. Pure: the copy
plan is computed here and run by the pipeline (``cudaMemcpy2DAsync``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class Copy2D(NamedTuple):
    """One ``cudaMemcpy2DAsync``: ``height`` rows of ``width`` bytes, offsets in bytes from each buffer's start."""

    dst: int
    dpitch: int
    src: int
    spitch: int
    width: int
    height: int


def copy_plan(index: np.ndarray, rows: int, candidates: int, row_bytes: int) -> list[Copy2D]:
    """The copies that cut tokens [B, M, D] down to [b, rows, D] for the images ``index`` (ascending).

    Each run of consecutive images is one 2D copy: a pitch of M token rows in the source, ``rows`` in the output.

    Args:
        index: The images to keep, ascending (``Selection.index``).
        rows: Token rows to keep per image (``Selection.rows``).
        candidates: M, token rows per image in the source.
        row_bytes: Bytes per token row (D times the item size).
    """
    copies, start = [], 0
    for end in range(1, len(index) + 1):
        if end == len(index) or index[end] != index[end - 1] + 1:
            src = int(index[start]) * candidates * row_bytes
            dst = start * rows * row_bytes
            copies.append(Copy2D(dst, rows * row_bytes, src, candidates * row_bytes, rows * row_bytes, end - start))
            start = end
    return copies


class DeviceTensor(NamedTuple):
    """A tensor in a ``polygraphy.cuda.DeviceArray``, with its numpy dtype (the pipeline's device array type)."""

    array: Any
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def ptr(self) -> int:
        return self.array.ptr
