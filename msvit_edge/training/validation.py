"""What a run measures on its validation images: top-1 and token counts, and the threshold that meets the target."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from msvit_edge.model.msvit import MSViT, pack
from msvit_edge.training.config import TrainConfig


@torch.no_grad()
def validate(model: MSViT, dataset: Dataset, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Top-1 and mean token count on ``dataset`` at the gate's default threshold (all-fine for stage 1)."""
    model.eval()
    correct = tokens = 0
    for images, labels in DataLoader(dataset, batch_size=256, num_workers=cfg.workers):
        images = images.to(device)
        if cfg.stage == "backbone":
            logits, n = model.encode(model.embed(images)), torch.full((len(images),), model.vit_config.token_range.max)
        else:
            out = model.tokenize(images)
            logits, n = model.encode(*pack(out.tokens, out.counts)), out.counts
        correct += (logits.argmax(1).cpu() == labels).sum().item()
        tokens += n.sum().item()
    return {"val_acc": correct / len(dataset), "val_tokens": tokens / len(dataset)}


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
