"""TensorRT backend: engines built through Polygraphy's loaders, one optimisation profile per token bucket.

Three engines per engine directory, one per bundle graph: ``tokenizer.plan`` (static shapes but the batch),
``encoder.plan`` and ``encoder_masked.plan`` (one profile per bucket of the plan, over tokens and batch); and
``vit.plan``, the plain ViT of the same weights that ``bench`` times MSViT against (static image, batch range). The
precision lives in the ONNX graphs (AutoCast FP16, ModelOpt Q/DQ INT8), built as strongly typed networks: the one
path that TensorRT 10.x (JetPack 6: 10.3) and 11.x share. The 10.x builder flags survive only as an explicit
fallback (``strongly_typed=False``) where a feature probe finds them.

- ``trt_build``: ``build_engines`` (Python build, precision read back, manifest facts), ``trtexec_commands``
  (the same build as command lines for JetPack's own trtexec), ``timing_cache_file`` (where the timings live) and
  ``tensorrt_errors`` (what TensorRT or Polygraphy raise, as one line naming both versions).
- ``trt_runtime``: ``TensorRTPipeline`` on the runtime seam; one execution context per profile, all sharing one
  scratch buffer.

Every TensorRT name this package uses is checked against the names the 10.3 and 11.x bindings export
(``tests/test_tensorrt_contract.py``), because no machine here can import TensorRT. The rule the checker reads the
code by: the module is always bound to the name ``trt``; TensorRT objects are held in variables named after their
kind (``builder``, ``network``, ``config``, ``engine``, ``context``, ``inspector``, ...); a function whose name ends
in ``_trt10`` runs only where a probe found a 10.x-only feature; ``hasattr(<trt object>, "NAME")`` is a probe.
"""

from __future__ import annotations

from types import ModuleType

from msvit_edge.engines.trt_build import (
    EngineShapes,
    build_engines,
    check_precision,
    timing_cache_file,
    trtexec_commands,
)
from msvit_edge.engines.trt_runtime import TensorRTPipeline
from msvit_edge.errors import MsvitEdgeError

__all__ = [
    "EngineShapes",
    "TensorRTPipeline",
    "build_engines",
    "capabilities",
    "check_precision",
    "family",
    "import_tensorrt",
    "timing_cache_file",
    "trtexec_commands",
]

INSTALL_HINT = (
    "pip install 'msvit-edge[tensorrt]' on x86 with CUDA, or use JetPack's system TensorRT (python3-libnvinfer) "
    "on a Jetson; run msvit-edge doctor"
)


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a one-line error that says how to install it."""
    try:
        import tensorrt as trt
    except ImportError as e:  # also a bindings wheel whose libnvinfer is missing
        raise MsvitEdgeError(f"this needs TensorRT >= 10.1 ({e}): {INSTALL_HINT}") from None
    return trt


def capabilities(trt: ModuleType) -> dict:
    """What this TensorRT can do, by feature probe (never by version string).

    ``strongly_typed``: networks take their precision from the graph (10.x opt-in, 11.x always).
    ``precision_flags``: ``BuilderFlag.FP16``/``INT8`` exist (10.x; removed in 11.x).
    ``device_memory_v2``: ``ICudaEngine.device_memory_size_v2`` (the only spelling in 11.x).
    """
    return {
        "version": trt.__version__,
        "strongly_typed": hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
        "precision_flags": hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8"),
        "device_memory_v2": hasattr(trt.ICudaEngine, "device_memory_size_v2"),
    }


def family(caps: dict) -> str:
    """``"10"`` where the 10.x precision flags exist, else ``"11"``: which trtexec flags apply."""
    return "10" if caps["precision_flags"] else "11"
