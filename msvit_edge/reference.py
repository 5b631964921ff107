"""The PyTorch model a bundle was exported from, found again, and its answers on new images (needs PyTorch).

``bench --data`` compares engines with PyTorch on images the bundle does not carry. The bundle records where its
weights came from: a checkpoint (found by path, or the embedded demo, and checked by sha256) or a random-weights
preset (rebuilt from the same seed). Whatever is found must reproduce the bundle's stored reference logits before
it is trusted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle, Reference
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import sha256

REPRODUCE_ATOL = 1e-4  # the FP32 tolerance: the same weights through the same code


def bundle_model(bundle: Bundle):
    """The ``MSViT`` the bundle was exported from, checked against the bundle's stored reference."""
    import torch

    from msvit_edge.checkpoint import demo_checkpoint, load_checkpoint
    from msvit_edge.config import MSViTConfig
    from msvit_edge.msvit import MSViT

    source = bundle.manifest["source"]
    if "random_weights" in source:
        torch.manual_seed(0)  # as export built it
        model = MSViT(MSViTConfig.from_dict(bundle.manifest["model"])).eval()
    else:
        model = load_checkpoint(_checkpoint(source, demo_checkpoint()))[0]
    _check_reproduces(model, bundle)
    return model


def _checkpoint(source: dict, demo: Path) -> Path:
    for path in (Path(source["checkpoint"]), demo):
        if path.is_file() and sha256(path) == source["sha256"]:
            return path
    raise MsvitEdgeError(
        f"the checkpoint this bundle was exported from is not here (sha256 {source['sha256'][:12]}...)",
        source["checkpoint"],
    )


def answers(model, bundle: Bundle, x: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's logits, counts and gate probabilities on preprocessed images ``x`` at the bundle's threshold."""
    from msvit_edge.engines.pytorch import TorchPipeline

    pipe = TorchPipeline(model)
    outs = [pipe(x[i : i + batch], bundle.threshold) for i in range(0, len(x), batch)]
    return tuple(np.concatenate([getattr(o, k) for o in outs]) for k in ("logits", "counts", "probs"))


def _check_reproduces(model, bundle: Bundle) -> None:
    stored = bundle.reference()
    logits, counts, _ = answers(model, bundle, bundle.preprocess(stored.images[:16]))
    diff = float(np.abs(logits - stored.logits[:16]).max())
    if not (np.array_equal(counts, stored.counts[:16]) and diff <= REPRODUCE_ATOL):
        raise MsvitEdgeError(f"the model found for this bundle does not reproduce its reference (max abs {diff:.2e})")


def reference_on(bundle: Bundle, x: np.ndarray, labels: np.ndarray) -> tuple[Reference | None, str]:
    """PyTorch's answers on ``x`` (and why there are none: no PyTorch, no checkpoint)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "none (PyTorch is not installed here: accuracy against the labels only)"
    try:
        model = bundle_model(bundle)
    except MsvitEdgeError as e:
        return None, f"none ({e})"
    logits, counts, probs = answers(model, bundle, x)
    empty = np.zeros((0, 1, 1, 1), np.uint8)  # the images are the caller's; not kept twice
    return Reference(empty, labels, logits, counts, probs), "PyTorch on the same images, now"
