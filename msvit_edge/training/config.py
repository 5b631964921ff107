"""``TrainConfig``: every option of a training run, checked where it is made (the ``train`` command's options)."""

from __future__ import annotations

from dataclasses import dataclass, field

from msvit_edge.data import IGNORE_INDEX, SceneConfig
from msvit_edge.errors import require
from msvit_edge.model.config import TASKS, GateConfig, GateTraining
from msvit_edge.training.loss import GBaSConfig


@dataclass
class TrainConfig:
    out: str = "runs/demo"
    data: str = "fashion-mnist-scenes"
    stage: str = "msvit"  # "backbone": all-fine ViT, gate frozen; "msvit": gate + backbone with gBaS
    preset: str = "vit_demo_patch8_80"
    # classification | segmentation; None: an msvit-edge --init checkpoint's task, else classification. Another task
    # than the checkpoint's keeps its backbone and gate and starts a fresh head (e.g. segmentation from the demo)
    task: str | None = None
    num_classes: int | None = None  # overrides the preset's (e.g. a DeiT backbone fine-tuned on 10 classes); a new
    # segmentation model without it takes the data's class count (the scenes' 11, a classes.txt's)
    ignore_index: int = IGNORE_INDEX  # segmentation: the mask label of unlabelled pixels, left out of loss and scores
    init: str | None = None  # msvit-edge checkpoint, or timm/DeiT ViT weights (.pth/.safetensors)
    new_gate: bool = False  # with an msvit-edge --init: keep its backbone, start from a freshly initialised gate
    freeze_backbone: bool = False  # stage 2: train only the gate (and gBaS priors) on a fixed backbone
    epochs: int = 5
    batch_size: int = 128  # global, across processes
    lr: float = 1e-3  # the peak: the schedule never exceeds it
    min_lr_fraction: float = 0.01  # the cosine ends at this fraction of the peak (of each group's peak)
    warmup_epochs: float = 0.5
    weight_decay: float = 0.05
    label_smoothing: float = 0.1  # classification only: segmentation trains plain pixel cross-entropy, as Segmenter
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
            f"--task must be one of {', '.join(TASKS)}, got {self.task!r}": self.task is None or self.task in TASKS,
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
