"""Backends that run a bundle or an engine directory: ONNX Runtime here, TensorRT on GPU machines and Jetson.

``open_pipeline`` is the one entry point: it reads which backend an engine directory was built for (a bundle alone
means its FP32 graphs in ONNX Runtime) and imports only that backend. ``torch`` and ``torch-cudagraphs`` run a
bundle's own PyTorch model (eager, or with per-bucket CUDA graphs), the reference the engines are measured against.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.engine_folder import EngineDir, open_source
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.machine.environment import backend_version, this_device

PIPELINES = {
    "onnxruntime": "msvit_edge.engines.ort:OnnxRuntimePipeline",
    "tensorrt": "msvit_edge.engines.tensorrt:TensorRTPipeline",
    "torch": "msvit_edge.engines.pytorch:torch_pipeline",
    "torch-cudagraphs": "msvit_edge.engines.pytorch:cuda_graph_pipeline",
}


def open_pipeline(source: Bundle | EngineDir | str | Path, backend: str | None = None, **options):
    """The pipeline for a bundle or an engine directory (not yet activated: use it as a context manager).

    Args:
        source: A bundle, an engine directory, or the path of either.
        backend: Override the backend (default: the engine directory's, or ONNX Runtime for a bundle).
        options: Passed to the pipeline (e.g. ``threads``, ``pad_to_bucket``, ``batching``; ``device`` and
            ``model`` for the torch backends).
    """
    source = open_source(source)
    if isinstance(source, EngineDir):
        _check_built_here(source)
    backend = backend or (source.backend if isinstance(source, EngineDir) else "onnxruntime")
    if backend not in PIPELINES:
        raise MsvitEdgeError(f"unknown backend {backend!r}; choose one of {', '.join(PIPELINES)}")
    module, name = PIPELINES[backend].split(":")
    return getattr(import_module(module), name)(source, **options)


def _check_built_here(engine: EngineDir) -> None:
    """Refuse an engine built for another device or backend version, before loading anything."""
    engine.check_runs_here(backend_version(engine.backend), this_device())
