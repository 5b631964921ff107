"""The TensorRT backend on a segmentation bundle: ``cells`` in every encoder profile and trtexec line, fed to the
encoder engines and the cell logits [b, K, G, G] back in image order; a classifier's engines unchanged.

Without TensorRT the build and the runtime run for real up to TensorRT's calls: ``build_engines`` with TensorRT's
build and plan files stood in for (``GraphEngine``: an engine as TensorRT's Python API shows it, whose I/O is read
from the ONNX graph and whose profiles are the ones the build handed it), then ``TensorRTPipeline`` on those plans,
Polygraphy's real device arrays on host memory (``HostCuda``), each engine running its graph in ONNX Runtime. Real
engines where TensorRT and a GPU exist (marked ``tensorrt`` and ``gpu``).
"""

from __future__ import annotations

import ctypes
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_tensorrt import engine_dir
from test_tensorrt_contract import TRTEXEC, parse_trtexec

from msvit_edge.bundle import io_description
from msvit_edge.engines.trt_contexts import check_dtypes
from msvit_edge.engines.trt_shapes import EngineShapes
from msvit_edge.errors import MsvitEdgeError

ENCODERS = ("encoder", "encoder_masked")
MIN_OPT_MAX = range(3)


def cells_per_image(bundle) -> int:
    """G*G, from the model's config (not from the graphs' shapes the profiles are read from)."""
    vit = bundle.record.model["vit"]
    return (vit["img_size"] // vit["patch_size"]) ** 2


# ---- profiles and trtexec lines ----------------------------------------------------------------------------------


def test_every_encoder_profile_of_a_segmentation_bundle_ranges_cells_at_the_tokens_batch(seg_bundle):
    shapes, cells = EngineShapes.from_bundle(seg_bundle), cells_per_image(seg_bundle)
    for stage in ENCODERS:
        profiles = shapes.profiles(stage)
        assert len(profiles) == len(seg_bundle.plan.buckets) == 3
        for profile, bucket in zip(profiles, seg_bundle.plan.buckets, strict=True):
            assert [s[1] for s in profile["tokens"]] == [bucket.min, bucket.opt, bucket.max]
            assert profile["cells"] == tuple((profile["tokens"][k][0], cells) for k in MIN_OPT_MAX)
            assert [s[0] for s in profile["cells"]] == list(seg_bundle.plan.batch)
    assert not any("cells" in p for stage in ("tokenizer", "vit") for p in shapes.profiles(stage))  # an output there


def test_a_classifiers_profiles_hold_only_its_tokens_and_mask(bundle):
    shapes, plan = EngineShapes.from_bundle(bundle), bundle.plan
    dim = bundle.record.model["vit"]["embed_dim"]
    tokens = [tuple((plan.batch[k], (b.min, b.opt, b.max)[k], dim) for k in MIN_OPT_MAX) for b in plan.buckets]
    assert shapes.profiles("encoder") == [{"tokens": t} for t in tokens]
    assert shapes.profiles("encoder_masked") == [{"tokens": t, "mask": tuple(s[:2] for s in t)} for t in tokens]


# ---- the build, TensorRT stood in for ----------------------------------------------------------------------------

FAKE_TRT = SimpleNamespace(  # what the build and the runtime read from the module, TensorRT 11-like
    __version__="11.4.0",
    NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1),
    BuilderFlag=SimpleNamespace(),
    ICudaEngine=SimpleNamespace(device_memory_size_v2=0),
    TensorIOMode=SimpleNamespace(INPUT="INPUT"),
    ExecutionContextAllocationStrategy=SimpleNamespace(USER_MANAGED="USER_MANAGED"),
    LayerInformationFormat=SimpleNamespace(JSON="JSON"),
    nptype=np.dtype,  # GraphEngine's dtypes are numpy's already
)
LAYERS = {"Layers": [{"Name": "graph", "Inputs": [{"Format/Datatype": "Float"}], "Outputs": []}]}  # one FP32 layer


class GraphEngine:
    """A built engine as TensorRT's Python API shows it: I/O as its ONNX graph declares it (named dims -1), the
    profiles the build gave it, and execution contexts that run the graph in ONNX Runtime on ``HostCuda`` memory."""

    def __init__(self, graph: Path, profiles: list[dict], memory: HostCuda | None = None):
        io = io_description(graph)
        self.graph, self.profiles, self.memory, self.session = graph, profiles, memory, None
        self.io = {t["name"]: t for t in io["inputs"] + io["outputs"]}
        self.inputs, self.outputs = ([t["name"] for t in io[k]] for k in ("inputs", "outputs"))
        self.num_io_tensors, self.num_optimization_profiles = len(self.io), len(profiles)
        self.device_memory_size_v2 = 4096

    @classmethod
    def load(cls, plan: Path, memory: HostCuda | None = None) -> GraphEngine:
        saved = json.loads(plan.read_text())
        profiles = [{n: tuple(tuple(s) for s in r) for n, r in p.items()} for p in saved["profiles"]]
        return cls(Path(saved["graph"]), profiles, memory)

    def get_tensor_name(self, index: int) -> str:
        return [*self.inputs, *self.outputs][index]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.inputs else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> np.dtype:
        return np.dtype(self.io[name]["dtype"])

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(-1 if isinstance(d, str) else d for d in self.io[name]["shape"])

    def get_tensor_profile_shape(self, name: str, index: int) -> tuple:
        return self.profiles[index][name]

    def get_device_memory_size_for_profile_v2(self, index: int) -> int:
        return 1024 * (index + 1)

    def create_engine_inspector(self) -> SimpleNamespace:
        return SimpleNamespace(get_engine_information=lambda form: json.dumps(LAYERS))

    def create_execution_context(self, strategy: str) -> GraphContext:
        if self.session is None:
            from msvit_edge.engines.ort import session

            self.session = session(self.graph, threads=1)
        return GraphContext(self)


class GraphContext:
    """An execution context: refuses shapes outside its profile (``set_input_shape`` is False, as TensorRT's) and
    runs only with every input shaped and every tensor bound."""

    def __init__(self, engine: GraphEngine):
        self.engine, self.profile, self.shapes, self.addresses = engine, None, {}, {}

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        self.profile = index
        return True

    def set_device_memory(self, ptr: int, size: int) -> None:
        pass

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.engine.io[name]["shape"]):
            return False  # the rank is the graph's (a scalar threshold is [], not [1])
        ranges = self.engine.profiles[self.profile].get(name)
        if ranges is not None and not all(a <= s <= b for s, a, b in zip(shape, ranges[0], ranges[2], strict=True)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def _dims(self) -> dict[str, set[int]]:
        dims: dict[str, set[int]] = {}
        for name, shape in self.shapes.items():
            for d, size in zip(self.engine.io[name]["shape"], shape, strict=True):
                if isinstance(d, str):
                    dims.setdefault(d, set()).add(size)
        return dims

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        dims = self._dims()
        return tuple(max(dims[d]) if isinstance(d, str) else d for d in self.engine.io[name]["shape"])

    def execute_async_v3(self, stream: int) -> bool:
        engine, memory = self.engine, self.engine.memory
        assert set(self.shapes) == set(engine.inputs), f"inputs shaped: {sorted(self.shapes)}"
        assert set(self.addresses) == set(engine.io), f"tensors bound: {sorted(self.addresses)}"
        if any(len(sizes) > 1 for sizes in self._dims().values()):
            return False  # inputs that disagree on a dim (a cells batch that is not the tokens')
        feed = {n: memory.read(self.addresses[n], self.shapes[n], engine.get_tensor_dtype(n)) for n in engine.inputs}
        for name, value in zip(engine.outputs, engine.session.run(engine.outputs, feed), strict=True):
            assert value.shape == self.get_tensor_shape(name) and value.dtype == engine.get_tensor_dtype(name)
            memory.write(self.addresses[name], value)
        return True


def fake_build_trt(trt, graph: Path, profiles: list[dict], plan: Path, typed, flags, opts) -> tuple:
    """``trt_build._build_trt`` without TensorRT: the plan file holds the graph and the profiles it was given."""
    plan.write_text(json.dumps({"graph": str(graph.resolve()), "profiles": profiles}))
    return GraphEngine(graph, profiles), {"FP32": 1}


def build_faked(bundle, out: Path) -> dict:
    """``build_engines`` on the bundle's FP32 graphs, TensorRT stood in for; its facts."""
    import msvit_edge.engines.trt_build as trt_build

    out.mkdir()
    graphs = {stage: bundle.graph(stage) for stage in ("tokenizer", *ENCODERS, "vit")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trt_build, "import_tensorrt", lambda: FAKE_TRT)
        patch.setattr(trt_build, "_build_trt", fake_build_trt)
        return trt_build.build_engines(graphs, bundle, out, "fp32", timing_cache=out / "timing.cache")


@pytest.fixture(scope="module")
def seg_engines(seg_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg-trt") / "engines"
    facts = build_faked(seg_bundle, out)
    return engine_dir(seg_bundle, out, facts), facts


@pytest.fixture(scope="module")
def cls_engines(bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls-trt") / "engines"
    facts = build_faked(bundle, out)
    return engine_dir(bundle, out, facts), facts


def test_the_build_gives_tensorrt_a_cells_range_in_every_encoder_profile(seg_engines, seg_bundle):
    _, facts = seg_engines
    cells = cells_per_image(seg_bundle)
    for stage in ENCODERS:
        profiles = facts["engines"][stage]["profiles"]  # read back from the engine (``read_back``)
        assert len(profiles) == len(seg_bundle.plan.buckets)
        for profile in profiles:
            assert profile["cells"] == [[profile["tokens"][k][0], cells] for k in MIN_OPT_MAX]
    assert set(facts["engines"]["tokenizer"]["profiles"][0]) == {"images"}


def trtexec_lines(engine) -> dict[str, list[dict]]:
    """Each family's script beside the engines, parsed as trtexec would: {family: [parsed line per stage]}."""
    _, facts = engine
    scripts = {fam: (engine[0].path / name).read_text() for fam, name in facts["trtexec"].items()}
    return {
        fam: [parse_trtexec(line, TRTEXEC[fam]) for line in text.splitlines() if line.startswith("trtexec ")]
        for fam, text in scripts.items()
    }


def test_the_trtexec_lines_range_cells_in_every_encoder_profile(seg_engines, seg_bundle):
    cells, batch = cells_per_image(seg_bundle), seg_bundle.plan.batch
    parsed = trtexec_lines(seg_engines)
    assert sorted(parsed) == ["10", "11"]
    for lines in parsed.values():
        by_stage = {p["--saveEngine"].removesuffix(".plan"): p for p in lines}
        for stage in ENCODERS:
            profiles = by_stage[stage]["profiles"]
            assert len(profiles) == len(seg_bundle.plan.buckets)
            for profile in profiles:
                assert [profile[k]["cells"] for k in ("min", "opt", "max")] == [(b, cells) for b in batch]
        assert not any("cells" in p[k] for p in by_stage["tokenizer"]["profiles"] for k in ("min", "opt", "max"))


def test_a_classifiers_build_and_trtexec_lines_name_no_cells(cls_engines, bundle):
    _, facts = cls_engines
    assert [set(p) for p in facts["engines"]["encoder"]["profiles"]] == [{"tokens"}] * len(bundle.plan.buckets)
    assert {frozenset(p) for p in facts["engines"]["encoder_masked"]["profiles"]} == {frozenset({"tokens", "mask"})}
    for lines in trtexec_lines(cls_engines).values():
        names = {n for p in lines for profile in p["profiles"] for k in ("min", "opt", "max") for n in profile[k]}
        assert names == {"images", "tokens", "mask"}


# ---- the runtime, on host memory ---------------------------------------------------------------------------------


class HostCuda:
    """Polygraphy's CUDA wrapper (what ``polygraphy.cuda.wrapper()`` returns) on host memory: device pointers are
    host addresses of blocks it allocated, copies are done at once (one stream, always in order), and every copy
    that touches device memory must stay inside one block."""

    def __init__(self):
        self.blocks: dict[int, ctypes.Array] = {}  # address -> block, alive until freed
        self.handle = SimpleNamespace(cudaMemcpy2DAsync=self._memcpy_2d)

    def malloc(self, nbytes: int) -> int:
        block = ctypes.create_string_buffer(max(int(nbytes), 1))
        self.blocks[ctypes.addressof(block)] = block
        return ctypes.addressof(block)

    def free(self, ptr: int) -> None:
        self.blocks.pop(ptr, None)

    def _device(self, ptr: int, nbytes: int) -> int:
        assert any(a <= ptr and ptr + nbytes <= a + len(b) for a, b in self.blocks.items()), "outside device memory"
        return ptr

    def memcpy(self, dst: int, src: int, nbytes: int, kind, stream_ptr: int | None = None) -> None:
        from polygraphy.cuda import MemcpyKind

        if kind == MemcpyKind.HostToDevice:
            self._device(dst, nbytes)
        elif kind == MemcpyKind.DeviceToHost:
            self._device(src, nbytes)
        ctypes.memmove(dst, src, nbytes)

    def _memcpy_2d(self, dst, dpitch, src, spitch, width, height, kind, stream) -> int:
        for row in range(height.value):
            d, s = dst.value + row * dpitch.value, src.value + row * spitch.value
            ctypes.memmove(self._device(d, width.value), self._device(s, width.value), width.value)
        return 0

    def check(self, status: int) -> None:
        assert status == 0

    def create_stream(self) -> int:
        return 1

    def stream_synchronize(self, ptr: int) -> None:
        pass

    def destroy_stream(self, ptr: int) -> None:
        pass

    def read(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return np.frombuffer(ctypes.string_at(self._device(ptr, nbytes), nbytes), dtype).reshape(shape).copy()

    def write(self, ptr: int, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value)
        ctypes.memmove(self._device(ptr, value.nbytes), value.ctypes.data, value.nbytes)


@pytest.fixture
def host_cuda(monkeypatch) -> HostCuda:
    """The runtime's engines and device memory without a GPU: plans load as ``GraphEngine``s on ``HostCuda``."""
    import polygraphy.cuda.cuda

    import msvit_edge.engines.trt_runtime as trt_runtime
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    memory = HostCuda()
    monkeypatch.setattr(polygraphy.cuda.cuda, "G_CUDA", memory)  # what polygraphy.cuda.wrapper() returns
    monkeypatch.setattr(trt_runtime, "import_tensorrt", lambda: FAKE_TRT)
    monkeypatch.setattr(
        TensorRTPipeline, "_deserialize", lambda pipe, stage: GraphEngine.load(pipe.source.graph(stage), memory)
    )
    return memory


@pytest.mark.parametrize("batching", ["pad", "split"])
@pytest.mark.parametrize("pad_to_bucket", [False, True])
def test_the_runtime_feeds_cells_and_returns_cell_logits_in_image_order(
    seg_engines, seg_bundle, host_cuda, batching, pad_to_bucket
):
    from msvit_edge.engines.ort import OnnxRuntimePipeline
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, _ = seg_engines
    images, threshold = seg_bundle.preprocess(seg_bundle.reference().images), seg_bundle.threshold
    grid, classes = int(cells_per_image(seg_bundle) ** 0.5), seg_bundle.record.model["vit"]["num_classes"]
    options = {"pad_to_bucket": pad_to_bucket, "batching": batching}
    calls = []
    with TensorRTPipeline(engine, **options) as trt_pipe, OnnxRuntimePipeline(seg_bundle, threads=1, **options) as ort:
        cells = trt_pipe.tokenize(images[:4], threshold).cells
        assert cells.dtype == np.int64 and cells.shape == (4, grid * grid)
        for size in (1, 7, 24):
            for start in range(0, len(images), size):
                batch = images[start : start + size]
                got, want = trt_pipe(batch, threshold), ort(batch, threshold)
                assert got.logits.shape == (len(batch), classes, grid, grid)
                np.testing.assert_array_equal(got.counts, want.counts)
                np.testing.assert_allclose(got.logits, want.logits, atol=1e-5, rtol=1e-5)
                assert [c.bucket for c in got.calls] == [c.bucket for c in want.calls]
                calls.append(len(got.calls))
    assert (max(calls) > 1) == (batching == "split")  # split batches ran sub-batches, scattered back in order


def test_a_segmentation_encoder_run_without_cells_is_a_one_line_error(seg_engines, seg_bundle, host_cuda):
    from msvit_edge.bundle.selection import select
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, _ = seg_engines
    images = seg_bundle.preprocess(seg_bundle.reference().images[:2])
    with TensorRTPipeline(engine) as pipe:
        tok = pipe.tokenize(images, seg_bundle.threshold)
        (call,) = select(tok.counts, pipe.plan, batching="pad")
        with pytest.raises(MsvitEdgeError) as err:
            pipe.encode(pipe.cut(tok.tokens, call), call)
    assert "engine takes tokens, " in str(err.value) and "cells" in str(err.value) and "\n" not in str(err.value)


def test_the_input_check_names_a_missing_or_unknown_input():
    expected = {"tokens": np.dtype(np.float32), "cells": np.dtype(np.int64)}
    check_dtypes("encoder", {"tokens": np.float32, "cells": np.int64}, expected)
    with pytest.raises(MsvitEdgeError, match=r"^the encoder engine takes tokens, cells, not tokens: "):
        check_dtypes("encoder", {"tokens": np.float32}, expected)
    with pytest.raises(MsvitEdgeError, match=r"takes cells as int64, not int32"):
        check_dtypes("encoder", {"tokens": np.float32, "cells": np.int32}, expected)
    with pytest.raises(MsvitEdgeError, match=r"takes tokens, not tokens, cells"):
        check_dtypes("encoder", {"tokens": np.float32, "cells": np.int64}, {"tokens": np.dtype(np.float32)})


def test_a_classifiers_runtime_is_unchanged(cls_engines, bundle, host_cuda):
    from msvit_edge.engines.ort import OnnxRuntimePipeline
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, _ = cls_engines
    images = bundle.preprocess(bundle.reference().images[:16])
    with TensorRTPipeline(engine) as trt_pipe, OnnxRuntimePipeline(bundle, threads=1) as ort:
        assert trt_pipe.tokenize(images, bundle.threshold).cells is None
        assert set(trt_pipe.engines["encoder"].inputs) == {"tokens"}
        for size in (1, 16):
            got, want = trt_pipe(images[:size], bundle.threshold), ort(images[:size], bundle.threshold)
            assert got.logits.shape == (size, bundle.record.model["vit"]["num_classes"])
            np.testing.assert_allclose(got.logits, want.logits, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(trt_pipe.plain_vit()(images), ort.plain_vit()(images), atol=1e-5, rtol=1e-5)


# ---- torch-tensorrt ----------------------------------------------------------------------------------------------


def test_torch_tensorrt_refuses_a_segmenter_in_one_line_before_looking_for_a_gpu(seg_bundle):
    from msvit_edge.engines.torch_tensorrt import TorchTensorRTPipeline
    from msvit_edge.model.config import MSViTConfig
    from msvit_edge.model.factory import create_model

    model = create_model(MSViTConfig.from_dict(seg_bundle.record.model))
    with pytest.raises(MsvitEdgeError) as err:
        TorchTensorRTPipeline(model, seg_bundle.plan, device="cpu")  # a CPU device would be refused after
    message = str(err.value)
    assert "segmenter" in message and "use the tensorrt or onnxruntime backend" in message and "\n" not in message


# ---- real engines (TensorRT and a GPU) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seg_built(seg_bundle, tmp_path_factory):
    """The segmentation bundle's FP32 graphs built by TensorRT, in an engine directory."""
    from msvit_edge.engines.tensorrt import build_engines

    out = tmp_path_factory.mktemp("seg-engines")
    facts = build_engines(
        {stage: seg_bundle.graph(stage) for stage in ("tokenizer", *ENCODERS)}, seg_bundle, out, "fp32"
    )
    return engine_dir(seg_bundle, out, facts), facts


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("batching", ["pad", "split"])
@pytest.mark.parametrize("pad_to_bucket", [False, True])
def test_fp32_engines_of_a_segmentation_bundle_match_onnxruntime(seg_built, seg_bundle, batching, pad_to_bucket):
    from msvit_edge.engines.ort import OnnxRuntimePipeline
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, facts = seg_built
    cells, batch = cells_per_image(seg_bundle), seg_bundle.plan.batch
    for stage in ENCODERS:  # TensorRT's own profiles, read back from the engines
        assert [p["cells"] for p in facts["engines"][stage]["profiles"]] == [[[b, cells] for b in batch]] * 3
    images, threshold = seg_bundle.preprocess(seg_bundle.reference().images), seg_bundle.threshold
    options = {"pad_to_bucket": pad_to_bucket, "batching": batching}
    with TensorRTPipeline(engine, **options) as trt_pipe, OnnxRuntimePipeline(seg_bundle, **options) as ort:
        for size in (1, 24):
            for start in range(0, len(images), size):
                got, want = (
                    trt_pipe(images[start : start + size], threshold),
                    ort(images[start : start + size], threshold),
                )
                np.testing.assert_array_equal(got.counts, want.counts)
                np.testing.assert_allclose(got.logits, want.logits, atol=1e-4, rtol=1e-4)
                assert [c.bucket for c in got.calls] == [c.bucket for c in want.calls]


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_an_fp16_engine_of_a_segmentation_bundle_builds_and_passes_validation(
    seg_bundle, copy_bundle, tmp_path, caplog
):
    """``msvit-edge build --backend tensorrt --precision fp16`` as a user runs it: the precision pass (ModelOpt
    AutoCast), the engines, and the build's validation per pixel and by mIoU; then the same validation here."""
    pytest.importorskip("modelopt", reason="needs ModelOpt (the quantize extra) for the FP16 graphs")
    from msvit_edge.build import BuildConfig, build
    from msvit_edge.bundle import validation
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    caplog.set_level(logging.INFO, logger="msvit_edge")
    engine = build(BuildConfig(str(copy_bundle(seg_bundle).path), "fp16", "tensorrt", out=str(tmp_path / "fp16")))
    facts = json.loads((engine.path / "tensorrt.json").read_text())
    for stage in ENCODERS:
        assert facts["engines"][stage]["precision"]["requested"] == "fp16"
        assert all("cells" in p for p in facts["engines"][stage]["profiles"])
    assert any(m.startswith("validation passed") for m in caplog.messages)
    ref = engine.reference()
    with TensorRTPipeline(engine) as pipe:
        report = validation.validate(pipe, ref, engine.preprocess(ref.images), engine.threshold, batch=8)
        assert pipe(engine.preprocess(ref.images[:3]), engine.threshold).logits.shape == (3, *ref.logits.shape[1:])
    validation.check(report, validation.tolerance("fp16", is_dense=True), "tensorrt fp16 segmentation")
    assert report["accuracy"]["metric"] == "miou"
