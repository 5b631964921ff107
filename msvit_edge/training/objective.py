"""The task loss a run trains with, picked from the model's task.

Classification: cross-entropy on the CLS logits with label smoothing (``TrainConfig.label_smoothing``).
Segmentation: pixel cross-entropy with ``TrainConfig.ignore_index`` and no label smoothing (Segmenter's and
MMSegmentation's default). Each image's loss is the mean over its labelled pixels and the batch loss the mean over
images, so the flip gate gradient (``step.flip_gain``), which compares one image's losses, estimates exactly the loss
that trains the backbone. An image without labelled pixels contributes zero. (MMSegmentation averages over the
batch's labelled pixels instead: the same when every image is fully labelled, as the demo scenes are.)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from msvit_edge.model.config import CLASSIFICATION, SEGMENTATION


class Objective:
    """The task loss, per image and per batch, and the accuracy the progress bar shows."""

    def __init__(self, task: str = CLASSIFICATION, label_smoothing: float = 0.0, ignore_index: int = 255):
        self.task, self.label_smoothing, self.ignore_index = task, label_smoothing, ignore_index

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The batch's task loss (a scalar)."""
        if self.task == CLASSIFICATION:
            return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return self.per_image(logits, labels).mean()

    def per_image(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Each image's task loss [B]."""
        if self.task == CLASSIFICATION:
            return F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.label_smoothing)
        pixels = F.cross_entropy(logits, labels, reduction="none", ignore_index=self.ignore_index)  # [B, H, W]
        labelled = (labels != self.ignore_index).flatten(1).sum(1)
        return pixels.flatten(1).sum(1) / labelled.clamp(min=1)

    def accuracy(self, logits: Tensor, labels: Tensor) -> float:
        """Top-1 (classification) or the share of labelled pixels predicted right (segmentation)."""
        hits = logits.argmax(1) == labels
        if self.task == SEGMENTATION:
            labelled = labels != self.ignore_index
            return (hits & labelled).sum().item() / max(1, labelled.sum().item())
        return hits.float().mean().item()
