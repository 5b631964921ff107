"""Run precision graphs in ONNX Runtime and compare them with the bundle's FP32 graphs. Torch-free.

What every precision is judged by (``docs/precision.md``): top-1 accuracy, top-1 agreement with FP32, and token
counts identical to FP32's (the gate decides the encoder's shapes and must not move). A segmentation bundle's are
the same per pixel: its cell logits [N, K, G, G] are upsampled to the images' size (``validation.agreement``), its
accuracy is the mIoU against label maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msvit_edge.bundle import GRAPHS, Bundle
from msvit_edge.bundle.validation import agreement
from msvit_edge.engines.ort import OnnxRuntimePipeline, session


class GraphsPipeline(OnnxRuntimePipeline):
    """The ONNX Runtime pipeline of a bundle with some of its graphs replaced (precision graphs).

    Args:
        bundle: The export bundle.
        graphs: Stage name -> ONNX file; stages not named run the bundle's FP32 graph.
        threads: Intra-op threads (None: ONNX Runtime's default for the encoders, 1 for the tokenizer).
    """

    def __init__(self, bundle: Bundle, graphs: dict, threads: int | None = None):
        super().__init__(bundle, threads)
        self.graphs = {name: graphs.get(name, bundle.graph(name)) for name in GRAPHS}

    def activate(self) -> None:
        threads = {name: self.threads or (1 if name == "tokenizer" else None) for name in GRAPHS}
        self.sessions = {name: session(path, threads[name]) for name, path in self.graphs.items()}


@dataclass(frozen=True)
class Outputs:
    logits: np.ndarray  # float32 [N, K]; segmentation: [N, K, G, G]
    counts: np.ndarray  # int64 [N]
    size: int | None = None  # the images' pixel size, where dense logits are compared per pixel


def run_graphs(
    bundle: Bundle, graphs: dict, images: np.ndarray, batch: int = 32, threads: int | None = None
) -> Outputs:
    """Logits and token counts of uint8 ``images`` [N, H, W, C] through the bundle with ``graphs`` swapped in."""
    with GraphsPipeline(bundle, graphs, threads) as pipe:
        out = pipe.run_batched(images, bundle.threshold, batch, prepare=bundle.preprocess)
    return Outputs(out.logits, out.counts.astype(np.int64), images.shape[1])


def compare_outputs(actual: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> dict:
    """Top-1 agreement, counts identical, logit error and (with labels) both accuracies, as plain floats.

    Dense logits: ``top1_agreement`` is the share of pixels whose class is the reference's, the accuracies are pixel
    accuracies, and with labels (label maps [N, S, S]) both runs' mIoU are added.
    """
    size = getattr(actual, "size", None) or getattr(reference, "size", None)
    agree = agreement(actual, reference, labels, size=size)
    report = {
        "images": agree.images,
        "top1_agreement": agree.top1_agreement,
        "counts_identical": agree.counts_equal,
        "counts_differ": agree.counts_differ,
        "logits_max_abs": agree.max_abs,
    }
    if labels is not None:
        report["accuracy"] = agree.top1
        report["reference_accuracy"] = agree.reference_top1
    if agree.miou is not None:
        report |= {"miou": agree.miou, "reference_miou": agree.reference_miou}
    return report
