"""The precision pass ``msvit-edge build`` calls: an export bundle -> the graphs to run at FP32, FP16 or INT8.

Made once on a workstation (ModelOpt and ONNX Runtime there; PyTorch only to load ``--calib`` data), written into
the engine directory; a Jetson builds engines from these files with neither. Choices (measured in
docs/precision.md):

- The tokenizer stays the bundle's FP32 graph at every precision: its gate decides the token counts, which must
  equal the reference's, and it is a small share of the time.
- FP16: both encoders through ModelOpt AutoCast, I/O and LayerNormalization FP32.
- INT8: both encoders calibrated on real tokens (``calibration.tokens``) by ModelOpt, entropy calibration. TensorRT
  gets the unquantized rest in FP16, ONNX Runtime on the CPU in FP32 (its CPU kernels gain nothing from FP16).
  ModelOpt's graph beat ONNX Runtime's own ``quantize_static`` on the CPU in top-1 agreement and in speed;
  ``quantizer="onnxruntime"`` still makes that one, for ONNX Runtime, where ModelOpt cannot be installed.

Results are cached in a folder named by ``cache_key``: the same bundle graphs, images and settings give the same
graphs, so a second call copies them instead of calibrating again. Any difference in those gives another key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple

import numpy as np

from msvit_edge import __version__
from msvit_edge.bundle import GRAPHS, Bundle
from msvit_edge.calibration import fp16, int8, ort_int8
from msvit_edge.calibration.isolated import Job
from msvit_edge.calibration.tokens import check_images, encoder_feeds
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import atomic_dir, atomic_path, write_json

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("onnxruntime", "tensorrt")
ENCODERS = ("encoder", "encoder_masked")
QUANTIZERS = ("modelopt", "onnxruntime")
CACHE_FORMAT = 3  # bumped whenever the graphs a key names change (2: attention unquantized, 3: plain ViT)


class PrecisionGraphs(NamedTuple):
    graphs: dict[str, Path]  # tokenizer, encoder, encoder_masked -> the ONNX file to build or run
    facts: dict  # for the engine manifest: quantizer, method, calibration images and coverage, kept-FP32 ops


def default_cache_dir() -> Path:
    """``$MSVIT_EDGE_CACHE/calibration``, else ``$XDG_CACHE_HOME`` or ``~/.cache``, under ``msvit-edge``."""
    root = os.environ.get("MSVIT_EDGE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(root) / "msvit-edge" / "calibration"


def settings_for(precision: str, backend: str, method: str | None = None, quantizer: str | None = None) -> dict:
    """Everything that decides the precision graphs besides the bundle and the images (part of the cache key)."""
    if precision not in PRECISIONS or backend not in BACKENDS:
        raise MsvitEdgeError(
            f"precision must be one of {', '.join(PRECISIONS)} and backend one of {', '.join(BACKENDS)}, "
            f"got {precision!r} for {backend!r}"
        )
    if precision != "int8" and (method or quantizer):
        raise MsvitEdgeError(f"a calibration method or quantizer applies to int8 only, not {precision}")
    if precision == "fp32":
        return {"precision": "fp32"}
    if precision == "fp16":
        return {"precision": "fp16", "tokenizer": "fp32", "keep_fp32": list(fp16.KEEP_FP32)}
    quantizer, allowed = quantizer or "modelopt", QUANTIZERS if backend == "onnxruntime" else ("modelopt",)
    if quantizer not in allowed:
        raise MsvitEdgeError(f"the INT8 quantizer for {backend} must be {' or '.join(allowed)}, got {quantizer!r}")
    methods = int8.METHODS if quantizer == "modelopt" else ort_int8.METHODS
    method = method or (int8.DEFAULT_METHOD if quantizer == "modelopt" else ort_int8.DEFAULT_METHOD)
    if method not in methods:
        raise MsvitEdgeError(
            f"the {quantizer} quantizer's calibration methods are {', '.join(methods)}, not {method!r}"
        )
    settings = {"precision": "int8", "quantizer": quantizer, "method": method, "tokenizer": "fp32"}
    if quantizer == "modelopt":
        high = "fp16" if backend == "tensorrt" else "fp32"
        return settings | {"high_precision": high, "keep_fp32": list(int8.KEEP_FP32) if high == "fp16" else []}
    return settings | {"high_precision": "fp32", "op_types": list(ort_int8.OP_TYPES), "activation": "int8"}


def images_sha256(images: np.ndarray) -> str:
    """Hex SHA-256 of an image array: dtype, shape and pixels."""
    h = hashlib.sha256(f"{images.dtype.str}{images.shape}".encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()


def cache_key(bundle: Bundle, images: np.ndarray | None, settings: dict) -> str:
    """Hex SHA-256 of what decides the precision graphs: the bundle's graph files, plan and threshold, the images
    (None for FP16, which needs none), the settings and the tool versions."""
    h = hashlib.sha256()
    for name in GRAPHS:
        for path in (bundle.graph(name), bundle.graph(name).with_name(f"{name}.onnx.data")):
            if path.is_file():
                with path.open("rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                        h.update(chunk)
    context = {
        "format": CACHE_FORMAT,
        "threshold": bundle.threshold,
        "buckets": bundle.manifest["buckets"],
        "preprocessing": bundle.manifest["preprocessing"],
        "settings": settings,
        "images": None if images is None else images_sha256(images),
        "versions": tool_versions(),
    }
    h.update(json.dumps(context, sort_keys=True, default=str).encode())
    return h.hexdigest()


def tool_versions() -> dict[str, str | None]:
    def get(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"msvit-edge": __version__, "nvidia-modelopt": get("nvidia-modelopt"), "onnxruntime": get("onnxruntime")}


def precision_graphs(
    bundle: Bundle,
    precision: str,
    backend: str,
    images: np.ndarray | None,
    out_dir: str | Path,
    method: str | None = None,
    quantizer: str | None = None,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> PrecisionGraphs:
    """The graphs to build or run ``bundle`` at ``precision`` on ``backend``, written into ``out_dir``.

    Args:
        bundle: The export bundle.
        precision: "fp32" (the bundle's graphs, nothing written), "fp16" or "int8".
        backend: "onnxruntime" or "tensorrt" (decides the INT8 quantizer and the unquantized ops' precision).
        images: INT8 calibration images, uint8 [N, H, W, C] (``calibration.images.load_images``); else unused.
        out_dir: Folder the precision graphs are copied into (created; files replaced atomically).
        method: INT8 calibration method of the quantizer (None: its measured default).
        quantizer: INT8 quantizer, "modelopt" (None) or, for onnxruntime only, "onnxruntime" (needs no ModelOpt).
        cache_dir: Calibration cache (None: ``default_cache_dir()``); a result is reused only if its key matches.
        log: Progress lines and warnings (a calibration that misses a bucket); nothing is printed.
    """
    settings = settings_for(precision, backend, method, quantizer)
    if precision == "fp32":
        return PrecisionGraphs({name: bundle.graph(name) for name in GRAPHS}, settings)
    if precision == "int8":
        _check_int8_inputs(bundle, images, settings)
    key = cache_key(bundle, images if precision == "int8" else None, settings)
    entry = Path(cache_dir or default_cache_dir()) / key
    hit = all((entry / f).is_file() for f in ("facts.json", *(f"{n}.onnx" for n in ENCODERS)))
    if hit:
        log(f"{precision}: calibration cache hit ({entry})")
    else:
        _make(bundle, settings, images, entry, key, log)
    facts = json.loads((entry / "facts.json").read_text()) | {"cache": "hit" if hit else "miss"}
    return PrecisionGraphs(_deliver(bundle, entry, Path(out_dir), facts), facts)


def _check_int8_inputs(bundle: Bundle, images: np.ndarray | None, settings: dict) -> None:
    if images is None:
        raise MsvitEdgeError("INT8 needs calibration images (--calib): none were given")
    check_images(bundle, images)
    if settings["quantizer"] == "modelopt":
        fp16.require_modelopt("INT8 quantization with ModelOpt")


def _make(bundle: Bundle, settings: dict, images: np.ndarray | None, entry: Path, key: str, log) -> None:
    """Make the precision graphs into cache folder ``entry`` (whole or not at all)."""
    with atomic_dir(entry, force=True) as tmp:
        facts = dict(settings)
        stages = converted(bundle)
        if settings["precision"] == "fp16":
            log(f"fp16: {', '.join(stages)} (ModelOpt AutoCast, {', '.join(settings['keep_fp32'])} kept FP32)")
            fp16.to_fp16_graphs({bundle.graph(n): tmp / f"{n}.onnx" for n in stages}, settings["keep_fp32"], log)
        else:
            feeds = encoder_feeds(bundle, images, log)
            jobs = [Job(bundle.graph(n), tmp / f"{n}.onnx", feeds.for_graph(n)) for n in ENCODERS]
            if "vit" in stages:  # the plain ViT, for bench's comparison at the same precision: calibrated on images
                jobs.append(Job(bundle.graph("vit"), tmp / "vit.onnx", image_feeds(bundle, images)))
            log(f"int8: {', '.join(stages)} ({settings['quantizer']}, {settings['method']} calibration)")
            _quantize(jobs, settings, log)
            facts["calibration"] = calibration_facts(bundle, images, feeds.coverage)
        write_json(tmp / "facts.json", facts | {"cache_key": key, "versions": tool_versions()})


def calibration_facts(bundle: Bundle, images: np.ndarray, coverage: list[int]) -> dict:
    """What the engine manifest records about a calibration: the images' count and hash, images per bucket."""
    buckets = bundle.plan.buckets
    return {
        "images": len(images),
        "images_sha256": images_sha256(images),
        "coverage": [{"min": b.min, "max": b.max, "images": n} for b, n in zip(buckets, coverage, strict=True)],
        "missed_buckets": [i for i, n in enumerate(coverage) if n == 0],
    }


def _quantize(jobs: list[Job], settings: dict, log) -> None:
    if settings["quantizer"] == "modelopt":
        int8.quantize_modelopt(jobs, settings["method"], settings["high_precision"], log)
    else:
        ort_int8.quantize_ort(jobs, settings["op_types"], settings["method"], settings["activation"], log)


def converted(bundle: Bundle) -> tuple[str, ...]:
    """The graphs a precision pass converts: both encoders, and the plain ViT where the bundle has one."""
    return (*ENCODERS, "vit") if bundle.graph("vit").is_file() else ENCODERS


def image_feeds(bundle: Bundle, images: np.ndarray, batch: int = 32) -> list[dict[str, np.ndarray]]:
    """Calibration feeds of a graph that takes images (the plain ViT)."""
    return [{"images": bundle.preprocess(images[i : i + batch])} for i in range(0, len(images), batch)]


def _deliver(bundle: Bundle, entry: Path, out_dir: Path, facts: dict) -> dict[str, Path]:
    """Copy the cached graphs into ``out_dir`` as ``NAME.PRECISION.onnx``; the tokenizer stays the bundle's."""
    graphs = {"tokenizer": bundle.graph("tokenizer")}
    for name in (n for n in converted(bundle) if (entry / f"{n}.onnx").is_file()):
        graphs[name] = out_dir / f"{name}.{facts['precision']}.onnx"
        with atomic_path(graphs[name]) as tmp:
            shutil.copyfile(entry / f"{name}.onnx", tmp)
    return graphs
