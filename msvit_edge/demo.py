"""``msvit-edge demo``: the whole chain on the embedded demo checkpoint, offline, on a laptop's CPU.

``task="segmentation"`` (``demo --task segmentation``) runs the same chain on the second embedded checkpoint, the
segmenter (``assets/demo-segmentation.md``): engines held per pixel and by mIoU, overlays with the predicted and
the ground-truth masks.

export (buckets planned on real scenes, validated against PyTorch) -> build ONNX Runtime FP32 and INT8 (and
TensorRT FP16 and INT8 where it and a GPU exist) -> bench every engine against PyTorch and the plain ViT -> a
report folder with the Markdown report, its plots and gate overlays. One progress line per stage: what it started
from, the result, the time, the file and its size.

Every stage writes its own output atomically, so an interrupted demo leaves whole stages behind, never half of one.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, check_output, write_json
from msvit_edge.reporting import quiet

if TYPE_CHECKING:
    from msvit_edge.measure.record import BenchReport

# The CLI imports this module at startup (cli/measure.py): what the stages import (numpy, Pillow, torch) is
# imported where a stage runs, so that ``msvit-edge --help`` stays quick.

log = logging.getLogger(__name__)

SAMPLE = Path(__file__).parent / "assets" / "fashion-mnist-sample"
FOLDER = FolderKind("a demo folder", "demo.json", lambda c: "out" in c, ("demo.json", "bundle", "report"))


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    force: bool = False
    calib_images: int = 1000  # bucket planning; enough for a stable histogram, quick on 2 cores
    min_seconds: float = 2.0  # timed seconds per batch size in bench
    task: str = "classification"  # or segmentation: the embedded segmenter

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise MsvitEdgeError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")


TASKS = ("classification", "segmentation")


def demo(cfg: DemoConfig) -> BenchReport:
    """Run the chain into ``cfg.out``; returns the bench report."""
    from msvit_edge.data import FASHION_MNIST_CLASSES  # lazy: imports torch
    from msvit_edge.export import export  # lazy: imports torch
    from msvit_edge.measure.bench import BenchConfig, bench  # lazy: numpy and Pillow (CLI startup)
    from msvit_edge.measure.overlay import gate_overlays  # lazy: numpy and Pillow (CLI startup)
    from msvit_edge.measure.report import table  # lazy: numpy and Pillow (CLI startup)

    out = check_output(cfg.out, FOLDER, cfg.force)
    if out.exists():
        shutil.rmtree(out)  # --force on a demo folder: a fresh run (check_output refused anything else)
    write_json(out / "demo.json", asdict(cfg))  # first, so that a demo stopped half way is still known as one
    data, why = demo_data()
    log.info(f"demo: the embedded {'segmentation ' if cfg.task == 'segmentation' else ''}demo checkpoint on {why}")
    bundle = _stage("export", lambda: export(_export_cfg(out, data, cfg)), _exported)
    engines = [_stage(f"build {b} {p}", lambda b=b, p=p: _build(bundle, b, p, data), _built) for b, p in engine_plan()]
    sources = tuple(str(e.path) for e in engines)
    settings = BenchConfig(sources, out=str(out / "report"), min_seconds=cfg.min_seconds, warmup=0.5)
    report = _stage("bench", lambda: bench(settings), lambda r: _folder(out / "report", "report.md"))
    if not bundle.dense:  # bench draws a segmenter's overlays itself (gate decisions, predicted and true masks)
        overlays = partial(gate_overlays, bundle, out / "report" / "overlays", class_names=FASHION_MNIST_CLASSES)
        _stage("overlays", overlays, lambda p: _folder(p[0], "captioned with class and token count"))
    log.info(table(report))
    log.info(f"report: {out / 'report' / 'report.md'} (plots and gate overlays beside it)")
    return report


def demo_data() -> tuple[str, str]:
    """The demo's images: Fashion-MNIST scenes from the Debian package, else the sample shipped in the package."""
    from msvit_edge.data import FASHION_MNIST_DIR, SCENES_SPEC  # lazy: imports torch

    if (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        return SCENES_SPEC, f"Fashion-MNIST scenes ({FASHION_MNIST_DIR})"
    return str(SAMPLE), (
        "the 1,500-item Fashion-MNIST sample shipped in the package (the full set is not installed: "
        "apt-get install dataset-fashion-mnist)"
    )


def engine_plan() -> list[tuple[str, str]]:
    """(backend, precision) of each engine: ONNX Runtime fp32 and int8, and TensorRT fp16 and int8 with a GPU."""
    from msvit_edge.build import choose_backend  # lazy: numpy and Pillow (CLI startup)

    plan = [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    if importlib.util.find_spec("tensorrt") and choose_backend("auto")[0] == "tensorrt":
        plan += [("tensorrt", "fp16"), ("tensorrt", "int8")]
    return plan


def _build(bundle, backend: str, precision: str, data: str):
    from msvit_edge.build import BuildConfig, build  # lazy: numpy and Pillow (CLI startup)

    return build(BuildConfig(str(bundle.path), precision, backend, calib=data, calib_images=256))


def _exported(bundle) -> tuple[Path, int, str]:
    v = bundle.manifest["validation"]["batch1"]["logits"]
    words = f"{len(bundle.plan.buckets)} buckets, ONNX Runtime = PyTorch within {v['max_abs']:.1e}"
    return bundle.path, _size(bundle.path), words


def _built(engine) -> tuple[Path, int, str]:
    """The engine folder, the size of the files it runs (``measure.sources.engine_bytes``: what bench's table says
    too), and its validation: the agreement and the criterion it was held to."""
    from msvit_edge.bundle import validation  # lazy: numpy (CLI startup)
    from msvit_edge.measure.sources import engine_bytes  # lazy: numpy and Pillow (CLI startup)

    v, random = engine.manifest["validation"]["batched"]["logits"], engine.bundle.record.latency_only
    is_dense = engine.bundle.dense
    held = validation.criterion(validation.tolerance(engine.precision, is_dense), random, is_dense)
    if random:
        got = f"cosine >= {v['min_cosine']:.4f}"
    elif is_dense:
        got = f"per-pixel agreement {100 * v['pixel_agreement']:.2f}%"
    else:
        got = f"top-1 agreement {100 * v['top1_agreement']:.2f}%"
    return engine.path, engine_bytes(engine), f"validated: {got}; held to: {held}"


def _folder(path: Path, words: str) -> tuple[Path, int, str]:
    return path, _size(path), words


def _export_cfg(out: Path, data: str, cfg: DemoConfig):
    from msvit_edge.export import ExportConfig  # lazy: imports torch
    from msvit_edge.model.checkpoint import demo_checkpoint  # lazy: imports torch

    ckpt = str(demo_checkpoint(cfg.task)) if cfg.task != "classification" else None  # None: the export's default
    return ExportConfig(out=str(out / "bundle"), ckpt=ckpt, calib=data, calib_images=cfg.calib_images)


def _stage(name: str, run: Callable, outcome: Callable):
    """Run one stage, its own lines quiet, and log the demo's line: name, time, what it made (and its size), and
    the result in words."""
    start = time.perf_counter()
    try:
        with quiet():
            result = run()
    except MsvitEdgeError as e:
        raise MsvitEdgeError(f"demo stage {name} failed: {e}") from None
    path, size, words = outcome(result)
    log.info(f"[{name:<22}] {time.perf_counter() - start:5.1f} s  {path} ({size / 1e6:.2f} MB)  {words}".rstrip())
    return result


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
