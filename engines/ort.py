"""ONNX Runtime backend: the bundle's graphs in ``onnxruntime.InferenceSession``s (CPU by default)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.engine_folder import EngineDir, open_source
from msvit_edge.bundle.selection import Selection
from msvit_edge.engines.pipeline import Pipeline, Tokenized
from msvit_edge.errors import MsvitEdgeError


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MsvitEdgeError("this needs onnxruntime>=1.18: pip install onnxruntime") from None
    return onnxruntime


def session(
    path,
    threads: int | None = None,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    profile_prefix: str | None = None,
):
    """An InferenceSession with full graph optimisation; ``threads`` caps intra-op threads (None: ORT's default).

    ``profile_prefix``: record ONNX Runtime's per-node profile, written by ``end_profiling()`` under that prefix.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # No busy-waiting between runs: a pipeline is two sessions (and bench adds the plain ViT's), each with its
    # own pool, and a pool left spinning after its run takes the cores the next session needs (DeiT-S size,
    # 2 cores: the MSViT pipeline twice as slow with spinning on; docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    state = ort.capi.onnxruntime_pybind11_state  # ONNX Runtime's exceptions derive from Exception only
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except (state.Fail, state.InvalidArgument, state.InvalidProtobuf, state.NoSuchFile, state.InvalidGraph) as e:
        # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from PATH failed:Protobuf parsing failed."
        reason = str(e).strip().splitlines()[0].split(" : ", 2)[-1].replace(f"Load model from {path} failed:", "")
        raise MsvitEdgeError(f"ONNX Runtime cannot load this graph ({reason})", path) from None


class OnnxRuntimePipeline(Pipeline):
    """Runs a bundle's graphs, or an engine directory's precision graphs, with ONNX Runtime (CPU by default).

    Args:
        source: An export bundle or an ONNX Runtime engine directory (or the path of either).
        threads: Intra-op threads of every session (None: ONNX Runtime's default, all cores).
        pad_to_bucket: See ``Pipeline``.
        batching: See ``Pipeline``.
        device: ``cpu``, or ``cuda`` for ONNX Runtime's CUDA provider (onnxruntime-gpu). Tokens then still cross
            between the sessions through host memory: on a GPU, TensorRT is the backend that keeps them on it.
    """

    def __init__(
        self,
        source: Bundle | EngineDir | str,
        threads: int | None = None,
        pad_to_bucket: bool = False,
        device: str = "cpu",
        **kw,
    ):
        self.source = open_source(source)
        super().__init__(self.source.plan, pad_to_bucket, **kw)
        self.threads, self.providers = threads, providers_for(device)
        self.sessions: dict = {}

    @property
    def bundle(self) -> Bundle:
        return self.source if isinstance(self.source, Bundle) else self.source.bundle

    def activate(self) -> None:
        # Every session gets all cores: with no pool left spinning after its run (see ``session``), the tokenizer no
        # longer slows the encoder that follows it, and on two threads it takes 0.6x its one-thread time.
        self.sessions = {
            name: session(self.source.graph(name), self.threads, self.providers)
            for name in ("tokenizer", "encoder", "encoder_masked")
        }

    def deactivate(self) -> None:
        self.sessions = {}

    def tokenize(self, images: np.ndarray, threshold: float) -> Tokenized:
        feed = {"images": images, "threshold": np.asarray(threshold, dtype=np.float32)}
        return Tokenized(*self.sessions["tokenizer"].run(["tokens", "counts", "probs"], feed))

    def encode(self, tokens: np.ndarray, selection: Selection) -> np.ndarray:
        mask = selection.mask()
        if mask is None:
            return self.sessions["encoder"].run(["logits"], {"tokens": tokens})[0]
        return self.sessions["encoder_masked"].run(["logits"], {"tokens": tokens, "mask": mask})[0]

    def plain_vit(self) -> Callable[[np.ndarray], np.ndarray]:
        if "vit" not in self.sessions:
            self.sessions["vit"] = session(self.source.graph("vit"), self.threads, self.providers)
        vit = self.sessions["vit"]
        return lambda images: vit.run(["logits"], {"images": images})[0]


def providers_for(device: str) -> tuple[str, ...]:
    """ONNX Runtime execution providers for a device, refusing one this onnxruntime cannot use."""
    if device == "cpu":
        return ("CPUExecutionProvider",)
    if device != "cuda":
        raise MsvitEdgeError(f"ONNX Runtime runs on cpu or cuda, not {device!r}")
    if "CUDAExecutionProvider" not in import_onnxruntime().get_available_providers():
        raise MsvitEdgeError(
            "ONNX Runtime here has no CUDA provider: pip install onnxruntime-gpu (see msvit-edge doctor)"
        )
    return ("CUDAExecutionProvider", "CPUExecutionProvider")
