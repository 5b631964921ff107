"""``msvit-edge export`` and ``build``: a checkpoint to an ONNX bundle, a bundle to an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer


def export(
    out: Path = typer.Option(Path("bundle"), help="Bundle folder to write (refused if it exists, unless --force)."),
    ckpt: str | None = typer.Option(None, help="msvit-edge checkpoint (default: the embedded demo checkpoint)."),
    buckets: int = typer.Option(5, min=1, help="Token-count buckets (one TensorRT profile each)."),
    calib: str = typer.Option(
        "fashion-mnist-scenes", help="Images whose token counts plan the buckets (training split)."
    ),
    calib_images: int | None = typer.Option(
        None, min=1, help="Images for the token-count histogram (default: 2000; 256 with --random-weights)."
    ),
    val_images: int | None = typer.Option(
        None,
        min=1,
        help="Validation images stored with PyTorch's answers, from --calib's test split (default: 128; 32 with "
        "--random-weights).",
    ),
    threshold: float | None = typer.Option(None, help="Gate threshold (default: the checkpoint's)."),
    preset: str | None = typer.Option(
        None, help="With --random-weights: export an untrained model of this preset (e.g. vit_small_patch16_224)."
    ),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="A latency-only bundle: no checkpoint needed, accuracy is meaningless."
    ),
    fine_fraction: float | None = typer.Option(
        None, help="Set the threshold so this share of the calibration images' regions is tokenized fine."
    ),
    simplifier: str = typer.Option("onnxslim", help="onnxslim, onnxsim or none."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists (only once the new one is complete)."),
    skip_corrupt: bool = typer.Option(
        False, "--skip-corrupt", help="Report and skip unreadable images and non-image files in --calib."
    ),
    task: Literal["classification", "segmentation"] | None = typer.Option(
        None,
        case_sensitive=False,
        help="With --random-weights: the model's task (default classification); a checkpoint says its own.",
    ),
    num_classes: int | None = typer.Option(
        None, min=2, help="With --random-weights: the head's classes (default: the preset's; segmentation: 150)."
    ),
    ignore_index: int | None = typer.Option(
        None, help="Segmentation: the mask label of unlabelled pixels in --calib's masks (default 255)."
    ),
) -> None:
    """Export ONNX graphs (tokenizer + encoder) with bucketed token-count profiles, validated against PyTorch.

    A segmentation checkpoint exports the same way: its graphs also carry the cell index and return per-cell logits.
    """
    options = locals() | {"out": str(out), "task": task.lower() if task else None}  # the options are its fields
    from msvit_edge.export import ExportConfig  # lazy: imports torch
    from msvit_edge.export import export as run  # lazy: imports torch

    run(ExportConfig(**options))


def build(
    bundle: Path = typer.Option(Path("bundle"), help="Export bundle to build from (what `export` writes by default)."),
    precision: Literal["fp32", "fp16", "int8"] = typer.Option(
        "fp32", case_sensitive=False, help="int8 is calibrated on --calib images."
    ),
    backend: Literal["auto", "onnxruntime", "tensorrt"] = typer.Option(
        "auto",
        case_sensitive=False,
        help="auto: TensorRT where it and a GPU exist, else ONNX Runtime.",
    ),
    calib: str | None = typer.Option(
        None,
        help="INT8 calibration images: fashion-mnist-scenes, an IDX folder, an ImageFolder or .npz (training "
        "split; default: the data the bundle's buckets were planned on).",
    ),
    calib_images: int | None = typer.Option(
        None,
        min=1,
        help="INT8 calibration images (default: 512; 32 for a latency-only bundle, spread over every bucket).",
    ),
    out: Path | None = typer.Option(
        None, help="Engine folder (default: BUNDLE/engines/<backend>-<precision>-<device>)."
    ),
    graphs_only: bool = typer.Option(
        False, "--graphs-only", help="Only make the FP16/INT8 ONNX graphs (in the bundle), e.g. for a Jetson."
    ),
    graphs: Path | None = typer.Option(
        None,
        help="FP16/INT8 graphs made by --graphs-only to build from (default: the one set for this backend and "
        "precision in BUNDLE/precision, where this machine cannot make them).",
    ),
    workspace_gb: float | None = typer.Option(None, help="TensorRT builder workspace in GB (default: TensorRT's)."),
    opt_level: int | None = typer.Option(None, help="TensorRT builder optimisation level 0..5 (default: 3)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if an identical engine exists; replace OUT."),
) -> None:
    """Build an engine (ONNX Runtime or TensorRT; FP32, FP16 or INT8) from a bundle, validated against PyTorch."""
    from msvit_edge.build import BuildConfig  # lazy: imports numpy and Pillow (startup)
    from msvit_edge.build import build as run  # lazy: imports numpy and Pillow (startup)

    run(
        BuildConfig(
            bundle=str(bundle),
            precision=precision,
            backend=backend,
            calib=calib,
            calib_images=calib_images,
            out=None if out is None else str(out),
            graphs_only=graphs_only,
            graphs=None if graphs is None else str(graphs),
            workspace_gb=workspace_gb,
            opt_level=opt_level,
            force=force,
        )
    )
