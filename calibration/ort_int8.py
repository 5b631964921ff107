"""INT8 by ONNX Runtime's own static quantization (QDQ, per-channel weights): the alternative ModelOpt was measured
against (``benchmarks/precision.py``, docs/precision.md), kept for that comparison only; ``build`` uses ModelOpt.

ONNX Runtime fuses QDQ around MatMul into its integer kernels. Calibrated on the same feeds as ModelOpt's graph.

Run as ``python -m msvit_edge.calibration.ort_int8 --job GRAPH OUT FEEDS ... [options]`` by ``quantize_ort``, in a
process of its own (see ``calibration.isolated``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from msvit_edge.calibration.isolated import Job, child_args, feed_reader, run_isolated
from msvit_edge.calibration.tokens import Feed
from msvit_edge.errors import MsvitEdgeError

OP_TYPES = ("MatMul",)
# ONNX Runtime's histogram calibrators (entropy, percentile, distribution) stack each tensor's outputs across feeds
# into one array, which fails when feeds differ in token count; ModelOpt patches exactly that. So min-max only.
METHODS = ("minmax",)
DEFAULT_METHOD = "minmax"
ACTIVATIONS = ("int8", "uint8")


def quantize_ort(
    jobs: Sequence[Job],
    op_types: Sequence[str] = OP_TYPES,
    method: str = DEFAULT_METHOD,
    activation: str = "int8",
) -> list[Path]:
    """INT8 QDQ graphs by ``onnxruntime.quantization.quantize_static``, each calibrated on its job's feeds.

    Args:
        jobs: (FP32 encoder graph, output path, its feeds from ``CalibrationFeeds.for_graph``) per graph.
        op_types: Op types to quantize (empty: every type ONNX Runtime's QDQ quantizer supports).
        method: ONNX Runtime calibration method, one of ``METHODS``.
        activation: Activation type, "int8" (symmetric) or "uint8"; weights are int8 per channel.
    """
    if method not in METHODS or activation not in ACTIVATIONS:
        raise MsvitEdgeError(
            f"method must be one of {', '.join(METHODS)} and activation one of {', '.join(ACTIVATIONS)}, "
            f"got {method!r}, {activation!r}"
        )
    args = ["--op-types", ",".join(op_types), "--method", method, "--activation", activation]
    return run_isolated("msvit_edge.calibration.ort_int8", jobs, args)


def _quantize_here(
    graph: Path, feeds: list[Feed], out: Path, op_types: list[str] | None, method: str, act: str
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(graph),
        str(out),
        feed_reader(feeds),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=True,
        activation_type=QuantType.QInt8 if act == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method={"minmax": CalibrationMethod.MinMax}[method],
        extra_options={"ActivationSymmetric": act == "int8"},
    )


def main(argv: list[str] | None = None) -> None:
    def options(parser) -> None:
        parser.add_argument("--op-types", default=",".join(OP_TYPES))
        parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
        parser.add_argument("--activation", choices=ACTIVATIONS, default="int8")

    ns, jobs = child_args(argv, "ONNX Runtime INT8 QDQ of graphs (run by quantize_ort)", options)
    op_types = [op for op in ns.op_types.split(",") if op] or None  # none named: every op type it supports
    for job in jobs:
        _quantize_here(job.graph, job.feeds, job.out, op_types, ns.method, ns.activation)


if __name__ == "__main__":
    main()
