"""``msvit-edge train``: the options of a training run, as one ``TrainConfig`` for ``msvit_edge.training.train``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from msvit_edge.cli.options import DATA, SKIP_CORRUPT
from msvit_edge.model.config import GateTraining

STAGE = typer.Option(
    "msvit",
    case_sensitive=False,
    help="backbone: the all-fine ViT (stage 1); msvit: gate + backbone with gBaS.",
)
GATE_GRADIENT = typer.Option(
    "flip",
    case_sensitive=False,
    help="How the task loss trains the gate: flip (the loss change when a sampled region changes scale; one "
    "extra forward per step) or straight-through (the paper's).",
)
TASK = typer.Option(
    None,
    case_sensitive=False,
    help="What the model does (default: the --init checkpoint's task, else classification). Another task than "
    "--init's keeps its backbone and gate and starts a new head, e.g. a segmenter from the classification demo.",
)
IGNORE_INDEX = typer.Option(255, help="Segmentation: the mask label of unlabelled pixels (left out of loss and mIoU).")
WARMUP_EPOCHS = typer.Option(0.5, min=0.0, help="Epochs of linear learning-rate warm-up before the cosine decay.")
OUT = typer.Option(
    Path("runs/train"), help="Output folder (checkpoints, logs, resolved config): new or empty, or --resume."
)


def train(
    out: Path = OUT,
    data: str = DATA,
    stage: Literal["backbone", "msvit"] = STAGE,
    task: Literal["classification", "segmentation"] | None = TASK,
    ignore_index: int = IGNORE_INDEX,
    preset: str = typer.Option(
        "vit_demo_patch8_80", help="Backbone preset when not starting from an msvit-edge checkpoint."
    ),
    init: str | None = typer.Option(None, help="Start from an msvit-edge checkpoint or timm/DeiT ViT weights."),
    new_gate: bool = typer.Option(
        False, "--new-gate", help="With an msvit-edge --init: keep its backbone, train a freshly initialised gate."
    ),
    freeze_backbone: bool = typer.Option(
        False, "--freeze-backbone", help="Stage 2: train only the gate, on a fixed backbone (a gate warm-up)."
    ),
    num_classes: int | None = typer.Option(
        None,
        help="Classes of the model (segmentation: background included; default: the data's); an --init head with "
        "another number is replaced (fine-tuning).",
    ),
    epochs: int = typer.Option(5, min=1, help="Passes over the training split."),
    batch_size: int = typer.Option(128, min=2, help="Global batch size, split across torchrun processes."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW, warm-up then cosine); never exceeded."),
    min_lr_fraction: float = typer.Option(0.01, help="The cosine decays to this fraction of the peak --lr."),
    warmup_epochs: float = WARMUP_EPOCHS,
    fine_target: float = typer.Option(0.35, help="Compute budget: expected fraction of regions tokenized fine."),
    gbas_weight: float = typer.Option(1.0, help="Weight of the generalized batch-shaping loss."),
    gate_lr_mult: float = typer.Option(1.0, help="Learning-rate multiplier for the gate."),
    flip_fraction: float = typer.Option(
        1.0, help="Flip gate gradient: the share of each batch given the extra forward (less: cheaper, noisier)."
    ),
    train_size: int | None = typer.Option(None, help="Use only N (randomly drawn) training items."),
    skip_corrupt: bool = SKIP_CORRUPT,
    val_size: int = typer.Option(5000, help="Items held out of the training split for validation."),
    clutter: int = typer.Option(0, help="Scenes: fragments of other items as background clutter."),
    gate_noise: bool = typer.Option(True, "--gate-noise/--no-gate-noise", help="Gumbel noise on the gate in training."),
    gate_gradient: Literal["flip", "straight-through"] = GATE_GRADIENT,
    seed: int = typer.Option(0, help="Seed of the weights, the data order, the scenes and the gate noise."),
    workers: int = typer.Option(0, help="Data-loading worker processes (0: in the main process, best on few cores)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    calibrate: bool = typer.Option(
        True, "--calibrate-threshold/--no-calibrate-threshold", help="Stage 2: the threshold that meets --fine-target."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.safetensors and OUT/state.pt."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on a terminal."),
) -> None:
    """Train MSViT (stage 2) or its backbone (stage 1), a classifier or a segmenter; works under torchrun for
    data-parallel training."""
    cfg = _train_config(**locals())  # first: locals() is exactly the options here
    from msvit_edge.training.train import is_main_process  # lazy: imports torch
    from msvit_edge.training.train import train as run  # lazy: imports torch

    final = run(cfg)
    if is_main_process():  # every torchrun process returns here; one line, not one per process
        typer.echo(f"trained: {final}")


def _train_config(
    out: Path, fine_target: float, gate_noise: bool, gate_gradient: str, clutter: int, calibrate: bool, **options
):
    """The ``TrainConfig`` the train command's options describe; the options not named here map one to one."""
    from msvit_edge.data import SceneConfig  # lazy: imports torch
    from msvit_edge.training.loss import GBaSConfig  # lazy: imports torch
    from msvit_edge.training.train import TrainConfig  # lazy: imports torch

    return TrainConfig(
        out=str(out),
        gbas=GBaSConfig(target=fine_target),
        gate_training=GateTraining(noise=gate_noise, gradient=gate_gradient),
        scene=SceneConfig(clutter=clutter, seed=options["seed"]),
        calibrate_threshold=calibrate,
        **options,
    )
