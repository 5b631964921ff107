"""The precision pass ``msvit-edge build`` calls: an export bundle -> the graphs to run at FP32, FP16 or INT8.

Made once on a workstation (ModelOpt and ONNX Runtime there; PyTorch only to load ``--calib`` data), delivered into
the bundle (``BUNDLE/precision/<backend>-<precision>-<key>/``); a Jetson builds engines from these files with
neither. Choices (measured in docs/precision.md):

- The tokenizer stays the bundle's FP32 graph at every precision: its gate decides the token counts, which must
  equal the reference's, and it is a small share of the time.
- FP16: both encoders through ModelOpt AutoCast, I/O and LayerNormalization FP32.
- INT8: both encoders calibrated on real tokens (``calibration.tokens``) by ModelOpt, entropy calibration. TensorRT
  gets the unquantized rest in FP16, ONNX Runtime on the CPU in FP32 (its CPU kernels gain nothing from FP16).
  ModelOpt's graph beat ONNX Runtime's own ``quantize_static`` on the CPU in top-1 agreement and in speed
  (``calibration.ort_int8`` remains only for ``benchmarks/precision.py``'s comparison).
- INT8 for ONNX Runtime: uint8 Q/DQ (``calibration.qdq``), whose x86 kernels cannot saturate; TensorRT's: int8.
- A segmentation bundle: the same passes. Its encoders' ``cells`` input (int64) stays int64 in FP16 (AutoCast casts
  floats only) and is fed to INT8 calibration from the same tokenizer run as the tokens (``calibration.tokens``); the
  cell-index ops and the decoder after them stay out of Q/DQ (``calibration.int8``).

Results are cached in a folder named by ``cache_key``: the same bundle graphs, images and settings give the same
graphs, so a second call copies them instead of calibrating again. Any difference in those gives another key.
A segmenter's graph files differ from any classifier's (their inputs do), so the key never serves one's graphs to
the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from msvit_edge.bundle import GRAPHS, Bundle
from msvit_edge.calibration import fp16, int8, qdq
from msvit_edge.calibration.facts import PRECISIONS, BucketCoverage, CalibrationImages, PrecisionFacts
from msvit_edge.calibration.isolated import Job
from msvit_edge.calibration.tokens import MIN_IMAGES, check_images, encoder_feeds, feed_batch
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, atomic_dir, sha256
from msvit_edge.machine.environment import package_version

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt")
ENCODERS = ("encoder", "encoder_masked")
GRAPH_SET = FolderKind("a precision graph set", "facts.json", lambda f: "precision" in f, ("facts.json", "*.onnx"))
CACHE_FORMAT = 6  # bumped whenever the graphs a key names change (2: attention unquantized, 3: plain ViT, 4: uint8,
# 5: 8-bit weight initializers for ONNX Runtime, 6: fewer images per feed for large models, latency-only spread)


class PrecisionGraphs(NamedTuple):
    graphs: dict[str, Path]  # tokenizer, encoder, encoder_masked (, vit) -> the ONNX file to build or run
    # ``PrecisionFacts.to_dict()`` (quantizer, method, calibration images and coverage, kept-FP32 ops); for fp32, the
    # settings alone
    facts: dict
    folder: Path | None = None  # where the graphs were delivered (None for fp32: the bundle's own graphs)

    @property
    def record(self) -> PrecisionFacts | None:
        """The facts as a typed record; None for fp32 (the bundle's own graphs: nothing was made)."""
        return None if self.folder is None else PrecisionFacts.from_dict(self.facts)


def default_cache_dir() -> Path:
    """``$MSVIT_EDGE_CACHE/calibration``, else ``$XDG_CACHE_HOME`` or ``~/.cache``, under ``msvit-edge``."""
    root = os.environ.get("MSVIT_EDGE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(root) / "msvit-edge" / "calibration"


def settings_for(precision: str, backend: str, method: str | None = None) -> dict:
    """Everything that decides the precision graphs besides the bundle and the images (part of the cache key)."""
    if precision not in PRECISIONS or backend not in BACKENDS:
        raise MsvitEdgeError(
            f"precision must be one of {', '.join(PRECISIONS)} and backend one of {', '.join(BACKENDS)}, "
            f"got {precision!r} for {backend!r}"
        )
    if precision != "int8" and method:
        raise MsvitEdgeError(f"a calibration method applies to int8 only, not {precision}")
    if precision == "fp32":
        return {"precision": "fp32"}
    if precision == "fp16":
        return {"precision": "fp16", "tokenizer": "fp32", "keep_fp32": list(fp16.KEEP_FP32)}
    method = method or int8.DEFAULT_METHOD
    if method not in int8.METHODS:
        raise MsvitEdgeError(f"ModelOpt's calibration methods are {', '.join(int8.METHODS)}, not {method!r}")
    high = "fp16" if backend == "tensorrt" else "fp32"  # ONNX Runtime's CPU kernels gain nothing from FP16
    return {
        "precision": "int8",
        "quantizer": "modelopt",
        "method": method,
        "tokenizer": "fp32",
        "high_precision": high,
        "keep_fp32": list(int8.KEEP_FP32) if high == "fp16" else [],
        "qdq": "int8" if backend == "tensorrt" else "uint8",  # see calibration.qdq: uint8 cannot saturate on x86
    }


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
        "buckets": bundle.record.buckets.to_dict(),
        "preprocessing": bundle.record.preprocessing.to_dict(),
        "settings": settings,
        "images": None if images is None else images_sha256(images),
        "versions": tool_versions(),
    }
    h.update(json.dumps(context, sort_keys=True, default=str).encode())
    return h.hexdigest()


def tool_versions() -> dict[str, str | None]:
    return {name: package_version(name) for name in ("msvit-edge", "nvidia-modelopt", "onnxruntime")}


def precision_graphs(
    bundle: Bundle,
    precision: str,
    backend: str,
    images: np.ndarray | None,
    out_dir: str | Path,
    method: str | None = None,
    cache_dir: str | Path | None = None,
) -> PrecisionGraphs:
    """The graphs to build or run ``bundle`` at ``precision`` on ``backend``, delivered into a folder of
    ``out_dir`` named by everything that made them (``graphs_folder``), so that graphs made from other calibration
    images, settings or tool versions never replace them.

    Args:
        bundle: The export bundle.
        precision: "fp32" (the bundle's graphs, nothing written), "fp16" or "int8".
        backend: "onnxruntime" or "tensorrt" (decides the INT8 graphs' Q/DQ type and the unquantized ops' precision).
        images: INT8 calibration images, uint8 [N, H, W, C] (``calibration.images.load_images``); else unused.
        out_dir: Parent of the graphs' keyed folder (``BUNDLE/precision`` for ``msvit-edge build``).
        method: ModelOpt's INT8 calibration method (None: the measured default).
        cache_dir: Calibration cache (None: ``default_cache_dir()``); a result is reused only if its key matches.
    """
    settings = settings_for(precision, backend, method)
    if precision == "int8" and bundle.record.latency_only:
        settings |= {"token_counts": "spread"}  # see calibration.tokens: every bucket, whatever the images' own counts
    if precision == "fp32":
        return PrecisionGraphs({name: bundle.graph(name) for name in GRAPHS}, settings)
    if precision == "int8":
        _check_int8_inputs(bundle, images, settings)
    key = cache_key(bundle, images if precision == "int8" else None, settings)
    entry = Path(cache_dir or default_cache_dir()) / key
    hit = all((entry / f).is_file() for f in ("facts.json", *(f"{n}.onnx" for n in ENCODERS)))
    if hit:
        log.info(f"{precision}: calibration cache hit ({entry})")
    else:
        _make(bundle, settings, images, entry, key)
    facts = PrecisionFacts.from_file(entry / "facts.json")
    folder = Path(out_dir) / graphs_folder(backend, precision, key)
    graphs = _deliver(bundle, entry, folder, facts)
    return PrecisionGraphs(graphs, dataclasses.replace(facts, cache="hit" if hit else "miss").to_dict(), folder)


def graphs_folder(backend: str, precision: str, key: str) -> str:
    """``<backend>-<precision>-<key prefix>``: the name of a precision graph set, unique to what made it."""
    return f"{backend}-{precision}-{key[:12]}"


def fewest_images(spread: bool) -> int:
    """Fewest INT8 calibration images accepted: ``MIN_IMAGES`` so that real images reach every bucket, any number
    where the token counts are spread over the buckets (``spread``: a latency-only bundle)."""
    return 1 if spread else MIN_IMAGES


def _check_int8_inputs(bundle: Bundle, images: np.ndarray | None, settings: dict) -> None:
    if images is None:
        raise MsvitEdgeError("INT8 needs calibration images (--calib): none were given")
    check_images(bundle, images, fewest_images(settings.get("token_counts") == "spread"))
    fp16.require_modelopt("INT8 quantization with ModelOpt")


def _make(bundle: Bundle, settings: dict, images: np.ndarray | None, entry: Path, key: str) -> None:
    """Make the precision graphs into cache folder ``entry`` (whole or not at all)."""
    with atomic_dir(entry, GRAPH_SET, force=True) as tmp:
        calibration = None
        stages = converted(bundle)
        if settings["precision"] == "fp16":
            log.info(f"fp16: {', '.join(stages)} (ModelOpt AutoCast, {', '.join(settings['keep_fp32'])} kept FP32)")
            fp16.to_fp16_graphs({bundle.graph(n): tmp / f"{n}.onnx" for n in stages}, settings["keep_fp32"])
        else:
            spread = settings.get("token_counts") == "spread"
            feeds = encoder_feeds(bundle, images, minimum=fewest_images(spread), spread=spread)
            jobs = [Job(bundle.graph(n), tmp / f"{n}.onnx", feeds.for_graph(n)) for n in ENCODERS]
            if "vit" in stages:  # the plain ViT, for bench's comparison at the same precision: calibrated on images
                jobs.append(Job(bundle.graph("vit"), tmp / "vit.onnx", image_feeds(bundle, images)))
            log.info(f"int8: {', '.join(stages)} ({settings['quantizer']}, {settings['method']} calibration)")
            _quantize(jobs, settings)
            calibration = calibration_facts(bundle, images, feeds.coverage)
        PrecisionFacts(settings, key, tool_versions(), calibration).write(tmp / "facts.json")


def calibration_facts(bundle: Bundle, images: np.ndarray, coverage: list[int]) -> CalibrationImages:
    """What the engine manifest records about a calibration: the images' count and hash, images per bucket."""
    buckets = bundle.plan.buckets
    return CalibrationImages(
        images=len(images),
        images_sha256=images_sha256(images),
        coverage=tuple(BucketCoverage(b.min, b.max, n) for b, n in zip(buckets, coverage, strict=True)),
        missed_buckets=tuple(i for i, n in enumerate(coverage) if n == 0),
    )


def _quantize(jobs: list[Job], settings: dict) -> None:
    int8.quantize_modelopt(jobs, settings["method"], settings["high_precision"])
    if settings["qdq"] == "uint8":
        for job in jobs:
            qdq.to_unsigned(job.out)


def converted(bundle: Bundle) -> tuple[str, ...]:
    """The graphs a precision pass converts: both encoders, and the plain ViT where the bundle has one."""
    return (*ENCODERS, "vit") if bundle.graph("vit").is_file() else ENCODERS


def image_feeds(bundle: Bundle, images: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Calibration feeds of a graph that takes images (the plain ViT, all tokens fine)."""
    batch = feed_batch(bundle, bundle.plan.buckets[-1].max)
    return [{"images": bundle.preprocess(images[i : i + batch])} for i in range(0, len(images), batch)]


def _deliver(bundle: Bundle, entry: Path, folder: Path, facts: PrecisionFacts) -> dict[str, Path]:
    """Copy the cached graphs into ``folder`` as ``NAME.PRECISION.onnx`` beside ``facts.json`` (with each graph's
    sha256); the tokenizer stays the bundle's. The folder appears whole or not at all; one that exists already
    holds these very graphs (its name is their key), and is checked instead."""
    if not (folder / "facts.json").is_file():
        names = [n for n in converted(bundle) if (entry / f"{n}.onnx").is_file()]
        with atomic_dir(folder, GRAPH_SET, force=True) as tmp:
            files = {f"{n}.{facts.precision}.onnx": entry / f"{n}.onnx" for n in names}
            for file, source in files.items():
                shutil.copyfile(source, tmp / file)
            dataclasses.replace(facts, files={f: sha256(tmp / f) for f in files}).write(tmp / "facts.json")
    return {"tokenizer": bundle.graph("tokenizer")} | open_graphs(folder).graphs


def open_graphs(folder: Path) -> PrecisionGraphs:
    """A delivered graph set (also one ``build --graphs-only`` made on another machine): its graphs by stage, checked
    against the sha256 that its facts.json records, and the facts."""
    facts = PrecisionFacts.from_file(folder / "facts.json")
    digests = facts.files or {f.name: None for f in folder.glob("*.onnx")}  # sets before digests: none
    for file, digest in digests.items():
        if not (folder / file).is_file():
            raise MsvitEdgeError("is missing from its precision graph set", folder / file)
        if digest is not None and sha256(folder / file) != digest:
            raise MsvitEdgeError(
                f"is not the graph its facts.json records (sha256 differs): changed since it was made; remove "
                f"{folder} to make the set again",
                folder / file,
            )
    graphs = {file.split(".", 1)[0]: folder / file for file in digests}
    return PrecisionGraphs(graphs, facts.to_dict(), folder)
