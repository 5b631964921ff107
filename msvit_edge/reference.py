"""The PyTorch model a bundle was exported from, found again, and its answers on new images (needs PyTorch).

``bench --data`` compares engines with PyTorch on images the bundle does not carry. The bundle records where its
weights came from: a checkpoint (its name and sha256; found as ``--ckpt`` or the embedded demo, by sha256) or a
random-weights preset (rebuilt from the same seed). Whatever is found must reproduce the bundle's stored reference
logits before it is trusted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle, Reference
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import sha256
from msvit_edge.validation import TOLERANCES


def bundle_model(bundle: Bundle, ckpt: str | Path | None = None):
    """The ``MSViT`` the bundle was exported from (``ckpt``, or the demo checkpoint when its sha256 matches), checked
    against the bundle's stored reference."""
    import torch

    from msvit_edge.checkpoint import demo_checkpoint, load_checkpoint
    from msvit_edge.config import MSViTConfig
    from msvit_edge.msvit import MSViT

    source = bundle.manifest["source"]
    if "random_weights" in source:
        torch.manual_seed(0)  # as export built it
        model = MSViT(MSViTConfig.from_dict(bundle.manifest["model"])).eval()
    else:
        model = load_checkpoint(_checkpoint(source, [*([Path(ckpt)] if ckpt else []), demo_checkpoint()]))[0]
    _check_reproduces(model, bundle)
    return model


def _checkpoint(source: dict, candidates: list[Path]) -> Path:
    """The first candidate with the recorded sha256 (older bundles recorded a path: it is tried last)."""
    for path in (*candidates, Path(source["checkpoint"])):
        if path.is_file() and sha256(path) == source["sha256"]:
            return path
    raise MsvitEdgeError(
        f"the checkpoint this bundle was exported from ({Path(source['checkpoint']).name}, sha256 "
        f"{source['sha256'][:12]}...) is not here: pass it with --ckpt"
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
    if not (np.array_equal(counts, stored.counts[:16]) and diff <= TOLERANCES["fp32"].atol):  # the same weights
        raise MsvitEdgeError(f"the model found for this bundle does not reproduce its reference (max abs {diff:.2e})")


def reference_on(
    bundle: Bundle, x: np.ndarray, labels: np.ndarray, ckpt: str | Path | None = None
) -> tuple[Reference | None, str]:
    """PyTorch's answers on ``x`` (and why there are none: no PyTorch, no checkpoint); ``ckpt``: see
    ``bundle_model``."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "none (PyTorch is not installed here: accuracy against the labels only)"
    try:
        model = bundle_model(bundle, ckpt)
    except MsvitEdgeError as e:
        return None, f"none ({e})"
    logits, counts, probs = answers(model, bundle, x)
    empty = np.zeros((0, 1, 1, 1), np.uint8)  # the images are the caller's; not kept twice
    return Reference(empty, labels, logits, counts, probs), "PyTorch on the same images, now"
