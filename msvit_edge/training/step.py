"""One optimisation step: the module DDP wraps (``TrainStep``), the flip gate gradient, the losses, the optimizer.

Recipe choices (the paper gives none beyond "a few epochs"): AdamW, linear warm-up then cosine decay per step,
weight decay 0.05 (not on norms, biases, embeddings or gBaS priors), label smoothing 0.1 for classification. The task
loss is the model's task's (``objective``); everything else, gBaS and the gate gradient included, is the same for a
classifier and a segmenter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from msvit_edge.model.msvit import MSViT
from msvit_edge.training.config import TrainConfig
from msvit_edge.training.loss import GBaSLoss, GeneralizedBatchShaping
from msvit_edge.training.objective import Objective


class TrainStep(nn.Module):
    """The module DDP wraps: one forward with everything the losses need, on MSViT's one code path."""

    def __init__(self, model: MSViT, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.objective = Objective(model.config.task, cfg.label_smoothing, cfg.ignore_index)
        model.gate_training = cfg.gate_training
        self.gbas = GeneralizedBatchShaping(model.num_regions, cfg.gbas) if cfg.stage == "msvit" else None
        for name, p in model.named_parameters():
            p.requires_grad_(cfg.stage == "msvit" if name.startswith("gate.") else not cfg.freeze_backbone)

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Images, labels -> (logits [B, K] or [B, K, S, S], gate probabilities [B, R], token counts [B], gate
        surrogate loss).

        The surrogate is zero unless the gate learns by ``flip``: then its gradient is the flip estimate of the
        task loss's gradient with respect to the gate's probabilities (its value means nothing)."""
        model, cfg = self.model, self.cfg
        if cfg.stage == "backbone":
            logits = model.encode(model.embed(images))
            count = model.vit_config.token_range.max
            ones = logits.new_ones(len(images), model.num_regions)
            return logits, ones, logits.new_full((len(images),), count), logits.new_zeros(())
        out = model.tokenize(images)
        logits = model.encode_selection(out)
        surrogate = logits.new_zeros(())
        if model.gate_training.gradient == "flip":
            n = max(1, round(cfg.flip_fraction * len(images)))  # the batch is shuffled: its first n are a sample
            fine = model.fine_regions(out)[:n].to(images.dtype)
            regions = torch.randint(model.num_regions, (n,), device=images.device)
            loss = self.objective.per_image(logits[:n].detach(), labels[:n])
            gain = flip_gain(model, images[:n], labels[:n], fine, regions, loss, self.objective)
            surrogate = model.num_regions * (gain * out.probs[:n].gather(1, regions[:, None])[:, 0]).mean()
        return logits, out.probs, out.counts.float(), surrogate


@torch.no_grad()
def flip_gain(
    model: MSViT,
    images: Tensor,
    labels: Tensor,
    fine: Tensor,
    regions: Tensor,
    loss: Tensor,
    objective: Objective | float,
) -> Tensor:
    """Per image b: the task loss with region ``regions[b]`` tokenized fine minus with it coarse [B].

    ``fine`` [B, R] are the sampled decisions and ``loss`` [B] the loss they gave (``objective.per_image``; a float
    stands for a classifier's cross-entropy with that label smoothing); one more forward, with each image's region
    flipped, gives the other side. With the R regions independent Bernoulli(p) draws, the expected loss is
    linear in each p_r with slope E[L(r fine) - L(r coarse)], so ``R * gain * p[b, regions[b]]`` (one region drawn
    uniformly per image) has the expected loss's gradient, unbiased. The paper's straight-through gradient is a
    first-order guess at that difference; on the demo backbone it pointed the wrong way (``assets/demo.md``).
    """
    if not isinstance(objective, Objective):
        objective = Objective(label_smoothing=objective)
    rows = torch.arange(len(images), device=images.device)
    flipped = fine.clone()
    flipped[rows, regions] = 1 - flipped[rows, regions]
    other = objective.per_image(model.encode_selection(model.tokenize(images, decisions=flipped)), labels)
    return torch.where(fine[rows, regions] > 0, loss - other, other - loss)


class StepResult(NamedTuple):
    logits: Tensor
    counts: Tensor  # tokens per image
    task: Tensor  # the task loss
    loss: Tensor  # task + weighted gBaS (+ the flip gradient's surrogate, whose value means nothing)
    shaping: GBaSLoss | None  # stage 2 only


def train_step(
    module: nn.Module,
    gbas: GeneralizedBatchShaping | None,
    images: Tensor,
    labels: Tensor,
    optimizer,
    cfg: TrainConfig,
    objective: Objective | None = None,
) -> StepResult:
    """One optimisation step of ``module`` (a ``TrainStep``, DDP-wrapped or not): losses, backward, optimizer.

    ``objective``: the ``TrainStep``'s (DDP hides it); None: a classifier's, with ``cfg.label_smoothing``.
    """
    logits, probs, counts, surrogate = module(images, labels)
    task = (objective or Objective(label_smoothing=cfg.label_smoothing))(logits, labels)
    shaping = gbas(probs) if gbas is not None else None
    loss = task + surrogate + (0 if shaping is None else cfg.gbas_weight * shaping.total)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepResult(logits, counts, task, loss, shaping)


def build_optimizer(step_module: TrainStep, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: decayed weights, undecayed norms/biases/embeddings/priors, the gate."""
    decay, no_decay, gate = [], [], []
    for name, p in step_module.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("model.gate."):
            gate.append(p)
        elif p.ndim < 2 or name.startswith("gbas.") or name.endswith(("pos_embed", "cls_token")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if gate:
        groups.append({"params": gate, "weight_decay": cfg.weight_decay, "lr": cfg.lr * cfg.gate_lr_mult})
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The per-step factor on each group's peak rate: linear warm-up, then cosine down to ``min_lr_fraction``."""
    total, warmup = cfg.epochs * steps_per_epoch, max(1, int(cfg.warmup_epochs * steps_per_epoch))
    floor = cfg.min_lr_fraction  # relative: an absolute floor would exceed a small peak

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
