"""ONNX Runtime backend: the bundle's graphs in ``onnxruntime.InferenceSession``s (CPU by default).

Which path runs: at batch 1, ONE session call per image on a graph composed at activation from the tokenizer and the
encoder (``batch1_graph``: the selected rows are picked inside the graph, so tokens never come back to Python); at
larger batches, the tokenizer and one encoder call per bucket (``Pipeline``'s stages), because images whose counts
differ need the key mask or a split. ONNX Runtime takes data-dependent shapes inside a graph; TensorRT keeps the
static tokenizer / dynamic encoder split at every batch (its transformer fusion needs it: ``engines/tensorrt.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

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
    path: str | Path | bytes,
    threads: int | None = None,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    profile_prefix: str | None = None,
    weights: dict[str, np.ndarray] | None = None,
):
    """An InferenceSession with full graph optimisation; ``threads`` caps intra-op threads (None: ORT's default).

    ``path``: a graph file, or a serialised graph (``batch1_graph``) whose placeholders ``weights`` fills: ONNX Runtime
    reads those arrays in place, so the caller keeps them alive as long as the session.
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
    if weights:
        options.add_external_initializers(
            list(weights), [ort.OrtValue.ortvalue_from_numpy(w) for w in weights.values()]
        )
    state = ort.capi.onnxruntime_pybind11_state  # ONNX Runtime's exceptions derive from Exception only
    try:
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=list(providers))
    except (state.Fail, state.InvalidArgument, state.InvalidProtobuf, state.NoSuchFile, state.InvalidGraph) as e:
        # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from PATH failed:Protobuf parsing failed."
        reason = str(e).strip().splitlines()[0].split(" : ", 2)[-1].replace(f"Load model from {path} failed:", "")
        if isinstance(path, bytes):
            raise MsvitEdgeError(f"ONNX Runtime cannot load the batch-1 graph composed in memory ({reason})") from None
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
        one_call: Run a single image as one session call on ``batch1_graph`` (False: the three stages, and no
            fourth session holding a second copy of the tokenizer's and the encoder's weights).
    """

    def __init__(
        self,
        source: Bundle | EngineDir | str,
        threads: int | None = None,
        pad_to_bucket: bool = False,
        device: str = "cpu",
        one_call: bool = True,
        **kw,
    ):
        self.source = open_source(source)
        super().__init__(self.source.plan, pad_to_bucket, **kw)
        self.threads, self.providers, self.allow_one_call = threads, providers_for(device), one_call
        self.sessions: dict = {}
        self.batch1_weights: dict[str, np.ndarray] = {}
        self.tokenizer_outputs = ["tokens", "counts", "probs", *(["cells"] if self.bundle.dense else [])]

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
        # no fourth session where it could not run (a padding pipeline); one_call checks again if that changes later
        one = self.allow_one_call and not self.pad_to_bucket
        composed = one and batch1_graph(self.source.graph("tokenizer"), self.source.graph("encoder"))
        if composed:
            self.batch1_weights = composed.weights  # read in place by the session: alive as long as it
            self.sessions["batch1"] = session(composed.graph, self.threads, self.providers, weights=composed.weights)

    def deactivate(self) -> None:
        self.sessions, self.batch1_weights = {}, {}

    @property
    def one_call(self) -> bool:
        return "batch1" in self.sessions and not self.pad_to_bucket  # padding a single image is for static engines

    def tokenize(self, images: np.ndarray, threshold: float) -> Tokenized:
        feed = {"images": images, "threshold": np.asarray(threshold, dtype=np.float32)}
        return Tokenized(*self.sessions["tokenizer"].run(self.tokenizer_outputs, feed))

    def encode(self, tokens: np.ndarray, selection: Selection, cells: np.ndarray | None = None) -> np.ndarray:
        mask = selection.mask()
        feed = {"tokens": tokens} | ({} if mask is None else {"mask": mask})
        feed |= {} if cells is None else {"cells": cells}
        return self.sessions["encoder" if mask is None else "encoder_masked"].run(["logits"], feed)[0]

    def tokenize_and_encode(self, images: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
        feed = {"images": images, "threshold": np.asarray(threshold, dtype=np.float32)}
        return tuple(self.sessions["batch1"].run(["logits", "counts", "probs"], feed))

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


class ComposedGraph(NamedTuple):
    graph: bytes  # serialised ONNX, its large weights as placeholders
    weights: dict[str, np.ndarray]  # the placeholders' values: ``session(graph, weights=weights)``


def batch1_graph(tokenizer: Path, encoder: Path) -> ComposedGraph | None:
    """The tokenizer and the encoder as ONE graph for a single image: (images, threshold) -> (logits, counts, probs).

    The encoder runs on the image's ``counts`` selected tokens, picked inside the graph (``_selected_rows``): one
    session call per image, no tokens copied out and back, no selection in Python. Only for batch 1: at a larger batch
    images whose counts differ would need the key mask. None where the graphs cannot be composed in memory (weights in
    side files, i.e. over 2 GB; operator sets that disagree): the pipeline then runs the stages.
    """
    import onnx  # lazy: heavy, and the stages run without it
    from onnx import compose, helper
    from onnx.external_data_helper import uses_external_data  # lazy: as onnx

    tok, enc = (onnx.load(str(p), load_external_data=False) for p in (tokenizer, encoder))
    if any(uses_external_data(t) for m in (tok, enc) for t in m.graph.initializer):
        return None
    opsets = {o.domain: o.version for o in tok.opset_import}
    if any(opsets.setdefault(o.domain, o.version) != o.version for o in enc.opset_import):
        return None
    compose.add_prefix(enc, "encoder/", inplace=True)
    g = tok.graph
    outputs = {o.name: o for o in g.output}
    # a segmenter's encoder also reads the tokenizer's cell index (rows of the selected tokens: valid as they are)
    cells = [helper.make_node("Identity", ["cells"], ["encoder/cells"])] if "cells" in outputs else []
    answer = helper.make_node("Identity", ["encoder/logits"], ["logits"])
    nodes = [*g.node, *_selected_rows(g), *cells, *enc.graph.node, answer]
    del g.node[:]
    g.node.extend(_used(nodes, ["logits", "counts", "probs"]))
    weights = _placeholders(g, [*g.initializer, *enc.graph.initializer])
    g.value_info.extend(enc.graph.value_info)
    logits = onnx.ValueInfoProto()
    logits.CopyFrom(enc.graph.output[0])
    logits.name = "logits"
    del g.output[:]
    g.output.extend([logits, outputs["counts"], outputs["probs"]])
    tok.functions.extend(enc.functions)
    del tok.opset_import[:]
    tok.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets.items())
    tok.ir_version = max(tok.ir_version, enc.ir_version)
    return ComposedGraph(tok.SerializeToString(), weights)


def _placeholders(graph, initializers: list) -> dict[str, np.ndarray]:
    """Put the initializers the graph's nodes read into it, each large non-integer one as an empty placeholder, and
    return those as arrays. Serialising DeiT-S's weights into the composed graph and parsing them again had taken 5 s
    of activation; integer ones stay in the graph, where shape inference reads them."""
    from onnx import TensorProto, numpy_helper  # lazy: heavy

    read = {name for n in graph.node for name in n.input}
    kept, weights = [], {}
    for t in initializers:
        if t.name not in read:
            continue
        if t.data_type in (TensorProto.INT64, TensorProto.INT32) or np.prod(t.dims) < 1024:
            kept.append(t)
            continue
        weights[t.name] = numpy_helper.to_array(t)
        empty = TensorProto(name=t.name, dims=t.dims, data_type=t.data_type, data_location=TensorProto.EXTERNAL)
        empty.external_data.add(key="location", value="memory")  # ONNX Runtime takes it from add_external_initializers
        kept.append(empty)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return weights


def _selected_rows(graph) -> list:
    """Nodes that make ``encoder/tokens`` [1, count, D], the image's selected tokens, from the tokenizer's graph.

    Export's tokenizer ends in a GatherElements of every candidate [B, M, D] in ``order`` (the selected first). At batch
    1 one Gather of only the first ``count`` entries of ``order`` makes the same rows: the full gather and its
    expanded int64 index are no longer read (``_used`` drops them). Any other tokenizer: its ``tokens`` sliced to
    ``count`` rows.
    """
    from onnx import TensorProto, helper  # lazy: heavy

    ints = {k: helper.make_tensor(k, TensorProto.INT64, [1], [v]) for k, v in (("zero", 0), ("one", 1))}
    rows = [
        helper.make_node("ReduceMax", ["counts"], ["batch1/count"], keepdims=1),  # [1]: the image's count
        *(helper.make_node("Constant", [], [f"batch1/{k}"], value=v) for k, v in ints.items()),
    ]
    last = next(n for n in graph.node if "tokens" in n.output)
    axis = next((helper.get_attribute_value(a) for a in last.attribute if a.name == "axis"), 0)
    if last.op_type != "GatherElements" or axis != 1 or "order" not in {o.name for o in graph.output}:
        return [
            *rows,
            helper.make_node("Slice", ["tokens", "batch1/zero", "batch1/count", "batch1/one"], ["encoder/tokens"]),
        ]
    return [
        *rows,
        helper.make_node("Slice", ["order", "batch1/zero", "batch1/count", "batch1/one"], ["batch1/order"]),
        helper.make_node("Squeeze", ["batch1/order", "batch1/zero"], ["batch1/index"]),  # [count]
        helper.make_node("Gather", [last.input[0], "batch1/index"], ["encoder/tokens"], axis=1),
    ]


def _used(nodes: list, outputs: list[str]) -> list:
    """The nodes (in topological order) that the outputs need: the tokenizer's own outputs are no longer returned."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    return kept[::-1]
