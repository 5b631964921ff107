"""``msvit-edge train``: stage 1 (backbone at the fine scale) and stage 2 (gate + backbone with gBaS), for a classifier
or a segmenter (the model's config says which; ``objective`` holds the one difference, the task loss).

Runs single-process or under ``torchrun`` (DistributedDataParallel: NCCL on GPUs, gloo on CPU). The batch size is
GLOBAL: each of the W processes takes ``batch_size / W`` images, and the gBaS batch CDF is taken over the global batch
(``msvit_edge.training.loss.gather_batch``), so W processes train the same model as one process would. Rank 0 logs and
writes:

    OUT/config.json        resolved configuration (written first)
    OUT/train.jsonl        one JSON object per logged step and per epoch (validation)
    OUT/last.safetensors   model after the last finished epoch   } both atomic; --resume continues from them
    OUT/state.pt           optimizer, schedule, gBaS priors      }
    OUT/model.safetensors  the final model (written when training completes)

This module is the run from start to end, and the one place the package and its users import training from;
the parts it is made of are listed in ``msvit_edge.training``.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import check_run_folder, raise_if_stopped, write_json
from msvit_edge.model.checkpoint import save_checkpoint
from msvit_edge.model.msvit import MSViT
from msvit_edge.training.config import TrainConfig
from msvit_edge.training.distributed import (
    barrier,
    init_distributed,
    is_main_process,
    resolve_device,
    shut_down,
    wrap,
)
from msvit_edge.training.loaders import epoch_loader, split_datasets
from msvit_edge.training.log import RunLog, StepProgress
from msvit_edge.training.state import build_model, resume, save_state
from msvit_edge.training.step import StepResult, TrainStep, build_optimizer, flip_gain, lr_lambda, train_step
from msvit_edge.training.validation import calibrate_threshold, describe, validate

__all__ = [
    "StepResult",
    "TrainConfig",
    "TrainStep",
    "calibrate_threshold",
    "flip_gain",
    "is_main_process",
    "resolve_device",
    "train",
    "train_step",
    "validate",
]


def train(cfg: TrainConfig) -> Path:
    """Train as ``cfg`` says; returns the final checkpoint path (``OUT/model.safetensors``)."""
    out = check_run_folder(cfg.out)
    if not cfg.resume and (out / "train.jsonl").exists():
        raise MsvitEdgeError("holds a training run already (pass --resume to continue it, or another --out)", out)
    if not cfg.resume and out.is_dir() and any(out.iterdir()):  # never write into what someone else keeps
        raise MsvitEdgeError("is not empty and holds no training run: pass an empty or new --out", out)
    rank, world = init_distributed()
    if cfg.batch_size % world:
        raise MsvitEdgeError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    device = resolve_device(cfg.device, rank)
    torch.manual_seed(cfg.seed + rank)  # per-rank noise streams; weights are broadcast by DDP anyway
    model, meta = build_model(cfg)
    train_set, val_set = split_datasets(cfg, model)
    step_module = TrainStep(model, cfg).to(device)
    optimizer = build_optimizer(step_module, cfg)
    steps_per_epoch = len(train_set) // cfg.batch_size
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))
    start_epoch = resume(out, step_module, optimizer, schedule) if cfg.resume else 0
    if rank == 0:
        write_json(
            out / "config.json", asdict(cfg) | {"task": model.config.task, "world_size": world, "init_meta": meta}
        )
    ddp = wrap(step_module, device, world)
    log = RunLog(out / "train.jsonl", rank == 0, cfg.progress)
    for epoch in range(start_epoch, cfg.epochs):
        _train_epoch(ddp, optimizer, schedule, train_set, epoch, cfg, device, log, world, rank)
        if rank == 0:
            log.write(record := {"epoch": epoch + 1, **validate(model, val_set, cfg, device)})
            log.say(f"epoch {epoch + 1}: {describe(record)}")
            save_state(out, step_module, optimizer, schedule, epoch + 1)
        barrier(world)
    final = out / "model.safetensors"
    if rank == 0:
        _save_final(model, val_set, cfg, device, log, final)
    barrier(world)
    shut_down(world)
    return final


def _train_epoch(ddp, optimizer, schedule, train_set, epoch, cfg, device, log, world, rank) -> None:
    step_module: TrainStep = ddp.module if world > 1 else ddp
    loader = epoch_loader(train_set, cfg, epoch, world, rank)
    torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + rank)  # gate noise and flip draws: --resume repeats them
    ddp.train()
    with StepProgress(f"epoch {epoch + 1}/{cfg.epochs}", len(loader), log.show) as progress:
        for i, (images, labels) in enumerate(loader):
            raise_if_stopped()  # a stop whose exception a library lost ends training here, not an epoch later
            images, labels = images.to(device), labels.to(device)
            objective = step_module.objective
            logits, counts, task, loss, shaping = train_step(
                ddp, step_module.gbas, images, labels, optimizer, cfg, objective
            )
            schedule.step()
            stats = {"loss": loss.item(), "acc": objective.accuracy(logits, labels), "tokens": counts.mean().item()}
            progress.advance(stats)
            if i % cfg.log_every == 0:
                extra = (
                    {} if shaping is None else {"gbas": shaping.total.item(), "mu": step_module.gbas.mu.mean().item()}
                )
                log.write(
                    {"epoch": epoch, "step": i, "lr": schedule.get_last_lr()[0], "task": task.item(), **stats, **extra}
                )


def _save_final(
    model: MSViT, val_set: Dataset, cfg: TrainConfig, device: torch.device, log: RunLog, path: Path
) -> None:
    """Stage 2 calibrates the default threshold on the validation images, then the final checkpoint is written."""
    meta = {"train": asdict(cfg), "epochs": cfg.epochs}
    if cfg.stage == "msvit" and cfg.calibrate_threshold:
        meta["threshold"] = calibrate_threshold(model, val_set, cfg.gbas.target, device)
        # the one thing training writes into the model's config: the threshold the checkpoint deploys with
        model.config = replace(model.config, threshold=meta["threshold"]["threshold"])
        log.write(record := {"calibrated": meta["threshold"], **validate(model, val_set, cfg, device)})
        threshold = meta["threshold"]["threshold"]
        log.say(f"threshold {threshold:.4f} meets the fine target on validation data: {describe(record)}")
    save_checkpoint(model, path, meta)


# tests/test_evaluate.py (not this module's owner) reads the held-out split through this name
_datasets = split_datasets
