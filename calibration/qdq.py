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
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QDQ_TYPES = ("int8", "uint8")  # what a precision pass's graphs use: int8 for TensorRT, uint8 for ONNX Runtime


def to_unsigned(path: str | Path) -> int:
    """Rewrite the graph at ``path`` in place with uint8 instead of int8 Q/DQ pairs; returns how many initializers
    changed: zero points, and weights stored already quantized (the module docstring says why the result computes
    the same values)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {init.name: init for init in model.graph.initializer}
    names = {n.input[2] for n in model.graph.node if n.op_type in QDQ_OPS and len(n.input) > 2}
    names |= {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}  # int8 weights
    changed = 0
    for name in sorted(names & inits.keys()):  # zero points are initializers in both quantizers' graphs
        init = inits[name]
        if init.data_type == onnx.TensorProto.INT8:
            shifted = numpy_helper.to_array(init).astype(np.int16) + 128
            init.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), name))
            changed += 1
    onnx.save(model, str(path))
    return changed


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
