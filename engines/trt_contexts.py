"""Execution contexts of a deserialized TensorRT engine: one per optimisation profile, each bound to its profile
once (switching a context's profile can stall), none with scratch memory of its own (``USER_MANAGED``: the pipeline
points them all at one buffer). Choosing the profile that holds a call's shapes, and refusing inputs other than the
engine's (a segmenter's encoders take ``cells`` too) or of another dtype, are pure and tested without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from msvit_edge.errors import MsvitEdgeError

Ranges = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> (min, opt, max)


@dataclass
class LoadedEngine:
    """A deserialized engine, its execution contexts (one per profile), the profiles' input ranges, its I/O dtypes
    and the scratch memory its largest profile needs (bytes)."""

    engine: Any
    contexts: list[Any]
    profiles: list[Ranges]
    inputs: dict[str, np.dtype]
    outputs: dict[str, np.dtype]
    scratch: int


def open_engine(trt: ModuleType, engine: Any, stream: Any) -> LoadedEngine:
    """One execution context per profile, each bound to its profile once, without scratch memory of its own
    (``TensorRTPipeline._share_scratch`` gives them one buffer)."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
    inputs = {n: dtypes[n] for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
    count = engine.num_optimization_profiles
    contexts = []
    for index in range(count):
        context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise MsvitEdgeError(f"TensorRT could not create an execution context for profile {index}")
        context.set_optimization_profile_async(index, stream.ptr)
        contexts.append(context)
    stream.synchronize()
    profiles = [
        {
            n: tuple(tuple(map(int, s)) for s in engine.get_tensor_profile_shape(n, index))
            for n in inputs
            if -1 in tuple(engine.get_tensor_shape(n))
        }
        for index in range(count)
    ]
    scratch = max(int(engine.get_device_memory_size_for_profile_v2(i)) for i in range(count))
    outputs = {n: d for n, d in dtypes.items() if n not in inputs}
    return LoadedEngine(engine, contexts, profiles, inputs, outputs, scratch)


def choose_profile(shapes: dict[str, tuple[int, ...]], profiles: list[Ranges], preferred: int | None) -> int:
    """The profile whose ranges hold ``shapes``: ``preferred`` (the bucket) when it does, else the first that does.

    Raises ``MsvitEdgeError`` naming the shape and every profile's ranges when none does.
    """
    order = ([preferred] if preferred is not None and preferred < len(profiles) else []) + list(range(len(profiles)))
    for index in order:
        if all(_within(shape, profiles[index][name]) for name, shape in shapes.items() if name in profiles[index]):
            return index
    described = "; ".join(
        f"profile {i}: " + ", ".join(f"{n} {list(r[0])}..{list(r[2])}" for n, r in p.items())
        for i, p in enumerate(profiles)
    )
    got = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
    raise MsvitEdgeError(f"input shape {got} is outside every optimisation profile of the engine ({described})")


def _within(shape: tuple[int, ...], ranges: tuple) -> bool:
    lo, _, hi = ranges
    return len(shape) == len(lo) and all(a <= s <= b for s, a, b in zip(shape, lo, hi, strict=True))


def check_dtypes(stage: str, given: dict[str, np.dtype], expected: dict[str, np.dtype]) -> None:
    """Refuse inputs other than the engine's, or of another dtype: TensorRT reads raw bytes, so a mismatch is a wrong
    answer, and an input left unbound (a segmenter's ``cells``) fails deep inside TensorRT without its name."""
    if set(given) != set(expected):
        raise MsvitEdgeError(
            f"the {stage} engine takes {', '.join(expected)}, not {', '.join(given)}: the engine and the pipeline's "
            "inputs disagree (a segmentation engine needs the cells its tokenizer returns; rebuild an engine that "
            "does not match its bundle with msvit-edge build --backend tensorrt --force)"
        )
    for name, dtype in given.items():
        if np.dtype(dtype) != expected[name]:
            raise MsvitEdgeError(
                f"the {stage} engine takes {name} as {expected[name]}, not {np.dtype(dtype)}: the engine and its "
                "graphs disagree (rebuild with msvit-edge build --backend tensorrt --force)"
            )
