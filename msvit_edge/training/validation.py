"""What a run measures on its validation images: top-1 (or mIoU and pixel accuracy) and token counts, and the
threshold that meets the target."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from msvit_edge.bundle.metrics import confusion_matrix, segmentation_scores
from msvit_edge.model.config import SEGMENTATION
from msvit_edge.model.msvit import MSViT
from msvit_edge.training.config import TrainConfig


@torch.no_grad()
def validate(model: MSViT, dataset: Dataset, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Scores and mean token count on ``dataset`` at the gate's default threshold (all-fine for stage 1).

    Returns:
        ``val_acc`` (top-1) and ``val_tokens``; a segmenter's ``val_miou``, ``val_pixel_acc`` and ``val_tokens``.
    """
    model.eval()
    segmentation = model.config.task == SEGMENTATION
    K = model.vit_config.num_classes
    correct = tokens = 0
    confusion = np.zeros((K, K), np.int64)
    for images, labels in DataLoader(dataset, batch_size=256, num_workers=cfg.workers):
        images = images.to(device)
        if cfg.stage == "backbone":
            logits, n = model.encode(model.embed(images)), torch.full((len(images),), model.vit_config.token_range.max)
        else:
            out = model.tokenize(images)
            logits, n = model.encode_selection(out), out.counts
        if segmentation:
            confusion += confusion_matrix(logits.argmax(1).cpu().numpy(), labels.numpy(), K, cfg.ignore_index)
        else:
            correct += (logits.argmax(1).cpu() == labels).sum().item()
        tokens += n.sum().item()
    if not segmentation:
        return {"val_acc": correct / len(dataset), "val_tokens": tokens / len(dataset)}
    scores = segmentation_scores(confusion)
    return {"val_miou": scores.miou, "val_pixel_acc": scores.pixel_accuracy, "val_tokens": tokens / len(dataset)}


def describe(record: dict[str, float]) -> str:
    """One line of ``validate``'s scores."""
    if "val_miou" in record:
        scores = f"val mIoU {record['val_miou']:.4f}, pixel accuracy {record['val_pixel_acc']:.4f}"
    else:
        scores = f"val top-1 {record['val_acc']:.4f}"
    return f"{scores}, mean tokens {record['val_tokens']:.1f}"


@torch.no_grad()
def calibrate_threshold(model: MSViT, dataset: Dataset, target: float, device: torch.device) -> dict[str, float]:
    """The gate threshold at which ``target`` of the regions of ``dataset`` are tokenized fine.

    gBaS shapes the gate's probabilities across the batch, but nothing pins them to a 0.5 cut: after a few epochs
    they rank regions well while sitting below or above 0.5. The threshold is the deploy-time knob, so training
    ends by setting its default to meet the requested budget on held-out data.
    """
    model.eval()
    # on the logits in float64: probabilities saturate to exactly 1.0 in float32 and would lose their order
    logits = torch.cat([model.gate(x.to(device)).flatten().double().cpu() for x, _ in DataLoader(dataset, 256)])
    cut = torch.quantile(logits, 1 - target)
    fine_fraction = float((logits > cut).double().mean())  # the model decides fine iff logit > logit(threshold)
    return {"threshold": float(torch.sigmoid(cut)), "fine_fraction": fine_fraction, "target": target}
