"""``msvit-edge``: each command parses its options and calls one library function.

Heavy libraries (torch, onnxruntime, ModelOpt, TensorRT) are imported inside the commands, so ``--help`` works
without any of them installed.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from msvit_edge import __version__
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import stop_on, stopped

app = typer.Typer(
    help="Train, export and deploy MSViT, a ViT with dynamic mixed-scale tokens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: typer's rich panels render every flag as `--force <bool>`
    context_settings={"max_content_width": 120},  # the terminal's width up to 120 (plain help's default is 80)
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"msvit-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Train, export and deploy MSViT, a ViT with dynamic mixed-scale tokens."""


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1, never a traceback.

    SIGTERM unwinds like Ctrl-C, so atomic outputs remove their temporaries, and the exit code is then 128 + 15
    whatever became of the exception on the way (a library may swallow it or turn it into another error).
    """
    stop_on(signal.SIGTERM)
    try:
        app()
    except MsvitEdgeError as e:
        if stopped() is None:
            typer.secho(f"error: {e}", fg="red", err=True)
            sys.exit(1)
    finally:
        if (signum := stopped()) is not None:
            typer.secho("terminated", fg="red", err=True)
            sys.exit(128 + signum)


@app.command()
def train(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder (checkpoints, logs, resolved config)."),
    data: str = typer.Option(
        "fashion-mnist-scenes", help="fashion-mnist-scenes, an IDX folder, an ImageFolder or .npz."
    ),
    stage: str = typer.Option("msvit", help="'backbone': all-fine ViT (stage 1); 'msvit': gate + backbone with gBaS."),
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
        None, help="Classes of the classifier; an --init classifier with another number is replaced (fine-tuning)."
    ),
    epochs: int = typer.Option(5, min=1),
    batch_size: int = typer.Option(128, min=2, help="Global batch size, split across torchrun processes."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW, warm-up then cosine); never exceeded."),
    min_lr_fraction: float = typer.Option(0.01, help="The cosine decays to this fraction of the peak --lr."),
    warmup_epochs: float = typer.Option(0.5, min=0.0),
    fine_target: float = typer.Option(0.35, help="Compute budget: expected fraction of regions tokenized fine."),
    gbas_weight: float = typer.Option(1.0, help="Weight of the generalized batch-shaping loss."),
    gate_lr_mult: float = typer.Option(1.0, help="Learning-rate multiplier for the gate."),
    flip_fraction: float = typer.Option(
        1.0, help="Flip gate gradient: the share of each batch given the extra forward (less: cheaper, noisier)."
    ),
    train_size: int | None = typer.Option(None, help="Use only N (randomly drawn) training items."),
    skip_corrupt: bool = typer.Option(
        False, "--skip-corrupt", help="Report and skip unreadable images and non-image files."
    ),
    val_size: int = typer.Option(5000, help="Items held out of the training split for validation."),
    clutter: int = typer.Option(0, help="Scenes: fragments of other items as background clutter."),
    gate_noise: bool = typer.Option(True, "--gate-noise/--no-gate-noise", help="Gumbel noise on the gate in training."),
    gate_gradient: str = typer.Option(
        "flip",
        help="How the task loss trains the gate: flip (the loss change when a sampled region changes scale; one "
        "extra forward per step) or straight-through (the paper's).",
    ),
    seed: int = typer.Option(0),
    workers: int = typer.Option(0, help="Data-loading worker processes (0: in the main process, best on few cores)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    calibrate: bool = typer.Option(
        True,
        "--calibrate-threshold/--no-calibrate-threshold",
        help="Stage 2: set the default gate threshold to meet --fine-target on the validation images.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.safetensors and OUT/state.pt."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train MSViT (stage 2) or its backbone (stage 1); works under torchrun for data-parallel training."""
    from msvit_edge.config import GateConfig
    from msvit_edge.data import SceneConfig
    from msvit_edge.loss import GBaSConfig
    from msvit_edge.train import TrainConfig
    from msvit_edge.train import train as run

    cfg = TrainConfig(
        out=str(out),
        data=data,
        stage=stage,
        preset=preset,
        init=init,
        new_gate=new_gate,
        freeze_backbone=freeze_backbone,
        num_classes=num_classes,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        min_lr_fraction=min_lr_fraction,
        warmup_epochs=warmup_epochs,
        gbas_weight=gbas_weight,
        gate_lr_mult=gate_lr_mult,
        flip_fraction=flip_fraction,
        gbas=GBaSConfig(target=fine_target),
        gate=GateConfig(noise=gate_noise, gradient=gate_gradient),
        scene=SceneConfig(clutter=clutter, seed=seed),
        train_size=train_size,
        val_size=val_size,
        seed=seed,
        workers=workers,
        device=device,
        skip_corrupt=skip_corrupt,
        calibrate_threshold=calibrate,
        resume=resume,
        progress=progress,
    )
    typer.echo(f"trained: {run(cfg)}")


@app.command("eval")
def eval_(
    ckpt: str | None = typer.Option(None, help="msvit-edge checkpoint (default: the embedded demo checkpoint)."),
    data: str = typer.Option(
        "fashion-mnist-scenes", help="fashion-mnist-scenes, an IDX folder, an ImageFolder or .npz."
    ),
    split: str = typer.Option(
        "test", help="train, test, or val: the images the checkpoint's training held out (its recorded seed and size)."
    ),
    out: Path = typer.Option(Path("runs/eval"), help="Report folder (report.json, report.md, plots, overlays)."),
    limit: int | None = typer.Option(None, min=1, help="Evaluate only the first N images."),
    overlays: int = typer.Option(8, min=0, help="Number of gate overlay PNGs."),
    device: str = typer.Option("cpu"),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    skip_corrupt: bool = typer.Option(
        False, "--skip-corrupt", help="Report and skip unreadable images and non-image files."
    ),
) -> None:
    """Accuracy, token counts and GMACs of a checkpoint, with a threshold sweep and baselines."""
    from msvit_edge.evaluate import EvalConfig, evaluate, markdown

    cfg = EvalConfig(
        ckpt=ckpt,
        data=data,
        split=split,
        out=str(out),
        limit=limit,
        overlays=overlays,
        device=device,
        force=force,
        skip_corrupt=skip_corrupt,
    )
    typer.echo(markdown(evaluate(cfg)))


@app.command()
def export(
    out: Path = typer.Option(Path("bundle"), help="Bundle folder to write (refused if it exists, unless --force)."),
    ckpt: str | None = typer.Option(None, help="msvit-edge checkpoint (default: the embedded demo checkpoint)."),
    buckets: int = typer.Option(5, min=1, help="Token-count buckets (one TensorRT profile each)."),
    calib: str = typer.Option(
        "fashion-mnist-scenes", help="Images whose token counts plan the buckets (training split)."
    ),
    calib_images: int = typer.Option(2000, min=1, help="Calibration images for the token-count histogram."),
    val_images: int = typer.Option(
        128, min=1, help="Validation images stored with PyTorch's answers (from --calib's test split)."
    ),
    threshold: float | None = typer.Option(None, help="Gate threshold (default: the checkpoint's)."),
    simplifier: str = typer.Option("onnxslim", help="onnxslim, onnxsim or none."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists (only once the new one is complete)."),
    skip_corrupt: bool = typer.Option(
        False, "--skip-corrupt", help="Report and skip unreadable images and non-image files in --calib."
    ),
) -> None:
    """Export ONNX graphs (tokenizer + encoder) with bucketed token-count profiles, validated against PyTorch."""
    from msvit_edge.export import ExportConfig
    from msvit_edge.export import export as run

    run(
        ExportConfig(
            out=str(out),
            ckpt=ckpt,
            buckets=buckets,
            calib=calib,
            calib_images=calib_images,
            val_images=val_images,
            threshold=threshold,
            simplifier=simplifier,
            force=force,
            skip_corrupt=skip_corrupt,
        )
    )
