"""FP16 by ModelOpt AutoCast: the graph's math in FP16, its inputs and outputs FP32, sensitive ops FP32.

The bundle's encoders hold real ``LayerNormalization`` nodes (opset 20, not decomposed), so keeping LayerNorm FP32
is one op type. FP16 LayerNorm after attention is the most reported ViT failure in TensorRT; AutoCast also keeps
any node whose inputs exceed ``data_max`` in FP32 on its own reference run.

AutoCast (ModelOpt 0.47) leaves ``value_info`` shapes whose unknown dims all share the dim_param "unk"; ONNX
Runtime then takes unrelated dims as equal and fails at run time ("Shape mismatch attempting to re-use buffer"), so
``repair_value_info`` re-derives them. The same holds for ModelOpt's INT8 pass with an FP16 rest.

Run as ``python -m msvit_edge.calibration.fp16 --job GRAPH OUT - ... --keep-fp32 OPS`` by ``to_fp16_graphs``, in a
process of its own (see ``calibration.isolated``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from msvit_edge.calibration.isolated import Job, child_args, run_isolated
from msvit_edge.errors import MsvitEdgeError

KEEP_FP32 = ("LayerNormalization",)
INSTALL = "pip install '.[quantize]' (in the msvit-edge clone)"


def require_modelopt(purpose: str) -> None:
    """Fail with the install line, before any slow work, where ModelOpt is missing."""
    import importlib.util

    if importlib.util.find_spec("modelopt") is None:
        raise MsvitEdgeError(f"{purpose} needs NVIDIA ModelOpt (nvidia-modelopt): {INSTALL}")


def to_fp16(onnx_path: Path, out_path: Path, keep_fp32: Sequence[str] = KEEP_FP32) -> Path:
    """Write an FP16 copy of an FP32 graph with FP32 I/O, keeping ``keep_fp32`` op types in FP32.

    Args:
        onnx_path: The FP32 graph (a single file).
        out_path: Where the FP16 graph goes (atomically).
        keep_fp32: Op types that stay FP32.

    Returns:
        ``out_path``.
    """
    return to_fp16_graphs({Path(onnx_path): Path(out_path)}, keep_fp32)[0]


def to_fp16_graphs(graphs: dict[Path, Path], keep_fp32: Sequence[str] = KEEP_FP32) -> list[Path]:
    """``to_fp16`` of several graphs ({FP32 file: FP16 file}) in one child process."""
    require_modelopt("FP16 conversion")
    jobs = [Job(src, out) for src, out in graphs.items()]
    return run_isolated("msvit_edge.calibration.fp16", jobs, ["--keep-fp32", ",".join(keep_fp32)])


def repair_value_info(path: Path) -> None:
    """Replace the intermediate shapes of the graph at ``path`` by ONNX's own inference (see the module docstring)."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))


def _to_fp16_here(graph: Path, out: Path, keep_fp32: list[str]) -> None:
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    model = convert_to_mixed_precision(
        str(graph), low_precision_type="fp16", op_types_to_exclude=keep_fp32, keep_io_types=True
    )
    onnx.save(model, str(out))
    repair_value_info(out)


def main(argv: list[str] | None = None) -> None:
    def options(parser) -> None:
        parser.add_argument("--keep-fp32", default=",".join(KEEP_FP32))

    ns, jobs = child_args(argv, "ModelOpt AutoCast FP16 of graphs (run by to_fp16_graphs)", options)
    for job in jobs:
        _to_fp16_here(job.graph, job.out, [op for op in ns.keep_fp32.split(",") if op])


if __name__ == "__main__":
    main()
