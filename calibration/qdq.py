"""Q/DQ graphs for ONNX Runtime on x86: 8-bit types whose integer kernels cannot saturate. Torch-free.

ModelOpt (and ONNX Runtime's own quantizer with int8 activations) write signed int8 Q/DQ pairs, which is what
TensorRT needs. ONNX Runtime fuses them into U8S8 integer GEMMs (activations shifted to uint8, weights int8). On
x86 without VNNI those kernels multiply with VPMADDUBSW, which adds each pair of uint8 x int8 products in 16 bits
with saturation: 255 * 127 * 2 overflows 32767, so full-range int8 weights meeting large activations give wrong
sums: the fused kernels then disagree with the same graphs run as plain operators (measured: docs/precision.md).

``to_unsigned`` moves every int8 Q/DQ pair to uint8 with its zero point shifted by 128. The dequantized values are
bit for bit the same (``(q + 128) - (z + 128) == q - z``, and the clipping range moves with it), so the graph
computes exactly what it did, but ONNX Runtime now runs U8U8 kernels, which widen to 16 bits before multiplying
(VPMADDWD) and cannot saturate on any x86 CPU. TensorRT graphs keep int8: TensorRT takes signed, zero-centred Q/DQ
only, and GPUs have no such kernel.

``fold_weights`` stores each constant weight quantized. ModelOpt writes ``W (FP32) -> QuantizeLinear ->
DequantizeLinear -> MatMul``: the FP32 weights stay in the file, so an INT8 graph was a little larger than the FP32
one (the demo's encoder 4.85 MB against 4.79 MB). The same graph with ``q (uint8) -> DequantizeLinear`` computes the
same values (``q`` is what ONNX Runtime's QuantizeLinear computes from ``W``, and ONNX Runtime folds that constant
node at session start anyway) and holds a quarter of the bytes. TensorRT's graphs keep ModelOpt's form: a TensorRT
engine stores its own weights, whatever form the graph had.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QDQ_TYPES = ("int8", "uint8")  # what a precision pass's graphs use: int8 for TensorRT, uint8 for ONNX Runtime


def to_unsigned(path: str | Path) -> int:
    """Rewrite the graph at ``path`` in place into ONNX Runtime's form: constant weights stored quantized
    (``fold_weights``), then uint8 instead of int8 Q/DQ pairs. Returns how many initializers changed: weights and
    zero points (the module docstring says why the result computes the same values)."""
    import onnx  # lazy: onnx is heavy, and only the precision pass needs it
    from onnx import numpy_helper

    model = onnx.load(str(path))
    changed = set(fold_weights(model))
    inits = {init.name: init for init in model.graph.initializer}
    names = {n.input[2] for n in model.graph.node if n.op_type in QDQ_OPS and len(n.input) > 2}
    names |= {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}  # int8 weights
    for name in sorted(names & inits.keys()):  # zero points are initializers in both quantizers' graphs
        init = inits[name]
        if init.data_type == onnx.TensorProto.INT8:
            shifted = numpy_helper.to_array(init).astype(np.int16) + 128
            init.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), name))
            changed.add(name)
    onnx.save(model, str(path))
    return len(changed)


def fold_weights(model) -> list[str]:
    """Replace each QuantizeLinear of a constant FP32 weight by the quantized weight itself, an initializer of the
    zero point's type that the DequantizeLinear reads; the FP32 weight goes where nothing else reads it. Returns the
    quantized weights' names. ``model``: an ``onnx.ModelProto``, changed in place."""
    from onnx import numpy_helper  # lazy: onnx is heavy, and only the precision pass needs it

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    folded = [n for n in graph.node if n.op_type == "QuantizeLinear" and _constant_fp32(n, inits)]
    for node in folded:
        weight, scale, zero = (numpy_helper.to_array(inits[name]) for name in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        graph.initializer.append(numpy_helper.from_array(quantize(weight, scale, zero, axis), node.output[0]))
        graph.node.remove(node)
    read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for name in {n.input[0] for n in folded} - read:
        graph.initializer.remove(inits[name])
    return [node.output[0] for node in folded]


def quantize(weight: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear as ONNX Runtime's CPU kernel computes it: ``x / scale`` in FP32, clamped to the zero
    point type's range less the zero point, rounded half to even, plus the zero point; per axis where ``scale`` is a
    vector."""
    shape = [1] * weight.ndim
    if scale.ndim:
        shape[axis] = -1
    info, zero = np.iinfo(zero.dtype), zero.reshape(shape).astype(np.float32)
    ratio = weight.astype(np.float32) / scale.reshape(shape).astype(np.float32)
    return (np.rint(np.clip(ratio, info.min - zero, info.max - zero)) + zero).astype(info.dtype)


def _constant_fp32(node, inits: dict) -> bool:
    """A QuantizeLinear whose input, scale and zero point are initializers, FP32 with a per-tensor or per-axis
    scale (no blocks): what ``fold_weights`` folds."""
    from onnx import TensorProto  # lazy: onnx is heavy, and only the precision pass needs it

    if len(node.input) < 3 or not all(name in inits for name in node.input[:3]):
        return False
    blocked = any(a.name == "block_size" and a.i for a in node.attribute)
    kinds = [inits[name].data_type for name in node.input[:2]]
    return not blocked and kinds == [TensorProto.FLOAT, TensorProto.FLOAT]


def qdq_types(path: str | Path) -> Counter[str]:
    """Q/DQ nodes by the integer type of their zero point ("int8", "uint8"; "none" where a node has none, which
    ONNX reads as uint8)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    points = {init.name: init.data_type for init in graph.initializer}
    found: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in QDQ_OPS:
            kind = points.get(node.input[2]) if len(node.input) > 2 else None
            found[onnx.TensorProto.DataType.Name(kind).lower() if kind else "none"] += 1
    return found
