"""PyTorch's answers on the validation images, stored in the bundle, and the bundle's FP32 graphs in ONNX Runtime
held to them (``msvit_edge.bundle.validation``)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from msvit_edge.bundle import Bundle, Reference, validation
from msvit_edge.bundle.dense import mark_ignored
from msvit_edge.bundle.preprocess import preprocess, to_uint8
from msvit_edge.data import unwrap
from msvit_edge.engines.ort import OnnxRuntimePipeline
from msvit_edge.export.planning import dataset
from msvit_edge.model.msvit import MSViT, pack


@torch.no_grad()
def make_reference(
    model: MSViT,
    data: str,
    n: int,
    threshold: float,
    skip_corrupt: bool = False,
    batched: bool = False,
    ignore_index: int | None = None,
) -> Reference:
    """PyTorch's answers on ``n`` test-split images, stored as uint8 so every backend starts from the same pixels.

    Each image's logits come from the encoder on that image's tokens alone; ``batched``: from one call on all
    images, padded to the largest count with the key mask (the same answers to within float rounding, which the
    FP32 tolerance allows; for a latency-only bundle, where DeiT-S's image-by-image calls were the export's slowest
    step). A segmenter's answers are its cell logits and label maps (``msvit_edge.bundle.dense``).
    """
    vit = model.vit_config
    data_set = dataset(model, data, "test", n, skip_corrupt, ignore_index)
    images, labels = next(iter(DataLoader(data_set, batch_size=n)))
    pixels = to_uint8(images.numpy(), vit.mean, vit.std)
    x = torch.from_numpy(preprocess(pixels, vit.mean, vit.std))
    out = model.tokenize(x, threshold=threshold)
    labels, cells = labels.numpy().astype(np.int64), model.cell_index(out)
    if cells is not None:  # a segmenter: unlabelled pixels marked as every bundle marks them
        labels = mark_ignored(labels, unwrap(data_set)[0].ignore_index)
    if batched:
        logits = model.graph_logits(*pack(out.tokens, out.counts), cells)
    else:
        cut = [out.tokens[i : i + 1, : out.counts[i]] for i in range(len(x))]  # each image's own tokens (and cells)
        logits = torch.cat(
            [model.graph_logits(t, None, None if cells is None else cells[i : i + 1]) for i, t in enumerate(cut)]
        )
    return Reference(pixels, labels, logits.numpy(), out.counts.numpy(), out.probs.numpy())


def validate_bundle(bundle: Bundle, reference: Reference) -> dict:
    """The bundle's FP32 graphs in ONNX Runtime against PyTorch's reference (``msvit_edge.bundle.validation``)."""
    with OnnxRuntimePipeline(bundle) as pipe:
        return validation.validate(pipe, reference, bundle.preprocess(reference.images), bundle.threshold)
