"""The PyTorch model a bundle was exported from, found again, and its answers on new images (needs PyTorch).

``bench --data`` compares engines with PyTorch on images the bundle does not carry. The bundle records where its
weights came from: a checkpoint (its name and sha256; found as ``--ckpt`` or the embedded demo, by sha256) or a
random-weights preset (rebuilt from the same seed). Whatever is found must reproduce the bundle's stored reference
logits before it is trusted. A segmentation bundle's answers are cell logits [N, K, G, G] beside the label maps, as its
stored reference holds them (``msvit_edge.bundle.dense``: small at any image size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle, Reference
from msvit_edge.errors import MsvitEdgeError


def reference_on(
    bundle: Bundle, x: np.ndarray, labels: np.ndarray, ckpt: str | Path | None = None
) -> tuple[Reference | None, str]:
    """PyTorch's answers on ``x`` (and why there are none: no PyTorch, no checkpoint); ``ckpt``: see
    ``bundle_model``."""
    try:
        import torch  # noqa: F401 - lazy: torch is optional (torch-free bench on a Jetson)
    except ImportError:
        return None, "none (PyTorch is not installed here: accuracy against the labels only)"
    from msvit_edge.engines.pytorch import answers, bundle_model  # lazy: imports torch

    try:
        model = bundle_model(bundle, ckpt)
    except MsvitEdgeError as e:
        return None, f"none ({e})"
    logits, counts, probs = answers(model, bundle, x)
    empty = np.zeros((0, 1, 1, 1), np.uint8)  # the images are the caller's; not kept twice
    return Reference(empty, labels, logits, counts, probs), "PyTorch on the same images, now"
