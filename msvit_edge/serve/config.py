"""Triton ``config.pbtxt`` texts for the router and the stage models, each parsed into Triton's own ``ModelConfig``
protobuf (which tritonclient ships) before anyone writes it: a misspelt field or enum fails here, not in the server.

Stage models take no batch dimension of Triton's (``max_batch_size: 0``): the router calls them with whole,
already batched tensors through BLS, so their dims are the graph's own, symbolic dims as -1. A scalar graph input
(the tokenizer's threshold) travels as [1]: Triton refuses scalar tensors (an empty reshape) in a model without its
batch dimension. ``OrtStage`` reshapes it; a TensorRT tokenizer must take it as [1] (see docs/serving.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from msvit_edge.bundle.manifest import Tensor
from msvit_edge.errors import MsvitEdgeError

TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
         "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8"}  # fmt: skip


@dataclass(frozen=True)
class RouterSpec:
    """What the router model serves: images [size, size, channels] uint8 (or encoded image files) in, ``classes``
    logits out."""

    size: int
    channels: int
    classes: int
    max_batch: int
    queue_delay_us: int
    instances: int  # router instances: each holds its own pipeline (and, inline, its own ONNX Runtime sessions)
    parameters: dict[str, str]  # read by msvit_edge.serve.models.Router at start-up


def tensor_entry(t: Tensor) -> str:
    """One input or output entry of a stage model (no Triton batch dimension)."""
    if t.dtype not in TYPES:
        raise MsvitEdgeError(f"graph tensor {t.name} has dtype {t.dtype}, which the Triton repository does not map")
    dims = [d if isinstance(d, int) else -1 for d in t.shape]
    return f'{{ name: "{t.name}" data_type: {TYPES[t.dtype]} dims: [ {", ".join(map(str, dims or [1]))} ] }}'


def stage_config(name: str, inputs: tuple[Tensor, ...], outputs: tuple[Tensor, ...], engine: str,
                 profile: int | None = None) -> str:  # fmt: skip
    """A stage model: ``engine`` ``python`` (an ONNX Runtime session in the python backend) or ``tensorrt_plan``
    (``profile``: the optimisation profile its one instance selects, one bucket's token range)."""
    head = 'backend: "python"' if engine == "python" else 'platform: "tensorrt_plan"'
    if engine == "python":
        group = "{ kind: KIND_CPU count: 1 }"
    else:
        group = "{ kind: KIND_GPU count: 1" + ("" if profile is None else f' profile: [ "{profile}" ]') + " }"
    return "\n".join([
        f'name: "{name}"', head, "max_batch_size: 0",
        "input [\n  " + ",\n  ".join(tensor_entry(t) for t in inputs) + "\n]",
        "output [\n  " + ",\n  ".join(tensor_entry(t) for t in outputs) + "\n]",
        f"instance_group [ {group} ]",
    ]) + "\n"  # fmt: skip


def router_config(name: str, spec: RouterSpec) -> str:
    """The router: Triton's dynamic batching forms batches of images, the model routes them by bucket. A request
    sends ``images`` (uint8 pixels at the bundle's size) or ``image_bytes`` (encoded JPEG/PNG files, one per row,
    zero-padded to the longest: NVIDIA DALI's convention), so both inputs are optional; the router refuses a request
    with neither or both. ``image_bytes`` is uint8 rather than Triton's BYTES: the python backend stubs pytriton
    0.7.0 ships read a BYTES input through numpy 1's array layout and, under numpy 2, get garbage (and die);
    ``allow_ragged_batch`` lets requests of different file lengths share a batch (the router reads each alone)."""
    params = ",\n  ".join(
        f'{{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}' for k, v in spec.parameters.items()
    )
    scalar = "dims: [ 1 ]"
    pixels = f"dims: [ {spec.size}, {spec.size}, {spec.channels} ]"
    return "\n".join([
        f'name: "{name}"', 'backend: "python"', f"max_batch_size: {spec.max_batch}",
        "input [",
        f'  {{ name: "images" data_type: TYPE_UINT8 {pixels} optional: true }},',
        '  { name: "image_bytes" data_type: TYPE_UINT8 dims: [ -1 ] allow_ragged_batch: true optional: true }',
        "]",
        "output [",
        f'  {{ name: "logits" data_type: TYPE_FP32 dims: [ {spec.classes} ] label_filename: "labels.txt" }},',
        f'  {{ name: "top_class" data_type: TYPE_INT64 {scalar} }},',
        f'  {{ name: "tokens" data_type: TYPE_INT64 {scalar} }}',
        "]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {spec.queue_delay_us} }}",
        f"instance_group [ {{ kind: KIND_CPU count: {spec.instances} }} ]",
        f"parameters [\n  {params}\n]",
    ]) + "\n"  # fmt: skip


def parse(text: str, where: str):
    """``text`` parsed into Triton's ``ModelConfig``; a one-line error naming ``where`` if it does not parse."""
    try:  # lazy: tritonclient is the serve extra's, and the protobuf module is the schema Triton itself reads
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise MsvitEdgeError(
            "writing a Triton repository needs tritonclient: pip install 'tritonclient[grpc]'"
        ) from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise MsvitEdgeError(f"config.pbtxt does not parse as Triton's ModelConfig ({e})", where) from None
