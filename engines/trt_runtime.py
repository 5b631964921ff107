"""TensorRT runtime on the pipeline seam: tokens stay on the device between the tokenizer and encoder engines.

Device memory and the stream are Polygraphy's CUDA wrapper (``polygraphy.cuda``), so a Jetson needs no PyTorch and
no cuda-python. ``tokenize`` runs the tokenizer engine and brings only counts and gate probabilities to the host;
``cut`` slices the selection's images and rows on the device with strided 2D copies (``copy_plan``); ``encode``
runs the encoder engine in the execution context of the selection's bucket (one context per profile, each bound to
its profile once, because switching a context's profile can stall) and brings the logits back. ``plain_vit`` runs
``vit.plan``, the plain ViT of the same weights, in a context and buffers of its own, for ``bench``'s speedup.

A segmentation engine directory differs by what its engines declare, not by a flag: the tokenizer's ``cells``
[B, G*G] int64 comes to the host with the counts, ``encode`` uploads the selection's rows of it as the encoders'
``cells`` input, and the logits come back in whatever shape the engine reports ([b, K, G, G]).

Every execution context shares one scratch buffer (``USER_MANAGED`` contexts and ``set_device_memory``, TensorRT
10.1+): a default (STATIC) context reserves its engine's largest scratch, so an encoder with K buckets would hold K
times it, on a Jetson whose 8 GB the CPU shares. Sharing is safe because every context runs on the pipeline's one
stream, one after another.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from msvit_edge.bundle import GRAPHS
from msvit_edge.bundle.engine_folder import EngineDir, open_source
from msvit_edge.bundle.selection import Selection
from msvit_edge.engines.pipeline import Pipeline, Tokenized
from msvit_edge.engines.trt_boundary import import_tensorrt, tensorrt_errors
from msvit_edge.engines.trt_contexts import LoadedEngine, check_dtypes, choose_profile, open_engine
from msvit_edge.engines.trt_memory import DeviceTensor, copy_plan
from msvit_edge.engines.trt_shapes import COMPARISON
from msvit_edge.errors import MsvitEdgeError


def _cuda() -> ModuleType:
    """``polygraphy.cuda`` (streams, device arrays, libcudart), imported where engines run, not with this module."""
    from polygraphy import cuda  # lazy: only a machine that runs engines needs CUDA

    return cuda


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
        self.engines: dict[str, LoadedEngine] = {}
        self.buffers: dict[Any, Any] = {}  # purpose -> polygraphy.cuda.DeviceArray, reused across calls
        self.scratch: Any = None  # the one polygraphy.cuda.DeviceArray every execution context works in
        self.stream: Any = None

    def activate(self) -> None:
        cuda = _cuda()
        with tensorrt_errors("could not create a CUDA stream"):
            self.stream = cuda.Stream()
        for stage in GRAPHS:
            self._load(stage)

    def _load(self, stage: str) -> LoadedEngine:
        if stage not in self.engines:
            trt, engine = import_tensorrt(), self._deserialize(stage)
            with tensorrt_errors(f"TensorRT could not create execution contexts for {stage}.plan", self.source.path):
                self.engines[stage] = open_engine(trt, engine, self.stream)
                self._share_scratch()
        return self.engines[stage]

    def _deserialize(self, stage: str) -> Any:
        from polygraphy.backend.trt import EngineFromPath  # lazy: its TensorRT loaders serve only where TensorRT runs

        path = self.source.graph(stage)
        built = self.source.record.backend_version
        what = (
            f"TensorRT could not load {path.name} (built with TensorRT {built}; an engine runs only on the TensorRT "
            "version and GPU that built it: rebuild it here with msvit-edge build --backend tensorrt --force)"
        )
        with tensorrt_errors(what, self.source.path):
            return EngineFromPath(str(path))()

    def _share_scratch(self) -> None:
        """Point every execution context at one scratch buffer, grown to the largest profile need of any engine."""
        cuda = _cuda()
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
        names = ["counts", "probs", *(["cells"] if "cells" in out else [])]  # cells: a segmenter's, for the encoders
        counts, probs, *cells = self._download(*(out[name] for name in names))
        return Tokenized(out["tokens"], counts.astype(np.int64), probs, *(c.astype(np.int64) for c in cells))

    def cut(self, tokens: DeviceTensor, selection: Selection) -> DeviceTensor:
        """The selection's images and rows of the candidates, copied on the device into a contiguous buffer."""
        cuda = _cuda()
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

    def encode(self, tokens: DeviceTensor, selection: Selection, cells: np.ndarray | None = None) -> np.ndarray:
        mask = selection.mask()
        stage = "encoder" if mask is None else "encoder_masked"
        inputs = {"tokens": tokens}
        if mask is not None:
            inputs["mask"] = self._upload((stage, "mask"), mask)
        if cells is not None:  # valid rows in any bucket: each is below its image's count
            inputs["cells"] = self._upload((stage, "cells"), np.asarray(cells, np.int64))
        (logits,) = self._download(self._execute(stage, inputs, selection.bucket)["logits"])
        return logits

    def plain_vit(self) -> Callable[[np.ndarray], np.ndarray]:
        """``vit.plan`` (loaded on first use, in an execution context and device buffers of its own): images ->
        host logits. Raises ``MsvitEdgeError`` with the build's reason where the engine directory has none."""
        if COMPARISON not in self.source.record.graphs:
            raise MsvitEdgeError(f"no plain-ViT engine here: {self._why_no_vit()}", self.source.path)
        if self.stream is None:
            raise MsvitEdgeError("activate the TensorRT pipeline (use it as a context manager) before plain_vit()")
        self._load(COMPARISON)
        return self._run_vit

    def _run_vit(self, images: np.ndarray) -> np.ndarray:
        buf = self._upload((COMPARISON, "images"), np.ascontiguousarray(images, np.float32))
        (logits,) = self._download(self._execute(COMPARISON, {"images": buf}, None)["logits"])
        return logits

    def _why_no_vit(self) -> str:
        """The build's reason for skipping vit.plan (``build_engines``' ``skipped``), or the likely one."""
        return self.source.build_facts.get("skipped", {}).get(
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
        cuda = _cuda()
        if key not in self.buffers:
            self.buffers[key] = cuda.DeviceArray(shape=shape, dtype=dtype)
        self.buffers[key].dtype = dtype
        return DeviceTensor(self.buffers[key].resize(shape), np.dtype(dtype))

    def _upload(self, key: Any, array: np.ndarray) -> DeviceTensor:
        array = np.asarray(array, order="C")  # not ascontiguousarray: it makes the scalar threshold [1], not []
        buf = self._buffer(key, array.shape, array.dtype)
        buf.array.copy_from(array, self.stream)
        return buf

    def _download(self, *bufs: DeviceTensor) -> list[np.ndarray]:
        """Host copies of device tensors, after one synchronisation for all of them."""
        hosts = [np.empty(buf.shape, buf.dtype) for buf in bufs]
        for buf, host in zip(bufs, hosts, strict=True):
            buf.array.copy_to(host, self.stream)
        self.stream.synchronize()
        return hosts
