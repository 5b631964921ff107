"""INT8 Q/DQ by NVIDIA ModelOpt's ONNX post-training quantization: what TensorRT builds INT8 engines from.

ModelOpt places Q/DQ where TensorRT fuses them (every MatMul, not Softmax, not the classifier's Gemm) and keeps the
symbolic B and N dims. It calibrates through ONNX Runtime on the CPU from our feeds (``calibration.tokens``), which
vary in token count from feed to feed: it takes any ``CalibrationDataReader``, so no static calibration shape is
needed. ``high_precision_dtype``: "fp32" leaves the unquantized rest FP32 (ONNX Runtime on the CPU has no faster
FP16); "fp16" casts it to FP16 in the same pass for TensorRT, with LayerNormalization kept FP32.

A segmenter's graphs (logits [B, K, G, G]) keep the nodes that carry its cell index out of Q/DQ (``cell_nodes``): the
int64 index ops (Unsqueeze/Expand into the GatherElements; ModelOpt's defaults already skip Gather*, Scatter* and
Where, this holds whatever its defaults become) and the linear decoder after the gather (MatMul + Add), which stays in
the high precision. Why the decoder: its logits ARE the per-pixel answer (their argmax after the host's upsampling),
one per-tensor activation scale over every cell's features costs pixels where two classes are close, the classifier's
head is not quantized either, and it is small (G*G*D*K MACs: 0.2% of the demo's encoder). ModelOpt would skip it
anyway where K < 16 (the scenes' 11 classes); this keeps it so at any K.

Run as ``python -m msvit_edge.calibration.int8 --job GRAPH OUT FEEDS ... --method M --high-precision P`` by
``quantize_modelopt``, in a process of its own (see ``calibration.isolated``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from msvit_edge.calibration.fp16 import KEEP_FP32, repair_value_info, require_modelopt
from msvit_edge.calibration.isolated import Job, child_args, feed_reader, run_isolated
from msvit_edge.calibration.tokens import Feed
from msvit_edge.errors import MsvitEdgeError

METHODS = ("entropy", "max")  # what ModelOpt's int8 mode offers; anything else silently means "max"
DEFAULT_METHOD = "entropy"  # the better of the two on held-out training images: docs/precision.md


def quantize_modelopt(
    jobs: Sequence[Job],
    method: str = DEFAULT_METHOD,
    high_precision: str = "fp32",
) -> list[Path]:
    """INT8 Q/DQ graphs of the jobs' FP32 graphs, each calibrated on its own feeds, written to their ``out``.

    Args:
        jobs: (FP32 encoder graph, output path, its feeds from ``CalibrationFeeds.for_graph``) per graph.
        method: Calibration method, one of ``METHODS``.
        high_precision: Precision of what is not quantized: "fp32" or "fp16".
    """
    if method not in METHODS:
        raise MsvitEdgeError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if high_precision not in ("fp32", "fp16"):
        raise MsvitEdgeError(f"high_precision must be fp32 or fp16, got {high_precision!r}")
    require_modelopt("INT8 quantization")
    args = ["--method", method, "--high-precision", high_precision]
    return run_isolated("msvit_edge.calibration.int8", jobs, args)


def cell_nodes(graph: Path) -> list[str]:
    """Names of a segmenter's graph's nodes that read its cell index (the ``cells`` input, or the plain ViT's own
    gather's output) through data, not shapes: the cell-index ops and the decoder after the gather. Empty for a
    classifier's graph (its logits are [B, K], not [B, K, G, G])."""
    import onnx  # lazy: onnx is heavy

    g = onnx.load(str(graph), load_external_data=False).graph
    logits = next((o for o in g.output if o.name == "logits"), None)
    if logits is None or len(logits.type.tensor_type.shape.dim) != 4:
        return []
    gathers = [n for n in g.node if n.op_type == "GatherElements"]  # the cell gather is the last
    reached = {i.name for i in g.input if i.name == "cells"} | (set(gathers[-1].output) if gathers else set())
    names = [gathers[-1].name] if gathers else []
    for node in g.node:  # ONNX graphs are topologically sorted
        # a shape is no data: the exporter may read the batch size off ``cells`` for every block's reshapes
        if node.op_type not in ("Shape", "Size") and reached.intersection(node.input):
            reached.update(node.output)
            names.append(node.name)
    return [name for name in dict.fromkeys(names) if name]  # the export names every node: an unnamed one stays


def _quantize_here(graph: Path, feeds: list[Feed], out: Path, method: str, high_precision: str) -> None:
    from modelopt.onnx.quantization import quantize

    quantize(
        str(graph),
        quantize_mode="int8",
        calibration_data_reader=feed_reader(feeds),
        calibration_method=method,
        calibration_eps=["cpu"],
        high_precision_dtype=high_precision,
        op_types_to_exclude_fp16=list(KEEP_FP32),
        # Attention's two MatMuls stay unquantized: ModelOpt finds the pattern in the unmasked encoder but not in
        # the masked one, and a per-tensor INT8 softmax output alone cost the batch-1 graph its agreement with FP32
        # (81% vs 98% for the masked graph on the tiny test model). Both encoders now quantize the same layers.
        disable_mha_qdq=True,
        nodes_to_exclude=[f"^{re.escape(name)}$" for name in cell_nodes(graph)],  # regexes to ModelOpt
        output_path=str(out),
        log_level="WARNING",
    )
    if high_precision == "fp16":
        repair_value_info(out)


def main(argv: list[str] | None = None) -> None:
    def options(parser) -> None:
        parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
        parser.add_argument("--high-precision", choices=("fp32", "fp16"), default="fp32")

    ns, jobs = child_args(argv, "ModelOpt INT8 Q/DQ of graphs (run by quantize_modelopt)", options)
    for job in jobs:
        _quantize_here(job.graph, job.feeds, job.out, ns.method, ns.high_precision)


if __name__ == "__main__":
    main()
