"""``msvit-edge eval``, ``bench``, ``doctor`` and ``demo``: what a checkpoint, an engine or this machine can do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from msvit_edge.cli.options import DATA, SKIP_CORRUPT, numbers
from msvit_edge.demo import DemoConfig
from msvit_edge.demo import demo as run_demo

BENCH_DATA = (
    "Labelled test images (any form eval takes; a segmentation bundle's: images with label maps, e.g. "
    "fashion-mnist-scenes; default: the bundle's validation images)."
)
MIN_ACCURACY = "Exit 1 if an engine's top-1 (a segmentation bundle's: mIoU) is below this (0..1)."
MIN_AGREEMENT = (
    "Exit 1 if an engine's top-1 agreement with PyTorch (a segmentation bundle's: per-pixel agreement) is below this "
    "(0..1)."
)


def eval_(
    ckpt: str | None = typer.Option(None, help="msvit-edge checkpoint (default: the embedded demo checkpoint)."),
    data: str = DATA,
    split: Literal["train", "test", "val"] = typer.Option(
        "test",
        case_sensitive=False,
        help="val: the images the checkpoint's training held out (its recorded seed and size).",
    ),
    out: Path = typer.Option(Path("runs/eval"), help="Report folder (report.json, report.md, plots, overlays)."),
    limit: int | None = typer.Option(None, min=1, help="Evaluate N images drawn at random (the same N on every run)."),
    overlays: int = typer.Option(
        8, min=0, help="Number of gate overlay PNGs (a segmenter's with its predicted and ground-truth masks)."
    ),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    skip_corrupt: bool = SKIP_CORRUPT,
    ignore_index: int = typer.Option(
        255, help="Segmentation checkpoints: the mask label of unlabelled pixels (left out of every score)."
    ),
) -> None:
    """Accuracy (a segmenter's mIoU and boundary recall), token counts and GMACs of a checkpoint, with a threshold
    sweep and baselines."""
    from msvit_edge.measure.evaluate import EvalConfig, evaluate, markdown  # lazy: imports torch

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
        ignore_index=ignore_index,
    )
    typer.echo(markdown(evaluate(cfg)))


def bench(
    sources: list[str] | None = typer.Argument(
        None,
        help="Engine folders (from `build`) or bundles (their FP32 graphs in ONNX Runtime); torch:BUNDLE runs the "
        "bundle's PyTorch model eager on --device, torch-cudagraphs:BUNDLE with per-bucket CUDA graphs (CUDA "
        "only). Default: bundle.",
    ),
    device: Literal["auto", "cpu", "cuda", "jetson"] = typer.Option(
        "auto", case_sensitive=False, help="jetson adds power (jtop, tegrastats, sysfs)."
    ),
    data: str | None = typer.Option(None, help=BENCH_DATA),
    limit: int = typer.Option(500, min=1, help="With --data: measure N randomly drawn images (seeded, as eval)."),
    ckpt: str | None = typer.Option(
        None, help="The bundle's checkpoint, for PyTorch's answers on --data and torch: sources (found by sha256)."
    ),
    batch: str = typer.Option("1,32", help="Batch sizes to time, comma-separated."),
    thresholds: str | None = typer.Option(None, help="Gate thresholds to sweep, e.g. 0.3,0.5,0.7."),
    batching: Literal["split", "pad"] = typer.Option(
        "split", case_sensitive=False, help="Mixed token counts in a batch: split by bucket, or pad."
    ),
    warmup: float = typer.Option(1.0, min=0.0, help="Seconds of untimed calls first."),
    min_seconds: float = typer.Option(3.0, min=0.0, help="Timed seconds per batch size."),
    iters: int | None = typer.Option(None, min=1, help="Timed calls per batch size (instead of --min-seconds)."),
    threads: int | None = typer.Option(None, min=1, help="ONNX Runtime intra-op threads (default: ORT's)."),
    out: Path = typer.Option(Path("runs/bench"), help="Report folder (report.json/.csv/.md and plots)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    min_accuracy: float | None = typer.Option(None, help=MIN_ACCURACY),
    min_agreement: float | None = typer.Option(None, help=MIN_AGREEMENT),
    ignore_index: int | None = typer.Option(
        None, help="Segmentation --data: the masks' label of unlabelled pixels (default: what export was told, 255)."
    ),
) -> None:
    """Accuracy (a segmenter's mIoU, boundary recall and overlays), latency (and power on Jetson) of engines against
    PyTorch and the plain ViT."""
    from msvit_edge.measure.bench import BenchConfig  # lazy: imports numpy and Pillow (startup)
    from msvit_edge.measure.bench import bench as run  # lazy: imports numpy and Pillow (startup)

    run(
        BenchConfig(
            sources=tuple(sources or ("bundle",)),
            device=device,
            data=data,
            limit=limit,
            ckpt=ckpt,
            batch=numbers(batch, int, "--batch"),
            thresholds=numbers(thresholds, float, "--thresholds") if thresholds else (),
            batching=batching,
            warmup=warmup,
            min_seconds=min_seconds,
            iters=iters,
            threads=threads,
            out=str(out),
            force=force,
            min_accuracy=min_accuracy,
            min_agreement=min_agreement,
            ignore_index=ignore_index,
        )
    )


def doctor(as_json: bool = typer.Option(False, "--json", help="The report as JSON, for scripts.")) -> None:
    """What is installed, which backends and precisions work here, and how to install what is missing."""
    from msvit_edge.machine.doctor import diagnose, format_report  # lazy: importlib.metadata and the Jetson probes

    report = diagnose()
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for the bundle, engines and report."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    task: Literal["classification", "segmentation"] = typer.Option(
        "classification", case_sensitive=False, help="segmentation: the embedded segmenter (mIoU, mask overlays)."
    ),
) -> None:
    """The whole chain on the embedded demo checkpoint: export, build (FP32, INT8), bench, report. CPU, offline."""
    run_demo(DemoConfig(out=str(out), force=force, task=task.lower()))
