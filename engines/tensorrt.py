"""TensorRT backend: engines built through Polygraphy's loaders, one optimisation profile per token bucket.

Three engines per engine directory, one per bundle graph: ``tokenizer.plan`` (static shapes but the batch),
``encoder.plan`` and ``encoder_masked.plan`` (one profile per bucket of the plan, over tokens and batch); and
``vit.plan``, the plain ViT of the same weights that ``bench`` times MSViT against (static image, batch range). The
precision lives in the ONNX graphs (AutoCast FP16, ModelOpt Q/DQ INT8), built as strongly typed networks: the one
path that TensorRT 10.x (JetPack 6: 10.3) and 11.x share. The 10.x builder flags survive only as an explicit
fallback (``strongly_typed=False``) where a feature probe finds them.

A segmentation bundle builds and runs through the same code: its tokenizer engine also returns ``cells`` [B, G*G]
(int64, as in the graphs: TensorRT 10+ binds int64), its encoder engines take it as one more input, ranged over the
batch in every bucket's profile, and return logits per fine cell [b, K, G, G].

The modules, lowest first (each imports only those above it):

- ``trt_boundary``: ``import_tensorrt`` (the one lazy import of TensorRT), ``capabilities`` and ``family`` (feature
  probes), ``tensorrt_errors`` (what TensorRT or Polygraphy raise, as one line naming both versions).
- ``trt_shapes``: ``EngineShapes``, every stage's profiles from the bucket plan (the one home of profile shapes).
- ``trt_trtexec``: ``trtexec_commands``, the same build as command lines for JetPack's own trtexec.
- ``trt_inspect``: the precision of a graph or a built engine, read back and checked (``check_precision``).
- ``trt_build``: ``build_engines`` (Python build, precision read back, manifest facts) and ``timing_cache_file``
  (where the timings live).
- ``trt_memory``: device tensors and the device-side cut (``copy_plan``).
- ``trt_contexts``: a loaded engine's execution contexts, the profile that holds a call, the engine's input dtypes.
- ``trt_runtime``: ``TensorRTPipeline`` on the runtime seam; one execution context per profile, all sharing one
  scratch buffer.

This module gathers the public names.

Every TensorRT name this package uses is checked against the names the 10.3 and 11.x bindings export
(``tests/test_tensorrt_contract.py``), because no machine here can import TensorRT. The rule the checker reads the
code by: the module is always bound to the name ``trt``; TensorRT objects are held in variables named after their
kind (``builder``, ``network``, ``config``, ``engine``, ``context``, ``inspector``, ...); a function whose name ends
in ``_trt10`` runs only where a probe found a 10.x-only feature; ``hasattr(<trt object>, "NAME")`` is a probe.
"""

from __future__ import annotations

from msvit_edge.engines.trt_boundary import capabilities, family, import_tensorrt
from msvit_edge.engines.trt_build import build_engines, timing_cache_file
from msvit_edge.engines.trt_inspect import check_precision
from msvit_edge.engines.trt_runtime import TensorRTPipeline
from msvit_edge.engines.trt_shapes import EngineShapes
from msvit_edge.engines.trt_trtexec import trtexec_commands

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
