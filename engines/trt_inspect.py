"""What precision a graph or a built engine has: read back, never assumed.

After a build the engine is read back (``read_back``): its profiles, device memory per profile, and every layer's
precision through the engine inspector (``layer_precisions``). A build that asked for FP16 or INT8 and shows none
fails (``check_precision``): other projects shipped FP32 engines labelled FP16 when TensorRT 11 silently dropped the
old precision flags. Before a build, ``graph_precisions`` reads an ONNX graph's tensor types without TensorRT, and
``comparison_gap`` says why a plain-ViT graph is no fair baseline at the requested precision. Only ``read_back`` and
``network_precisions`` touch TensorRT objects (handed in); the rest is pure.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from msvit_edge.errors import MsvitEdgeError

# Precision classes, most reduced first: a layer counts as the most reduced precision among its tensors.
PRECISIONS = ("INT8", "FP8", "FP16", "BF16", "FP32")
WANTED = {"fp16": ("FP16", "BF16"), "int8": ("INT8",)}
_PRECISION_PATTERNS = (  # (pattern, class) in match order: BFLOAT16 before FLOAT, UINT8 is not INT8
    (re.compile(r"BF16|BFLOAT16"), "BF16"),
    (re.compile(r"FP8|E4M3"), "FP8"),
    (re.compile(r"(?<!U)INT8"), "INT8"),
    (re.compile(r"FP16|HALF"), "FP16"),
    (re.compile(r"FP32|FLOAT"), "FP32"),
)
_PROFILE_SUFFIX = re.compile(r" \[profile (\d+)\]$")  # TensorRT 10.16 lists each layer once per profile
_ONNX_PRECISIONS = {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "INT8": "INT8", "FLOAT8E4M3FN": "FP8"}


def tensor_precision(text: str) -> str | None:
    """The precision class of a tensor type named by the engine inspector ("Half", "Row major linear FP16 format")
    or by ``trt.DataType`` ("HALF")."""
    upper = text.upper()
    return next((cls for pattern, cls in _PRECISION_PATTERNS if pattern.search(upper)), None)


def tensor_type(described: dict) -> str:
    """A layer tensor's type as the inspector describes it: ``"Datatype"`` on TensorRT 11, ``"Format/Datatype"``
    before (a dict, not a TensorRT object). 11.x split the field and may omit ``"Format"``, whose layout words never
    decide the type."""
    return described.get("Datatype") or described.get("Format/Datatype") or ""


def layer_precisions(info: dict) -> dict:
    """Layer counts by precision class, per optimisation profile, from the engine inspector's JSON (built with
    detailed profiling verbosity).

    Returns {"profiles": [{"layers": n, "precisions": {class: n}}, ...]}: one entry per profile where the inspector
    lists every layer once per profile (10.16: names end in " [profile N]"; a name without one is profile 0), else
    one entry that holds for every profile. A layer counts as the most reduced precision among its input and output
    tensors, "other" when none has one (shape and index kernels). Myelin regions are listed per kernel ("kgen",
    "gemm", ...) with typed tensors since TensorRT 9/10, so fused layers hide no precision.
    """
    entries = info.get("Layers", [])
    if any(not isinstance(entry, dict) for entry in entries):
        raise MsvitEdgeError("the engine has no detailed layer information (profiling verbosity is not DETAILED)")
    counts: dict[int, Counter[str]] = {}
    for entry in entries:
        match = _PROFILE_SUFFIX.search(str(entry.get("Name", "")))
        found = {tensor_precision(tensor_type(t)) for t in entry.get("Inputs", []) + entry.get("Outputs", [])}
        found.discard(None)
        profile = counts.setdefault(int(match.group(1)) if match else 0, Counter())
        profile[min(found, key=PRECISIONS.index) if found else "other"] += 1
    listed = [counts[k] for k in sorted(counts)] or [Counter()]
    return {"profiles": [{"layers": c.total(), "precisions": dict(c)} for c in listed]}


def check_precision(stage: str, precision: str, built: dict, parsed: dict[str, int]) -> str:
    """How the build is known to have the requested precision; ``MsvitEdgeError`` when a profile lacks it.

    Args:
        stage: Engine name, for the message.
        precision: What was asked: fp32 (nothing to check), fp16 or int8.
        built: ``layer_precisions`` of the built engine.
        parsed: Tensor counts by precision class in the parsed network, before the build (names the cause).
    """
    wanted = WANTED.get(precision)
    if wanted is None:
        return "fp32: nothing to check"
    profiles = built["profiles"]
    missing = [i for i, p in enumerate(profiles) if not any(p["precisions"].get(w) for w in wanted)]
    if not missing:
        each = f" (each of {len(profiles)} profiles)" if len(profiles) > 1 else ""
        return f"engine layers: {profiles[0]['precisions']}{each}"
    where = f" in profile {missing[0]}" if len(profiles) > 1 else ""
    why = (
        f"TensorRT built it as {profiles[missing[0]]['precisions']} (see {stage}.layers.json)"
        if any(parsed.get(p) for p in wanted)
        else f"its graph has no {wanted[0]} tensors ({parsed}): it is not a {precision} graph from the precision pass"
    )
    raise MsvitEdgeError(f"asked for {precision} but the {stage} engine has no {wanted[0]} layer{where}: {why}")


def graph_precisions(path: str | Path) -> dict[str, int]:
    """Tensor counts by precision class in an ONNX graph, read without TensorRT.

    Counts initializers, ``Constant`` values, ``Cast`` targets and typed values: AutoCast leaves FP16 weights and
    casts, ModelOpt's Q/DQ leaves INT8 zero points, so a graph from the precision pass shows its precision here.
    """
    import onnx  # lazy: onnx is slow to import, and only this reads a graph

    graph = onnx.load(str(path), load_external_data=False).graph
    types = [t.data_type for t in graph.initializer]
    for node in graph.node:
        for attr in node.attribute:
            if (node.op_type, attr.name) == ("Cast", "to"):
                types.append(attr.i)
            elif (node.op_type, attr.name) == ("Constant", "value"):
                types.append(attr.t.data_type)
    types += [v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)]
    names = (onnx.TensorProto.DataType.Name(t) for t in types if t)
    return dict(Counter(_ONNX_PRECISIONS[n] for n in names if n in _ONNX_PRECISIONS))


def comparison_gap(precision: str, graph: dict[str, int]) -> str | None:
    """Why the plain-ViT graph with these tensor counts (``graph_precisions``) is no baseline at ``precision``.

    None when it carries the precision (or fp32 was asked). Timing an FP32 plain ViT against an FP16 or INT8 MSViT
    would credit the precision to the mixed-scale tokens.
    """
    wanted = WANTED.get(precision)
    if wanted is None or any(graph.get(p) for p in wanted):
        return None
    return (
        f"the plain-ViT graph has no {wanted[0]} tensors ({graph}): the precision pass made no {precision} vit graph, "
        f"and an FP32 plain ViT against a {precision} MSViT would overstate the speedup"
    )


def network_precisions(network: Any) -> dict[str, int]:
    """Layer-output tensor counts by precision class in a parsed network (a strongly typed one's are final)."""
    counts: Counter[str] = Counter()
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        for output in range(layer.num_outputs):
            tensor = layer.get_output(output)
            counts[tensor_precision(tensor.dtype.name) or "other"] += 1
    return dict(counts)


def read_back(trt: ModuleType, engine: Any) -> tuple[dict, dict]:
    """Profiles, device memory and layer precisions of a built engine, and the inspector's JSON."""
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    count = engine.num_optimization_profiles
    facts = {
        "profiles": [_profile_shapes(trt, engine, i) for i in range(count)],
        "device_memory": {
            "max": int(engine.device_memory_size_v2),
            "per_profile": [int(engine.get_device_memory_size_for_profile_v2(i)) for i in range(count)],
        },
        "layers": layer_precisions(info),
    }
    return facts, info


def _profile_shapes(trt: ModuleType, engine: Any, index: int) -> dict[str, list[list[int]]]:
    """{input: [min, opt, max]} of one profile, dynamic inputs only."""
    shapes = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and -1 in tuple(engine.get_tensor_shape(name)):
            shapes[name] = [list(map(int, s)) for s in engine.get_tensor_profile_shape(name, index)]
    return shapes
