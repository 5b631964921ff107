"""FP16 by ModelOpt AutoCast: the graph's math in FP16, its inputs and outputs FP32, sensitive ops FP32.

The bundle's encoders hold real ``LayerNormalization`` nodes (opset 20, not decomposed), so keeping LayerNorm FP32
is one op type. FP16 LayerNorm after attention is the most reported ViT failure in TensorRT; AutoCast also keeps
any node whose inputs exceed ``data_max`` in FP32 on its own reference run.

AutoCast (ModelOpt 0.47) leaves ``value_info`` shapes whose unknown dims all share the dim_param "unk"; ONNX
Runtime then takes unrelated dims as equal and fails at run time ("Shape mismatch attempting to re-use buffer"), so
``repair_value_info`` re-derives them. The same holds for ModelOpt's INT8 pass with an FP16 rest.

AutoCast finds those nodes on a reference run of random inputs in [-1, 1] (every dynamic dim 1). A segmenter's encoders
take ``cells``, rows of the tokens: a random 1 indexes past the one row and ONNX Runtime's GatherElements fails, so
their reference run gets the same kind of inputs with every cell on row 0 (``reference_feed``). ``cells`` stays
int64: AutoCast converts float tensors only, and ``keep_io_types`` keeps every input's type.

Run as ``python -m msvit_edge.calibration.fp16 --job GRAPH OUT - ... --keep-fp32 OPS`` by ``to_fp16_graphs``, in a
process of its own (see ``calibration.isolated``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

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


def reference_feed(graph: Path) -> dict[str, np.ndarray] | None:
    """Inputs for AutoCast's reference run of a graph that takes ``cells`` (None for any other: AutoCast's random
    ones): floats uniform in [-1, 1], every dynamic dim 1 (as AutoCast's), the key mask True, every cell on row 0."""
    import onnx

    inputs = onnx.load(str(graph), load_external_data=False).graph.input
    if "cells" not in {i.name for i in inputs}:
        return None
    rng, feed = np.random.default_rng(1), {}
    for i in inputs:
        shape = [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        floats = np.issubdtype(dtype, np.floating)
        feed[i.name] = rng.uniform(-1, 1, shape).astype(dtype) if floats else np.full(shape, i.name == "mask", dtype)
    return feed


def _to_fp16_here(graph: Path, out: Path, keep_fp32: list[str]) -> None:
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    feed, data = reference_feed(graph), None
    if feed is not None:  # a folder of .npz files, one per run: handed to AutoCast as they are
        data = out.with_name(f"{out.stem}.reference")
        data.mkdir()
        np.savez(data / "0.npz", **feed)
    model = convert_to_mixed_precision(
        str(graph),
        low_precision_type="fp16",
        op_types_to_exclude=keep_fp32,
        keep_io_types=True,
        calibration_data=None if data is None else str(data),
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
