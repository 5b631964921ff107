"""TensorRT runtime on the pipeline seam: tokens stay on the device between the tokenizer and encoder engines.

Device memory and the stream are Polygraphy's CUDA wrapper (``polygraphy.cuda``), so a Jetson needs no PyTorch and
no cuda-python. ``tokenize`` runs the tokenizer engine and brings only counts and gate probabilities to the host;
``cut`` slices the selection's images and rows on the device with strided 2D copies (``copy_plan``); ``encode``
runs the encoder engine in the execution context of the selection's bucket (one context per profile, each bound to
its profile once, because switching a context's profile can stall) and brings the logits back. ``plain_vit`` runs
``vit.plan``, the plain ViT of the same weights, in a context and buffers of its own, for ``bench``'s speedup.

Every execution context shares one scratch buffer (``USER_MANAGED`` contexts and ``set_device_memory``, TensorRT
10.1+): a default (STATIC) context reserves its engine's largest scratch, so an encoder with K buckets would hold K
times it, on a Jetson whose 8 GB the CPU shares. Sharing is safe because every context runs on the pipeline's one
stream, one after another.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from msvit_edge.bundle import GRAPHS
from msvit_edge.bundle.engine_folder import EngineDir, open_source
from msvit_edge.bundle.selection import Selection
from msvit_edge.engines.pipeline import Pipeline, Tokenized
from msvit_edge.engines.trt_build import COMPARISON, tensorrt_errors
from msvit_edge.errors import MsvitEdgeError

Ranges = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> (min, opt, max)


class Copy2D(NamedTuple):
    """One ``cudaMemcpy2DAsync``: ``height`` rows of ``width`` bytes, offsets in bytes from each buffer's start."""

    dst: int
    dpitch: int
    src: int
    spitch: int
    width: int
    height: int


def copy_plan(index: np.ndarray, rows: int, candidates: int, row_bytes: int) -> list[Copy2D]:
    """The copies that cut tokens [B, M, D] down to [b, rows, D] for the images ``index`` (ascending).

    Each run of consecutive images is one 2D copy: a pitch of M token rows in the source, ``rows`` in the output.

    Args:
        index: The images to keep, ascending (``Selection.index``).
        rows: Token rows to keep per image (``Selection.rows``).
        candidates: M, token rows per image in the source.
        row_bytes: Bytes per token row (D times the item size).
    """
    copies, start = [], 0
    for end in range(1, len(index) + 1):
        if end == len(index) or index[end] != index[end - 1] + 1:
            src = int(index[start]) * candidates * row_bytes
            dst = start * rows * row_bytes
            copies.append(Copy2D(dst, rows * row_bytes, src, candidates * row_bytes, rows * row_bytes, end - start))
            start = end
    return copies


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


class DeviceTensor(NamedTuple):
    """A tensor in a ``polygraphy.cuda.DeviceArray``, with its numpy dtype (the pipeline's device array type)."""

    array: Any
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def ptr(self) -> int:
        return self.array.ptr


def check_dtypes(stage: str, given: dict[str, np.dtype], expected: dict[str, np.dtype]) -> None:
    """Refuse inputs whose dtype is not the engine's: TensorRT reads raw bytes, so a mismatch is a wrong answer."""
    for name, dtype in given.items():
        if np.dtype(dtype) != expected[name]:
            raise MsvitEdgeError(
                f"the {stage} engine takes {name} as {expected[name]}, not {np.dtype(dtype)}: the engine and its "
                "graphs disagree (rebuild with msvit-edge build --backend tensorrt --force)"
            )


@dataclass
class _Engine:
    """A deserialized engine, its execution contexts (one per profile), the profiles' input ranges, its I/O dtypes
    and the scratch memory its largest profile needs (bytes)."""

    engine: Any
    contexts: list[Any]
    profiles: list[Ranges]
    inputs: dict[str, np.dtype]
    outputs: dict[str, np.dtype]
    scratch: int


class TensorRTPipeline(Pipeline):
    """Runs a TensorRT engine directory (``msvit-edge build --backend tensorrt``) on the GPU.

    Args:
        source: The engine directory (or its path).
        pad_to_bucket: See ``Pipeline``.
        batching: See ``Pipeline``.
    """

    def __init__(self, source: EngineDir | str, pad_to_bucket: bool = False, batching: str | None = None):
        self.source = open_source(source)
        if not isinstance(self.source, EngineDir) or self.source.backend != "tensorrt":
            raise MsvitEdgeError("the TensorRT pipeline runs an engine directory built with --backend tensorrt")
        super().__init__(self.source.plan, pad_to_bucket, batching)
        self.engines: dict[str, _Engine] = {}
        self.buffers: dict[Any, Any] = {}  # purpose -> polygraphy.cuda.DeviceArray, reused across calls
        self.scratch: Any = None  # the one polygraphy.cuda.DeviceArray every execution context works in
        self.stream: Any = None

    def activate(self) -> None:
        from polygraphy import cuda

        with tensorrt_errors("could not create a CUDA stream"):
            self.stream = cuda.Stream()
        for stage in GRAPHS:
            self._load(stage)

    def _load(self, stage: str) -> _Engine:
        from msvit_edge.engines.tensorrt import import_tensorrt

        if stage not in self.engines:
            trt, engine = import_tensorrt(), self._deserialize(stage)
            with tensorrt_errors(f"TensorRT could not create execution contexts for {stage}.plan", self.source.path):
                self.engines[stage] = _open_engine(trt, engine, self.stream)
                self._share_scratch()
        return self.engines[stage]

    def _deserialize(self, stage: str) -> Any:
        from polygraphy.backend.trt import EngineFromPath

        path = self.source.graph(stage)
        built = self.source.manifest.get("backend_version")
        what = (
            f"TensorRT could not load {path.name} (built with TensorRT {built}; an engine runs only on the TensorRT "
            "version and GPU that built it: rebuild it here with msvit-edge build --backend tensorrt --force)"
        )
        with tensorrt_errors(what, self.source.path):
            return EngineFromPath(str(path))()

    def _share_scratch(self) -> None:
        """Point every execution context at one scratch buffer, grown to the largest profile need of any engine."""
        from polygraphy import cuda

        size = max(loaded.scratch for loaded in self.engines.values())  # 0: a null pointer, which TensorRT accepts
        if self.scratch is None:
            self.scratch = cuda.DeviceArray.raw((size,))
        elif size > self.scratch.allocated_nbytes:
            self.stream.synchronize()  # no context may still work in the buffer that growing frees
            self.scratch.resize((size,))
        for loaded in self.engines.values():
            for context in loaded.contexts:
                context.set_device_memory(self.scratch.ptr, self.scratch.allocated_nbytes)

    def device_memory(self) -> dict[str, float]:
        """Device memory the pipeline holds for running engines, MB: the shared scratch buffer, and the input, output
        and token buffers (the engines' weights are not counted: TensorRT does not report them)."""
        scratch = 0 if self.scratch is None else self.scratch.allocated_nbytes
        buffers = sum(array.allocated_nbytes for array in self.buffers.values())
        return {"device_scratch_mb": scratch / 1e6, "device_buffers_mb": buffers / 1e6}

    def deactivate(self) -> None:
        for loaded in self.engines.values():
            loaded.contexts.clear()  # contexts before their engines and their scratch memory
        self.engines = {}
        for array in self.buffers.values():
            array.free()
        if self.scratch is not None:
            self.scratch.free()
        self.buffers, self.scratch = {}, None
        if self.stream is not None:
            self.stream.free()
            self.stream = None

    def synchronize(self) -> None:
        self.stream.synchronize()

    def tokenize(self, images: np.ndarray, threshold: float) -> Tokenized:
        feed = {"images": np.ascontiguousarray(images, np.float32), "threshold": np.asarray(threshold, np.float32)}
        inputs = {name: self._upload(("tokenizer", name), array) for name, array in feed.items()}
        out = self._execute("tokenizer", inputs, None)
        counts, probs = (self._download(out[name]) for name in ("counts", "probs"))
        return Tokenized(out["tokens"], counts.astype(np.int64), probs)

    def cut(self, tokens: DeviceTensor, selection: Selection) -> DeviceTensor:
        """The selection's images and rows of the candidates, copied on the device into a contiguous buffer."""
        from polygraphy import cuda

        _, candidates, dim = tokens.shape
        row_bytes = dim * tokens.dtype.itemsize
        out = self._buffer(("cut", selection.bucket), (len(selection.index), selection.rows, dim), tokens.dtype)
        cudart = cuda.wrapper()  # Polygraphy's ctypes handle on libcudart, which has no 2D copy of its own
        for c in copy_plan(selection.index, selection.rows, candidates, row_bytes):
            status = cudart.handle.cudaMemcpy2DAsync(
                ctypes.c_void_p(out.ptr + c.dst),
                ctypes.c_size_t(c.dpitch),
                ctypes.c_void_p(tokens.ptr + c.src),
                ctypes.c_size_t(c.spitch),
                ctypes.c_size_t(c.width),
                ctypes.c_size_t(c.height),
                cuda.MemcpyKind.DeviceToDevice,
                ctypes.c_void_p(self.stream.ptr),
            )
            cudart.check(status)
        return out

    def encode(self, tokens: DeviceTensor, selection: Selection) -> np.ndarray:
        mask = selection.mask()
        stage = "encoder" if mask is None else "encoder_masked"
        inputs = {"tokens": tokens}
        if mask is not None:
            inputs["mask"] = self._upload((stage, "mask"), mask)
        return self._download(self._execute(stage, inputs, selection.bucket)["logits"])

    def plain_vit(self) -> Callable[[np.ndarray], np.ndarray]:
        """``vit.plan`` (loaded on first use, in an execution context and device buffers of its own): images ->
        host logits. Raises ``MsvitEdgeError`` with the build's reason where the engine directory has none."""
        if COMPARISON not in self.source.manifest["graphs"]:
            raise MsvitEdgeError(f"no plain-ViT engine here: {self._why_no_vit()}", self.source.path)
        if self.stream is None:
            raise MsvitEdgeError("activate the TensorRT pipeline (use it as a context manager) before plain_vit()")
        self._load(COMPARISON)
        return self._run_vit

    def _run_vit(self, images: np.ndarray) -> np.ndarray:
        buf = self._upload((COMPARISON, "images"), np.ascontiguousarray(images, np.float32))
        return self._download(self._execute(COMPARISON, {"images": buf}, None)["logits"])

    def _why_no_vit(self) -> str:
        """The build's reason for skipping vit.plan (``build_engines``' ``skipped``), or the likely one."""
        facts = self.source.path / "tensorrt.json"
        skipped = json.loads(facts.read_text()).get("skipped", {}) if facts.is_file() else {}
        return skipped.get(
            COMPARISON, "built without one (an older build, or a bundle without vit.onnx): rebuild with --force"
        )

    def _execute(self, stage: str, inputs: dict[str, DeviceTensor], bucket: int | None) -> dict[str, DeviceTensor]:
        """Run ``stage`` on device inputs in the context of the profile that holds their shapes; device outputs."""
        loaded = self.engines[stage]
        check_dtypes(stage, {name: buf.dtype for name, buf in inputs.items()}, loaded.inputs)
        shapes = {name: buf.shape for name, buf in inputs.items()}
        context = loaded.contexts[choose_profile(shapes, loaded.profiles, bucket)]
        for name, buf in inputs.items():
            if not context.set_input_shape(name, shapes[name]):
                raise MsvitEdgeError(f"TensorRT refused {name} of shape {list(shapes[name])} for the {stage} engine")
            context.set_tensor_address(name, buf.ptr)
        outputs = {}
        for name, dtype in loaded.outputs.items():
            outputs[name] = self._buffer((stage, name), tuple(context.get_tensor_shape(name)), dtype)
            context.set_tensor_address(name, outputs[name].ptr)
        if not context.execute_async_v3(self.stream.ptr):
            raise MsvitEdgeError(f"TensorRT could not run the {stage} engine at {shapes} (see TensorRT's log above)")
        return outputs

    def _buffer(self, key: Any, shape: tuple[int, ...], dtype: np.dtype) -> DeviceTensor:
        """A device array for ``key`` of this shape and dtype (reallocated only when it must grow)."""
        from polygraphy import cuda

        if key not in self.buffers:
            self.buffers[key] = cuda.DeviceArray(shape=shape, dtype=dtype)
        self.buffers[key].dtype = dtype
        return DeviceTensor(self.buffers[key].resize(shape), np.dtype(dtype))

    def _upload(self, key: Any, array: np.ndarray) -> DeviceTensor:
        array = np.ascontiguousarray(array)
        buf = self._buffer(key, array.shape, array.dtype)
        buf.array.copy_from(array, self.stream)
        return buf

    def _download(self, buf: DeviceTensor) -> np.ndarray:
        host = np.empty(buf.shape, buf.dtype)
        buf.array.copy_to(host, self.stream)
        self.stream.synchronize()
        return host


def _open_engine(trt: ModuleType, engine: Any, stream: Any) -> _Engine:
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
    return _Engine(engine, contexts, profiles, inputs, outputs, scratch)
