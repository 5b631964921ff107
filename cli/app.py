"""``msvit-edge``: each command parses its options and calls one library function.

Heavy libraries (torch, onnxruntime, ModelOpt, TensorRT) are imported inside the commands, so ``--help`` works
without any of them installed.
"""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

import typer

from msvit_edge import __version__
from msvit_edge.errors import MsvitEdgeError, UsageError
from msvit_edge.io import stop_on, stopped
from msvit_edge.reporting import show

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


_debug = {"on": False}  # --debug: tracebacks instead of one-line errors


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of any error."),
) -> None:
    """Train, export and deploy MSViT, a ViT with dynamic mixed-scale tokens."""
    _debug["on"] = debug


def main() -> None:
    """Console entry point: every error is one line on stderr, never a traceback (unless --debug).

    Exit codes: 2 for usage errors (options), 1 for failed work, 128 + 15 after SIGTERM. SIGTERM unwinds like
    Ctrl-C, so atomic outputs remove their temporaries, whatever became of the exception on the way (a library may
    swallow it or turn it into another error).
    """
    stop_on(signal.SIGTERM)
    show()  # the library's progress lines
    warnings.formatwarning = lambda message, *_args, **_kw: f"warning: {message}\n"  # one line, no source path
    try:
        app()
    except MsvitEdgeError as e:
        _fail(e, f"error: {e}", e.exit_code)
    except KeyboardInterrupt as e:
        _fail(e, "interrupted", 130)
    except Exception as e:  # a bug, not the user's input: still one line, and how to see more
        _fail(e, f"error: unexpected {type(e).__name__}: {_first_line(e)} (rerun with --debug for the traceback)", 1)
    finally:
        if (signum := stopped()) is not None:
            typer.secho("terminated", fg="red", err=True)
            sys.exit(128 + signum)


def _fail(error: BaseException, message: str, code: int) -> None:
    if stopped() is not None:
        return  # the finally clause reports the signal
    if _debug["on"]:
        raise error
    typer.secho(message, fg="red", err=True)
    sys.exit(code)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


# Options that train and eval share.
_DATA = typer.Option("fashion-mnist-scenes", help="fashion-mnist-scenes, an IDX folder, an ImageFolder or .npz.")
_SKIP_CORRUPT = typer.Option(False, "--skip-corrupt", help="Report and skip unreadable images and non-image files.")


@app.command()
def train(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder (checkpoints, logs, resolved config)."),
    data: str = _DATA,
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
    skip_corrupt: bool = _SKIP_CORRUPT,
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
        True, "--calibrate-threshold/--no-calibrate-threshold", help="Stage 2: the threshold that meets --fine-target."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.safetensors and OUT/state.pt."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train MSViT (stage 2) or its backbone (stage 1); works under torchrun for data-parallel training."""
    cfg = _train_config(**locals())  # first: locals() is exactly the options here
    from msvit_edge.training.train import is_main_process
    from msvit_edge.training.train import train as run

    final = run(cfg)
    if is_main_process():  # every torchrun process returns here; one line, not one per process
        typer.echo(f"trained: {final}")


def _train_config(
    out: Path, fine_target: float, gate_noise: bool, gate_gradient: str, clutter: int, calibrate: bool, **options
):
    """The ``TrainConfig`` the train command's options describe; the options not named here map one to one."""
    from msvit_edge.data import SceneConfig
    from msvit_edge.model.config import GateTraining
    from msvit_edge.training.loss import GBaSConfig
    from msvit_edge.training.train import TrainConfig

    return TrainConfig(
        out=str(out),
        gbas=GBaSConfig(target=fine_target),
        gate_training=GateTraining(noise=gate_noise, gradient=gate_gradient),
        scene=SceneConfig(clutter=clutter, seed=options["seed"]),
        calibrate_threshold=calibrate,
        **options,
    )


@app.command("eval")
def eval_(
    ckpt: str | None = typer.Option(None, help="msvit-edge checkpoint (default: the embedded demo checkpoint)."),
    data: str = _DATA,
    split: str = typer.Option(
        "test", help="train, test, or val: the images the checkpoint's training held out (its recorded seed and size)."
    ),
    out: Path = typer.Option(Path("runs/eval"), help="Report folder (report.json, report.md, plots, overlays)."),
    limit: int | None = typer.Option(None, min=1, help="Evaluate N images drawn at random (the same N on every run)."),
    overlays: int = typer.Option(8, min=0, help="Number of gate overlay PNGs."),
    device: str = typer.Option("cpu"),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    skip_corrupt: bool = _SKIP_CORRUPT,
) -> None:
    """Accuracy, token counts and GMACs of a checkpoint, with a threshold sweep and baselines."""
    from msvit_edge.measure.evaluate import EvalConfig, evaluate, markdown

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
            preset=preset,
            random_weights=random_weights,
            fine_fraction=fine_fraction,
            simplifier=simplifier,
            force=force,
            skip_corrupt=skip_corrupt,
        )
    )


@app.command()
def build(
    bundle: Path = typer.Option(Path("bundle"), help="Export bundle to build from (what `export` writes by default)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or int8 (int8 is calibrated on --calib images)."),
    backend: str = typer.Option(
        "auto", help="auto (TensorRT where it and a GPU exist, else ONNX Runtime), onnxruntime or tensorrt."
    ),
    calib: str | None = typer.Option(
        None,
        help="INT8 calibration images: fashion-mnist-scenes, an IDX folder, an ImageFolder or .npz (training "
        "split; default: the data the bundle's buckets were planned on).",
    ),
    calib_images: int = typer.Option(512, min=1, help="Number of INT8 calibration images."),
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
    from msvit_edge.build import BuildConfig
    from msvit_edge.build import build as run

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


@app.command()
def bench(
    sources: list[str] | None = typer.Argument(
        None,
        help="Engine folders (from `build`) or bundles (their FP32 graphs in ONNX Runtime); torch:BUNDLE runs the "
        "bundle's PyTorch model eager on --device, torch-cudagraphs:BUNDLE with per-bucket CUDA graphs (CUDA "
        "only). Default: bundle.",
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or jetson (adds power from jtop/tegrastats/sysfs)."),
    data: str | None = typer.Option(
        None, help="Labelled test images (any form eval takes; default: the bundle's validation images)."
    ),
    limit: int = typer.Option(500, min=1, help="With --data: measure N randomly drawn images (seeded, as eval)."),
    ckpt: str | None = typer.Option(
        None, help="The bundle's checkpoint, for PyTorch's answers on --data and torch: sources (found by sha256)."
    ),
    batch: str = typer.Option("1,32", help="Batch sizes to time, comma-separated."),
    thresholds: str | None = typer.Option(None, help="Gate thresholds to sweep, e.g. 0.3,0.5,0.7."),
    batching: str = typer.Option("split", help="Mixed token counts in a batch: split (by bucket) or pad."),
    warmup: float = typer.Option(1.0, min=0.0, help="Seconds of untimed calls first."),
    min_seconds: float = typer.Option(3.0, min=0.0, help="Timed seconds per batch size."),
    iters: int | None = typer.Option(None, min=1, help="Timed calls per batch size (instead of --min-seconds)."),
    threads: int | None = typer.Option(None, min=1, help="ONNX Runtime intra-op threads (default: ORT's)."),
    out: Path = typer.Option(Path("runs/bench"), help="Report folder (report.json/.csv/.md and plots)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    min_accuracy: float | None = typer.Option(None, help="Exit 1 if an engine's top-1 is below this (0..1)."),
    min_agreement: float | None = typer.Option(
        None, help="Exit 1 if an engine's top-1 agreement with PyTorch is below this (0..1)."
    ),
) -> None:
    """Accuracy, latency (and power on Jetson) of engines against PyTorch and the plain ViT."""
    from msvit_edge.measure.bench import BenchConfig
    from msvit_edge.measure.bench import bench as run

    run(
        BenchConfig(
            sources=tuple(sources or ("bundle",)),
            device=device,
            data=data,
            limit=limit,
            ckpt=ckpt,
            batch=_numbers(batch, int, "--batch"),
            thresholds=_numbers(thresholds, float, "--thresholds") if thresholds else (),
            batching=batching,
            warmup=warmup,
            min_seconds=min_seconds,
            iters=iters,
            threads=threads,
            out=str(out),
            force=force,
            min_accuracy=min_accuracy,
            min_agreement=min_agreement,
        )
    )


@app.command()
def doctor() -> None:
    """What is installed, which backends and precisions work here, and how to install what is missing."""
    from msvit_edge.machine.doctor import diagnose, format_report

    typer.echo(format_report(diagnose()))


def _numbers(text: str, kind: type, option: str) -> tuple:
    try:
        return tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, got {text!r}") from None


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for the bundle, engines and report."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """The whole chain on the embedded demo checkpoint: export, build (FP32, INT8), bench, report. CPU, offline."""
    from msvit_edge.demo import DemoConfig
    from msvit_edge.demo import demo as run

    run(DemoConfig(out=str(out), force=force))
