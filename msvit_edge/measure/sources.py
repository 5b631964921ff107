"""What ``bench`` measures: an engine directory, a bundle (its FP32 graphs in ONNX Runtime), or a bundle's own PyTorch
model (``torch:BUNDLE``, ``torch-cudagraphs:BUNDLE``), opened once into a ``Source`` that carries everything the
measurements read from the manifests, and the pipeline that runs it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from msvit_edge.bundle import GRAPHS, Bundle
from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.engine_folder import EngineDir, open_source
from msvit_edge.engines import open_pipeline
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.measure.config import BenchConfig
from msvit_edge.model.config import MSViTConfig

TORCH_BACKENDS = ("torch", "torch-cudagraphs")  # written BACKEND:BUNDLE: the bundle's own PyTorch model


@dataclass(frozen=True)
class Source:
    """One source, opened: its manifests are read here once, and the measurements take their facts from this.

    A torch source's model (``msvit_edge.engines.pytorch.bundle_model``) is loaded on first use of ``model``.
    """

    name: str  # as given on the command line
    opened: Bundle | EngineDir  # what the pipeline runs (the bundle itself for a torch source)
    bundle: Bundle
    backend: str  # onnxruntime, tensorrt, torch or torch-cudagraphs
    precision: str
    plan: BucketPlan
    threshold: float
    config: MSViTConfig  # the bundle's model, for the MACs the ideal speedups come from
    latency_only: bool  # random weights: top-1 means nothing
    ckpt: str | None = None  # a torch source's checkpoint (found by sha256; the demo's is found without it)

    @property
    def is_torch(self) -> bool:
        return self.backend in TORCH_BACKENDS

    @cached_property
    def model(self):
        # lazy: torch is optional (torch-free bench on a Jetson)
        from msvit_edge.engines.pytorch import bundle_model

        return bundle_model(self.bundle, self.ckpt)


def open_bench_source(name: str, ckpt: str | None = None) -> Source:
    """An engine directory, a bundle, or ``torch:BUNDLE`` / ``torch-cudagraphs:BUNDLE``, opened and checked."""
    backend, sep, path = name.partition(":")
    if sep and backend in TORCH_BACKENDS:
        opened = open_source(path)
        if not isinstance(opened, Bundle):
            raise MsvitEdgeError(f"{backend}: runs a bundle's PyTorch model, not an engine directory", path)
        return _source(name, opened, opened, backend, "fp32", opened.plan, ckpt)
    opened = open_source(name)
    if isinstance(opened, EngineDir):
        return _source(name, opened, opened.bundle, opened.backend, opened.precision, opened.plan)
    return _source(name, opened, opened, "onnxruntime", "fp32", opened.plan)


def _source(name, opened, bundle: Bundle, backend: str, precision: str, plan: BucketPlan, ckpt=None) -> Source:
    manifest = bundle.manifest
    config = MSViTConfig.from_dict(manifest["model"])
    latency_only = bool(manifest.get("latency_only"))
    return Source(name, opened, bundle, backend, precision, plan, bundle.threshold, config, latency_only, ckpt)


def describe(source: Source) -> dict:
    """The report's ``info`` for a source: backend, precision, bundle, latency_only, size_mb, threshold."""
    if source.is_torch:
        size = sum(p.numel() * p.element_size() for p in source.model.parameters())
    else:
        size = engine_bytes(source.opened)
    return {
        "backend": source.backend,
        "precision": source.precision,
        "bundle": str(source.bundle.path),
        "latency_only": source.latency_only,
        "size_mb": size / 1e6,  # engine_bytes; a torch source: its parameters' bytes
        "threshold": source.threshold,
    }


def engine_bytes(opened: Bundle | EngineDir) -> int:
    """Bytes on disk of the files an engine runs for MSViT: its tokenizer and encoder graphs (or TensorRT plans),
    with their external data. Not counted: the plain ViT (bench's baseline, not part of a deployment) and the rest
    of the bundle (stored answers, other precisions). The one size that demo, bench and the report print."""
    files = {opened.graph(name) for name in GRAPHS}  # a set: one file may serve two stages
    data = [f.with_name(f"{f.name}.data") for f in files]
    return sum(f.stat().st_size for f in [*files, *(d for d in data if d.is_file())])


def check_device(source: Source, device: str) -> None:
    """A torch source on cpu, or on a GPU (cuda, jetson) through a CUDA build of PyTorch; CUDA graphs need one.
    Engine folders are checked by ``open_pipeline``."""
    if not source.is_torch:
        return
    if source.backend == "torch-cudagraphs" and device == "cpu":
        raise MsvitEdgeError(
            "torch-cudagraphs: CUDA graphs need a CUDA GPU and this bench runs on the CPU: bench torch:BUNDLE "
            "here, or this source with --device cuda on a GPU machine"
        )
    if device != "cpu":
        import torch  # lazy: torch is optional (torch-free bench on a Jetson)

        if not torch.cuda.is_available():
            raise MsvitEdgeError(
                f"{source.backend}: this PyTorch {torch.__version__} cannot use CUDA (torch.cuda.is_available() is "
                "False): install a CUDA build of torch, or bench with --device cpu"
            )


def pipeline(source: Source, cfg: BenchConfig, device: str):
    """The source's pipeline (not yet activated), on ``device``, with the run's batching and threads."""
    options = {"batching": cfg.batching}
    if source.is_torch:
        options |= {"model": source.model, "device": "cpu" if device == "cpu" else "cuda"}
        return open_pipeline(source.opened, source.backend, **options)
    if source.backend == "onnxruntime":
        options |= {"threads": cfg.threads, "device": "cuda" if device == "cuda" else "cpu"}
    return open_pipeline(source.opened, **options)
