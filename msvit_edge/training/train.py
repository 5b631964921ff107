"""``msvit-edge train``: stage 1 (backbone at the fine scale) and stage 2 (gate + backbone with gBaS).

Runs single-process or under ``torchrun`` (DistributedDataParallel: NCCL on GPUs, gloo on CPU). The batch size is
GLOBAL: each of the W processes takes ``batch_size / W`` images, and the gBaS batch CDF is taken over the global batch
(``msvit_edge.training.loss.gather_batch``), so W processes train the same model as one process would. Rank 0 logs and
writes:

    OUT/config.json        resolved configuration (written first)
    OUT/train.jsonl        one JSON object per logged step and per epoch (validation)
    OUT/last.safetensors   model after the last finished epoch   } both atomic; --resume continues from them
    OUT/state.pt           optimizer, schedule, gBaS priors      }
    OUT/model.safetensors  the final model (written when training completes)

Recipe choices (the paper gives none beyond "a few epochs"): AdamW, linear warm-up then cosine decay per step,
weight decay 0.05 (not on norms, biases, embeddings or gBaS priors), label smoothing 0.1. A held-out slice of the
training split (``val_size`` items) is the validation set, so the test split is never looked at while training.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from msvit_edge.data import SceneConfig, open_dataset, random_subset, split, unwrap
from msvit_edge.errors import MsvitEdgeError, require
from msvit_edge.io import atomic_path, check_run_folder, raise_if_stopped, write_json
from msvit_edge.model.checkpoint import (
    load_checkpoint,
    load_vit_weights,
    read_checkpoint_header,
    read_torch_file,
    save_checkpoint,
)
from msvit_edge.model.config import GateConfig, GateTraining, MSViTConfig, preset
from msvit_edge.model.msvit import MSViT, pack
from msvit_edge.training.loss import GBaSConfig, GBaSLoss, GeneralizedBatchShaping


@dataclass
class TrainConfig:
    out: str = "runs/demo"
    data: str = "fashion-mnist-scenes"
    stage: str = "msvit"  # "backbone": all-fine ViT, gate frozen; "msvit": gate + backbone with gBaS
    preset: str = "vit_demo_patch8_80"
    num_classes: int | None = None  # overrides the preset's (e.g. a DeiT backbone fine-tuned on 10 classes)
    init: str | None = None  # msvit-edge checkpoint, or timm/DeiT ViT weights (.pth/.safetensors)
    new_gate: bool = False  # with an msvit-edge --init: keep its backbone, start from a freshly initialised gate
    freeze_backbone: bool = False  # stage 2: train only the gate (and gBaS priors) on a fixed backbone
    epochs: int = 5
    batch_size: int = 128  # global, across processes
    lr: float = 1e-3  # the peak: the schedule never exceeds it
    min_lr_fraction: float = 0.01  # the cosine ends at this fraction of the peak (of each group's peak)
    warmup_epochs: float = 0.5
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    gate_lr_mult: float = 1.0  # the gate is new and small: it can take a larger step than a pretrained backbone
    gbas_weight: float = 1.0
    flip_fraction: float = 1.0  # flip gate gradient: share of each batch that gets the extra forward (cost vs noise)
    gbas: GBaSConfig = field(default_factory=GBaSConfig)
    gate: GateConfig = field(default_factory=GateConfig)  # architecture of a new gate (not of an --init checkpoint's)
    gate_training: GateTraining = field(default_factory=GateTraining)
    scene: SceneConfig = field(default_factory=SceneConfig)
    train_size: int | None = None  # use only N (random) training items (quick runs, tests)
    skip_corrupt: bool = False  # ImageFolder: report and skip unreadable images instead of stopping
    val_size: int = 5000
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    log_every: int = 20
    resume: bool = False
    progress: bool = True
    calibrate_threshold: bool = True  # stage 2 ends by setting the default threshold to meet the fine target

    def __post_init__(self) -> None:
        checks = {
            f"--stage must be 'backbone' or 'msvit', got {self.stage!r}": self.stage in ("backbone", "msvit"),
            f"--epochs must be >= 1, got {self.epochs}": self.epochs >= 1,
            f"--batch-size must be >= 2, got {self.batch_size}": self.batch_size >= 2,
            f"--lr must be > 0, got {self.lr}": self.lr > 0,
            f"--min-lr-fraction must be in [0, 1], got {self.min_lr_fraction}": 0 <= self.min_lr_fraction <= 1,
            f"--val-size must be >= 1, got {self.val_size}": self.val_size >= 1,
            f"--flip-fraction must be in (0, 1], got {self.flip_fraction}": 0 < self.flip_fraction <= 1,
            f"--train-size must be >= 1, got {self.train_size}": self.train_size is None or self.train_size >= 1,
            "--freeze-backbone needs --stage msvit (there is nothing else to train)": not (
                self.freeze_backbone and self.stage == "backbone"
            ),
        }
        require(checks)


def train(cfg: TrainConfig) -> Path:
    """Train as ``cfg`` says; returns the final checkpoint path (``OUT/model.safetensors``)."""
    out = check_run_folder(cfg.out)
    if not cfg.resume and (out / "train.jsonl").exists():
        raise MsvitEdgeError("holds a training run already (pass --resume to continue it, or another --out)", out)
    rank, world = _init_distributed()
    if cfg.batch_size % world:
        raise MsvitEdgeError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    device = resolve_device(cfg.device, rank)
    torch.manual_seed(cfg.seed + rank)  # per-rank noise streams; weights are broadcast by DDP anyway
    model, meta = _build_model(cfg)
    train_set, val_set = _datasets(cfg, model)
    step_module = TrainStep(model, cfg).to(device)
    optimizer = _optimizer(step_module, cfg)
    steps_per_epoch = len(train_set) // cfg.batch_size
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch))
    start_epoch = _resume(out, step_module, optimizer, schedule) if cfg.resume else 0
    if rank == 0:
        write_json(out / "config.json", asdict(cfg) | {"world_size": world, "init_meta": meta})
    ddp = _wrap(step_module, device, world)
    log = _Log(out / "train.jsonl", rank == 0, cfg.progress)
    for epoch in range(start_epoch, cfg.epochs):
        _train_epoch(ddp, optimizer, schedule, train_set, epoch, cfg, device, log, world, rank)
        if rank == 0:
            log.write(record := {"epoch": epoch + 1, **validate(model, val_set, cfg, device)})
            log.say(f"epoch {epoch + 1}: val top-1 {record['val_acc']:.4f}, mean tokens {record['val_tokens']:.1f}")
            _save_state(out, step_module, optimizer, schedule, epoch + 1, cfg)
        _barrier(world)
    final = out / "model.safetensors"
    if rank == 0:
        _save_final(model, val_set, cfg, device, log, final)
    _barrier(world)
    if world > 1:
        dist.destroy_process_group()
    return final


def is_main_process() -> bool:
    """True in a single process and in rank 0 under ``torchrun`` (which sets RANK): the one that logs and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def _save_final(model: MSViT, val_set: Dataset, cfg: TrainConfig, device: torch.device, log: _Log, path: Path) -> None:
    """Stage 2 calibrates the default threshold on the validation images, then the final checkpoint is written."""
    meta = {"train": asdict(cfg), "epochs": cfg.epochs}
    if cfg.stage == "msvit" and cfg.calibrate_threshold:
        meta["threshold"] = calibrate_threshold(model, val_set, cfg.gbas.target, device)
        # the one thing training writes into the model's config: the threshold the checkpoint deploys with
        model.config = replace(model.config, threshold=meta["threshold"]["threshold"])
        log.write(record := {"calibrated": meta["threshold"], **validate(model, val_set, cfg, device)})
        log.say(
            f"threshold {meta['threshold']['threshold']:.4f} meets the fine target on validation data: "
            f"val top-1 {record['val_acc']:.4f}, mean tokens {record['val_tokens']:.1f}"
        )
    save_checkpoint(model, path, meta)


class TrainStep(nn.Module):
    """The module DDP wraps: one forward with everything the losses need, on MSViT's one code path."""

    def __init__(self, model: MSViT, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg
        model.gate_training = cfg.gate_training
        self.gbas = GeneralizedBatchShaping(model.num_regions, cfg.gbas) if cfg.stage == "msvit" else None
        for name, p in model.named_parameters():
            p.requires_grad_(cfg.stage == "msvit" if name.startswith("gate.") else not cfg.freeze_backbone)

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Images, labels -> (logits [B, K], gate probabilities [B, R], token counts [B], gate surrogate loss).

        The surrogate is zero unless the gate learns by ``flip``: then its gradient is the flip estimate of the
        task loss's gradient with respect to the gate's probabilities (its value means nothing)."""
        model, cfg = self.model, self.cfg
        if cfg.stage == "backbone":
            logits = model.encode(model.embed(images))
            count = model.vit_config.token_range.max
            ones = logits.new_ones(len(images), model.num_regions)
            return logits, ones, torch.full_like(logits[:, 0], count), logits.new_zeros(())
        out = model.tokenize(images)
        logits = model.encode(*pack(out.tokens, out.counts))
        surrogate = logits.new_zeros(())
        if model.gate_training.gradient == "flip":
            n = max(1, round(cfg.flip_fraction * len(images)))  # the batch is shuffled: its first n are a sample
            fine = model.fine_regions(out)[:n].to(images.dtype)
            regions = torch.randint(model.num_regions, (n,), device=images.device)
            loss = F.cross_entropy(
                logits[:n].detach(), labels[:n], reduction="none", label_smoothing=cfg.label_smoothing
            )
            gain = flip_gain(model, images[:n], labels[:n], fine, regions, loss, cfg.label_smoothing)
            surrogate = model.num_regions * (gain * out.probs[:n].gather(1, regions[:, None])[:, 0]).mean()
        return logits, out.probs, out.counts.float(), surrogate


@torch.no_grad()
def flip_gain(
    model: MSViT, images: Tensor, labels: Tensor, fine: Tensor, regions: Tensor, loss: Tensor, label_smoothing: float
) -> Tensor:
    """Per image b: the task loss with region ``regions[b]`` tokenized fine minus with it coarse [B].

    ``fine`` [B, R] are the sampled decisions and ``loss`` [B] the loss they gave; one more forward, with each image's
    region flipped, gives the other side. With the R regions independent Bernoulli(p) draws, the expected loss is
    linear in each p_r with slope E[L(r fine) - L(r coarse)], so ``R * gain * p[b, regions[b]]`` (one region drawn
    uniformly per image) has the expected loss's gradient, unbiased. The paper's straight-through gradient is a
    first-order guess at that difference; on the demo backbone it pointed the wrong way (``assets/demo.md``).
    """
    rows = torch.arange(len(images), device=images.device)
    flipped = fine.clone()
    flipped[rows, regions] = 1 - flipped[rows, regions]
    out = model.tokenize(images, decisions=flipped)
    other = F.cross_entropy(
        model.encode(*pack(out.tokens, out.counts)), labels, reduction="none", label_smoothing=label_smoothing
    )
    return torch.where(fine[rows, regions] > 0, loss - other, other - loss)


class StepResult(NamedTuple):
    logits: Tensor
    counts: Tensor  # tokens per image
    task: Tensor  # the task loss
    loss: Tensor  # task + weighted gBaS (+ the flip gradient's surrogate, whose value means nothing)
    shaping: GBaSLoss | None  # stage 2 only


def train_step(
    module: nn.Module, gbas: GeneralizedBatchShaping | None, images: Tensor, labels: Tensor, optimizer, cfg: TrainConfig
) -> StepResult:
    """One optimisation step of ``module`` (a ``TrainStep``, DDP-wrapped or not): losses, backward, optimizer."""
    logits, probs, counts, surrogate = module(images, labels)
    task = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    shaping = gbas(probs) if gbas is not None else None
    loss = task + surrogate + (0 if shaping is None else cfg.gbas_weight * shaping.total)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepResult(logits, counts, task, loss, shaping)


def _train_epoch(ddp, optimizer, schedule, train_set, epoch, cfg, device, log, world, rank) -> None:
    step_module: TrainStep = ddp.module if world > 1 else ddp
    loader = _loader(train_set, cfg, epoch, world, rank)
    torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + rank)  # gate noise and flip draws: --resume repeats them
    ddp.train()
    with _Progress(f"epoch {epoch + 1}/{cfg.epochs}", len(loader), log.show) as progress:
        for i, (images, labels) in enumerate(loader):
            raise_if_stopped()  # a stop whose exception a library lost ends training here, not an epoch later
            images, labels = images.to(device), labels.to(device)
            logits, counts, task, loss, shaping = train_step(ddp, step_module.gbas, images, labels, optimizer, cfg)
            schedule.step()
            stats = {
                "loss": loss.item(),
                "acc": (logits.argmax(1) == labels).float().mean().item(),
                "tokens": counts.mean().item(),
            }
            progress.advance(stats)
            if i % cfg.log_every == 0:
                extra = (
                    {} if shaping is None else {"gbas": shaping.total.item(), "mu": step_module.gbas.mu.mean().item()}
                )
                log.write(
                    {"epoch": epoch, "step": i, "lr": schedule.get_last_lr()[0], "task": task.item(), **stats, **extra}
                )


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


def _build_model(cfg: TrainConfig) -> tuple[MSViT, dict]:
    if cfg.init and _is_msvit_checkpoint(cfg.init):
        model, meta = load_checkpoint(cfg.init)
        if cfg.new_gate:
            fresh = MSViT(MSViTConfig(model.vit_config, cfg.gate))
            backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("gate.")}
            missing, unexpected = fresh.load_state_dict(backbone, strict=False)
            assert not unexpected and all(k.startswith("gate.") for k in missing)
            return fresh, meta | {"new_gate": True}
        return model, meta
    overrides = {} if cfg.num_classes is None else {"num_classes": cfg.num_classes}
    model = MSViT(MSViTConfig(preset(cfg.preset, **overrides), cfg.gate))
    if cfg.init:
        load_vit_weights(model, cfg.init, reset_head=cfg.num_classes is not None)
    return model, {"init": cfg.init}


def _is_msvit_checkpoint(path: str) -> bool:
    try:
        read_checkpoint_header(path)
    except MsvitEdgeError:
        return False
    return True


def _datasets(cfg: TrainConfig, model: MSViT) -> tuple[Dataset, Dataset]:
    vit = model.vit_config
    full = open_dataset(
        cfg.data, "train", vit.img_size, vit.mean, vit.std, scene=cfg.scene, skip_corrupt=cfg.skip_corrupt
    )
    classes = len(getattr(full, "classes", ()))
    if classes > vit.num_classes:
        raise MsvitEdgeError(
            f"{classes} classes but the model has {vit.num_classes} outputs (use --num-classes)", cfg.data
        )
    if len(full) <= cfg.val_size:
        raise MsvitEdgeError(f"{len(full)} training items cannot spare {cfg.val_size} for validation", cfg.data)
    train_set, val_set = split(full, cfg.val_size, cfg.seed)
    val_set.dataset = copy.copy(full)  # its own epoch: validation scenes stay as built while training re-renders
    train_set = random_subset(train_set, cfg.train_size, cfg.seed)
    if len(train_set) < cfg.batch_size:
        raise MsvitEdgeError(f"{len(train_set)} training items are fewer than one batch of {cfg.batch_size}", cfg.data)
    return train_set, val_set


def _loader(dataset: Dataset, cfg: TrainConfig, epoch: int, world: int, rank: int) -> DataLoader:
    _set_epoch(dataset, epoch)
    sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size // world,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.workers,
        persistent_workers=False,
    )


def _set_epoch(dataset: Dataset, epoch: int) -> None:
    """Let data sets that re-render per epoch (scenes: new positions and backgrounds) know the epoch."""
    base, _ = unwrap(dataset)
    if hasattr(base, "set_epoch"):
        base.set_epoch(epoch)


def _optimizer(step_module: TrainStep, cfg: TrainConfig) -> torch.optim.Optimizer:
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


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    total, warmup = cfg.epochs * steps_per_epoch, max(1, int(cfg.warmup_epochs * steps_per_epoch))
    floor = cfg.min_lr_fraction  # relative: an absolute floor would exceed a small peak

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _save_state(out: Path, step_module: TrainStep, optimizer, schedule, epoch: int, cfg: TrainConfig) -> None:
    save_checkpoint(step_module.model, out / "last.safetensors", {"epoch": epoch})
    state = {
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "gbas": step_module.gbas.state_dict() if step_module.gbas is not None else {},
    }
    with atomic_path(out / "state.pt") as tmp:
        torch.save(state, tmp)


def _resume(out: Path, step_module: TrainStep, optimizer, schedule) -> int:
    ckpt, state_path = out / "last.safetensors", out / "state.pt"
    if not (ckpt.is_file() and state_path.is_file()):
        raise MsvitEdgeError("nothing to resume: last.safetensors and state.pt are not both there", out)
    model, _ = load_checkpoint(ckpt)
    step_module.model.load_state_dict(model.state_dict())
    state = read_torch_file(state_path)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if step_module.gbas is not None and state["gbas"]:
        step_module.gbas.load_state_dict(state["gbas"])
    return int(state["epoch"])


def _init_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def resolve_device(name: str, rank: int = 0) -> torch.device:
    """A ``--device`` value (auto, cpu, cuda, cuda:N) as a device this PyTorch has; auto: this rank's GPU or the CPU."""
    if name == "auto":
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MsvitEdgeError(f"--device {name}: not a device (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MsvitEdgeError(f"--device {name}: no CUDA GPU is available to this PyTorch")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise MsvitEdgeError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def _wrap(step_module: TrainStep, device: torch.device, world: int) -> nn.Module:
    if world == 1:
        return step_module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(step_module, device_ids=ids)


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


class _Log:
    """Rank-0 JSON-lines log plus a rich progress bar showing the running loss, accuracy and token count."""

    def __init__(self, path: Path, active: bool, progress: bool):
        self.path, self.active, self.show = path, active, progress and active
        self.t0 = time.time()

    def write(self, record: dict) -> None:
        if self.active:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"time": round(time.time() - self.t0, 2), **record}) + "\n")

    def say(self, text: str) -> None:
        if self.active:
            print(text, flush=True)


class _Progress:
    """A rich progress bar showing moving averages of the step statistics; silent when ``show`` is false."""

    def __init__(self, title: str, total: int, show: bool):
        self.title, self.total, self.show = title, total, show
        self.ema: dict[str, float] = {}

    def __enter__(self) -> _Progress:
        if self.show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (
                TextColumn(self.title),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
            )
            self.bar = Progress(*columns).__enter__()
            self.task = self.bar.add_task(self.title, total=self.total, stats="")
        return self

    def __exit__(self, *exc) -> None:
        if self.show:
            self.bar.__exit__(*exc)

    def advance(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self.ema[k] = v if k not in self.ema else 0.9 * self.ema[k] + 0.1 * v
        if self.show:
            self.bar.update(self.task, advance=1, stats=" ".join(f"{k} {v:.3g}" for k, v in self.ema.items()))
