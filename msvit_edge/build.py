"""``msvit-edge build``: an export bundle -> an engine directory (see ``msvit_edge.bundle.engine_folder``), validated.

Two steps, separable on purpose:
1. The precision pass (``msvit_edge.calibration``): FP16 or INT8 ONNX graphs, made once per bundle, calibration set
   and quantizer, and kept in the bundle in a folder named by all of these (``BUNDLE/precision/<backend>-<precision>-
   <key>/``), so that another calibration never replaces graphs an engine runs. It needs ModelOpt (and PyTorch to
   read the calibration images), so it runs on a workstation; ``--graphs-only`` stops after it.
2. The engine build for a backend on this device: nothing for ONNX Runtime (it runs ONNX graphs), serialized
   engines for TensorRT. A Jetson without PyTorch or ModelOpt builds from the precision graphs the bundle carries.

Every engine directory is validated against the bundle's PyTorch reference with the precision's tolerance
(``msvit_edge.bundle.validation``; a segmentation bundle's per pixel and by mIoU, ``DENSE_TOLERANCES``) before it
appears, and is keyed by everything that went into it: a second build with identical inputs reuses it and says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from msvit_edge import __version__
from msvit_edge.bundle import GRAPHS, Bundle, validation
from msvit_edge.bundle.engine_folder import FOLDER, EngineDir, default_engine_dir, file_digests, relative_to
from msvit_edge.bundle.engine_manifest import Device, EngineManifest, SourceBundle
from msvit_edge.calibration.facts import PRECISIONS, PrecisionFacts
from msvit_edge.calibration.images import default_data, load_images
from msvit_edge.calibration.precision import PrecisionGraphs, fewest_images, open_graphs
from msvit_edge.calibration.precision import precision_graphs as make_precision_graphs
from msvit_edge.calibration.tokens import DEFAULT_IMAGES as DEFAULT_CALIB_IMAGES
from msvit_edge.calibration.tokens import LATENCY_ONLY_IMAGES
from msvit_edge.engines import open_pipeline
from msvit_edge.engines.tensorrt import build_engines, timing_cache_file
from msvit_edge.errors import MsvitEdgeError, require
from msvit_edge.io import atomic_dir, check_output, write_json
from msvit_edge.machine.doctor import missing_backend_error
from msvit_edge.machine.environment import (
    backend_version,
    device_description,
    has_nvidia_gpu,
    this_device,
    this_machine,
)

log = logging.getLogger(__name__)
BACKENDS = ("auto", "onnxruntime", "tensorrt")
BACKEND_PACKAGES = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}


@dataclass
class BuildConfig:
    bundle: str = "bundle"  # what `msvit-edge export` writes by default
    precision: str = "fp32"
    backend: str = "auto"  # auto: TensorRT where it and a GPU exist, else ONNX Runtime
    calib: str | None = None  # INT8 calibration data (default: the training split the bundle was planned on)
    # None: DEFAULT_CALIB_IMAGES, or LATENCY_ONLY_IMAGES for a latency-only bundle
    calib_images: int | None = None
    out: str | None = None  # default: BUNDLE/engines/<backend>-<precision>-<device>
    graphs_only: bool = False  # stop after the precision pass (a workstation preparing graphs for a Jetson)
    graphs: str | None = None  # precision graphs made by --graphs-only (default: the one set in BUNDLE/precision)
    force: bool = False
    workspace_gb: float | None = None  # TensorRT builder workspace (None: TensorRT's default, all device memory)
    opt_level: int | None = None  # TensorRT builder optimisation level 0..5 (None: TensorRT's default, 3)

    def __post_init__(self) -> None:
        require(
            {
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}": self.precision
                in PRECISIONS,
                f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}": self.backend in BACKENDS,
                f"--calib-images must be >= 1, got {self.calib_images}": self.calib_images is None
                or self.calib_images >= 1,
                f"--opt-level must be in 0..5, got {self.opt_level}": self.opt_level is None
                or 0 <= self.opt_level <= 5,
            }
        )


def build(cfg: BuildConfig) -> EngineDir | Path:
    """Build as ``cfg`` says; returns the validated engine directory (the precision graphs' folder with
    ``graphs_only``)."""
    bundle = Bundle(cfg.bundle)
    bundle.reference()  # every build is validated against it: refuse a bundle without one before any work
    backend, why = choose_backend(cfg.backend, installed=not cfg.graphs_only)
    device = this_device()
    out = Path(cfg.out) if cfg.out else default_engine_dir(bundle, backend, cfg.precision, device)
    if not cfg.graphs_only:
        check_output(out, FOLDER, force=True)  # ours or empty, and writable; its key is compared below
    log.info(f"build: {bundle.path} -> {backend} {cfg.precision} ({why})")
    made = precision_graphs(bundle, cfg, backend)
    if cfg.graphs_only:
        log.info(f"precision graphs: {made.folder}")
        return made.folder
    facts = made.record
    key = cache_key(bundle, backend, cfg, device, facts.key_entry() if facts else {})
    if (reused := _reuse(out, key, cfg.force)) is not None:
        log.info(f"engine: {out} is up to date (same bundle, backend, precision, device and calibration): reused")
        return reused
    with atomic_dir(out, FOLDER, force=True) as tmp:
        graphs = _engine_files(bundle, backend, made.graphs, tmp, out, cfg)
        manifest = _manifest(bundle, backend, cfg, device, facts, key, out)
        manifest = dataclasses.replace(manifest, graphs=graphs, files=file_digests(tmp, graphs))
        manifest.write(tmp / "manifest.json")
        manifest = dataclasses.replace(manifest, validation=_validate(EngineDir(tmp), cfg.precision))
        manifest.write(tmp / "manifest.json")
    log.info(f"engine: {out}")
    return EngineDir(out)


def choose_backend(requested: str, installed: bool = True) -> tuple[str, str]:
    """The backend to build for, and why (``auto``: TensorRT where it and a GPU exist, else ONNX Runtime).

    Args:
        requested: A backend name or ``auto``.
        installed: Require a named backend to be installed here (not for graphs made for another machine).
    """
    if requested != "auto":
        if installed:
            _require_backend(requested)
        return requested, "as asked"
    if importlib.util.find_spec("tensorrt") is None:
        return "onnxruntime", "auto: TensorRT is not installed here, so ONNX Runtime"
    if not has_nvidia_gpu():
        return "onnxruntime", "auto: TensorRT is installed but no NVIDIA GPU was found, so ONNX Runtime"
    return "tensorrt", "auto: TensorRT and an NVIDIA GPU are present"


def _require_backend(backend: str) -> None:
    if importlib.util.find_spec(BACKEND_PACKAGES[backend]) is None:
        raise missing_backend_error(backend)


def precision_graphs(bundle: Bundle, cfg: BuildConfig, backend: str) -> PrecisionGraphs:
    """The graphs to build from ({stage: path}), the calibration facts for the manifest, and their folder.

    FP16/INT8 graphs are made into ``BUNDLE/precision/<backend>-<precision>-<key>/`` where ModelOpt and PyTorch are
    installed; elsewhere (a Jetson), or with ``--graphs``, the ones a workstation made there are used.
    """
    graphs = {name: bundle.graph(name) for name in (*GRAPHS, "vit") if bundle.graph(name).is_file()}
    if cfg.precision == "fp32":
        return PrecisionGraphs(graphs, {})
    if cfg.graphs or not _can_make_graphs():
        made = open_graphs(Path(cfg.graphs) if cfg.graphs else _made_elsewhere(bundle, cfg, backend))
        log.info(f"precision graphs: {made.folder} (made by --graphs-only)")
        return made._replace(graphs=graphs | made.graphs)
    images = calibration_images(bundle, cfg) if cfg.precision == "int8" else None
    made = make_precision_graphs(bundle, cfg.precision, backend, images, bundle.path / "precision")
    return made._replace(graphs=graphs | made.graphs)


def calibration_images(bundle: Bundle, cfg: BuildConfig) -> np.ndarray:
    """The INT8 calibration images: ``--calib``'s training split (default: the data the bundle was planned on).

    A latency-only bundle has no accuracy to keep: it takes ``LATENCY_ONLY_IMAGES`` by default, and the precision
    pass spreads their token counts over every bucket (``calibration.tokens``).
    """
    latency_only = bundle.record.latency_only
    n = cfg.calib_images or (LATENCY_ONLY_IMAGES if latency_only else DEFAULT_CALIB_IMAGES)
    fewest = fewest_images(latency_only)  # the precision pass's rule, checked before any image is loaded
    require({f"--calib-images must be >= {fewest} (every bucket needs calibration images), got {n}": n >= fewest})
    images, _ = load_images(bundle, cfg.calib, n)
    spread = ", token counts spread over every bucket (a latency-only bundle)" if latency_only else ""
    log.info(f"calibration: {len(images)} images of {cfg.calib or default_data(bundle)} (training split){spread}")
    return images


def _can_make_graphs() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("modelopt", "torch"))


def _made_elsewhere(bundle: Bundle, cfg: BuildConfig, backend: str) -> Path:
    """The one graph set for this backend and precision that a workstation made into the bundle (``build
    --graphs-only``), for a machine that cannot make them."""
    root = bundle.path / "precision"
    found = sorted(p.parent for p in root.glob(f"{backend}-{cfg.precision}*/facts.json"))
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(p.name for p in found)
        raise MsvitEdgeError(
            f"holds {len(found)} {backend} {cfg.precision} graph sets ({names}): pick one with --graphs", root
        )
    raise MsvitEdgeError(
        f"making {cfg.precision} graphs needs ModelOpt and PyTorch (pip install 'msvit-edge[quantize]'); or make "
        f"them on a workstation with `msvit-edge build --bundle B --backend {backend} --precision {cfg.precision} "
        "--graphs-only` and copy the bundle here",
        root,
    )


def cache_key(bundle: Bundle, backend: str, cfg: BuildConfig, device: str, calibration: dict) -> str:
    """sha256 of everything that decides the engine: bundle, backend and version, precision, device, calibration
    (``PrecisionFacts.key_entry``) and build options."""
    inputs = {
        "bundle": bundle.id,
        "backend": backend,
        "backend_version": backend_version(backend),
        "precision": cfg.precision,
        "device": device,
        "calibration": calibration,
        "options": {"workspace_gb": cfg.workspace_gb, "opt_level": cfg.opt_level},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _reuse(out: Path, key: str, force: bool) -> EngineDir | None:
    """The existing engine directory at ``out`` when it was built from the same inputs and its files are unchanged;
    without ``force``, refuse one that is not (saying why), with ``force`` rebuild it."""
    if force or not (out / "manifest.json").is_file():
        return None
    existing = EngineDir(out)  # refuses, naming the file, an engine folder whose files changed since its build
    if existing.record.key != key:
        raise MsvitEdgeError(
            "holds an engine built from other inputs (bundle, calibration, settings or versions): pass --force to "
            "replace it",
            out,
        )
    return existing


def _manifest(
    bundle: Bundle, backend: str, cfg: BuildConfig, device: str, facts: PrecisionFacts | None, key: str, out: Path
) -> EngineManifest:
    """The engine folder's manifest, without its files and their digests, or its validation (added once made)."""
    machine = this_machine()
    options = {k: v for k, v in asdict(cfg).items() if k not in ("bundle", "out", "force", "graphs_only", "graphs")}
    options["calib"] = Path(cfg.calib).name if cfg.calib else None  # its name: where it lay means nothing elsewhere
    return EngineManifest(
        backend=backend,
        backend_version=backend_version(backend),
        precision=cfg.precision,
        # cpu_int8: the kernels ONNX Runtime's INT8 graphs run on here
        device=Device(device, device_description(machine), machine["cpu"]["int8"]),
        bundle=SourceBundle(relative_to(bundle.path, out), bundle.id),
        graphs={},
        buckets=bundle.plan,
        files={},
        build=options,
        calibration=facts.engine_entry() if facts else {},  # fp32: the bundle's own graphs, nothing to say
        tolerance=validation.tolerance_dict(cfg.precision, bundle.dense),
        key=key,
        msvit_edge=__version__,
    )


def _engine_files(bundle: Bundle, backend: str, graphs: dict, tmp: Path, out: Path, cfg: BuildConfig) -> dict:
    """Build the backend's engine files into ``tmp``; returns {stage: path relative to the engine directory}."""
    if backend == "onnxruntime":
        return {name: relative_to(path, out) for name, path in graphs.items()}
    # in the bundle's engines folder where it can be (--force rebuilds reuse it), else in the engine folder
    cache = timing_cache_file(bundle.path / "engines", out, tmp, f"{backend_version(backend)}-{this_device()}")
    facts = build_engines(graphs, bundle, tmp, cfg.precision, cfg.workspace_gb, cfg.opt_level, cache)
    write_json(tmp / "tensorrt.json", facts)
    return {name: f"{name}.plan" for name in facts["engines"]}


def _validate(engine: EngineDir, precision: str) -> dict:
    reference = engine.reference()
    with open_pipeline(engine) as pipe:
        report = validation.validate(pipe, reference, engine.preprocess(reference.images), engine.threshold)
    what = f"{engine.backend} {precision}"
    log.info(validation.describe(report, what))
    latency_only, is_dense = engine.bundle.record.latency_only, engine.bundle.dense
    tolerance = validation.tolerance(precision, is_dense)
    validation.check(report, tolerance, what, latency_only)
    log.info(f"validation passed: {validation.criterion(tolerance, latency_only, is_dense)}")
    return report
