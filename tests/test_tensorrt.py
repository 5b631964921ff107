"""TensorRT backend: the pure parts here (profiles, precision read-back, device-side cut, profile choice, errors);
real two-profile engines against ONNX Runtime where TensorRT and a GPU exist (marked ``tensorrt`` and ``gpu``).

The API-contract and trtexec checks, which also run everywhere, are in ``test_tensorrt_contract.py``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from msvit_edge.bundle.buckets import Bucket, BucketPlan
from msvit_edge.bundle.selection import select
from msvit_edge.engines.trt_boundary import tensorrt_errors, versions
from msvit_edge.engines.trt_build import _skipped_comparison, build_engines, timing_cache_file
from msvit_edge.engines.trt_contexts import check_dtypes, choose_profile
from msvit_edge.engines.trt_inspect import (
    check_precision,
    comparison_gap,
    graph_precisions,
    layer_precisions,
    tensor_precision,
)
from msvit_edge.engines.trt_memory import Copy2D, copy_plan
from msvit_edge.engines.trt_shapes import EngineShapes
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import sha256
from msvit_edge.machine.environment import package_version, this_device

PLAN = BucketPlan((Bucket(17, 29, 29, 0.6), Bucket(30, 65, 65, 0.4)), {20: 6, 40: 4}, 0.1, (1, 1, 32))
SHAPES = EngineShapes.standard(PLAN, 32, (3, 32, 32))
TRT_ABSENT = importlib.util.find_spec("tensorrt") is None
GRAPH_STAGES = ("tokenizer", "encoder", "encoder_masked")


# ---- profiles ----------------------------------------------------------------------------------------------------


def test_encoder_profiles_are_the_bucket_plans_profiles_and_the_mask_follows_the_tokens():
    assert [p["tokens"] for p in SHAPES.profiles("encoder")] == [
        ((1, 17, 32), (1, 29, 32), (32, 29, 32)),
        ((1, 30, 32), (1, 65, 32), (32, 65, 32)),
    ]
    masked = SHAPES.profiles("encoder_masked")
    assert [p["mask"] for p in masked] == [tuple(s[:2] for s in p["tokens"]) for p in masked]


def test_the_tokenizer_has_one_profile_over_the_batch_and_none_for_its_static_threshold():
    assert SHAPES.profiles("tokenizer") == [{"images": ((1, 3, 32, 32), (1, 3, 32, 32), (32, 3, 32, 32))}]


def test_shapes_from_a_manifest_take_any_dim_names_on_batch_and_tokens_and_refuse_others():
    shapes = EngineShapes(PLAN, {"encoder": {"tokens": ["s0", "s1", 32]}})
    assert shapes.profiles("encoder")[1]["tokens"] == ((1, 30, 32), (1, 65, 32), (32, 65, 32))
    odd = EngineShapes(PLAN, {"encoder": {"tokens": ["batch", "tokens", "width"]}})
    with pytest.raises(MsvitEdgeError, match="dynamic dim 'width' on axis 2: only batch and tokens"):
        odd.profiles("encoder")


# ---- precision read-back -----------------------------------------------------------------------------------------

INSPECTOR = Path(__file__).parent / "data" / "tensorrt" / "inspector"  # real inspector JSON, sources beside each


def inspector(name: str) -> dict:
    return json.loads((INSPECTOR / f"{name}.json").read_text())


@pytest.mark.parametrize(
    "text, precision",
    [
        ("Row major linear FP32", "FP32"),
        ("Channel major FP16 format where channel % 8 == 0", "FP16"),
        ("Four wide channel vectorized row major Int8 format", "INT8"),
        ("Row major linear BFloat16 format", "BF16"),
        ("Half", "FP16"),  # 10.x and 11.x inspector types without layout words
        ("Float", "FP32"),
        ("Int8", "INT8"),
        ("Int32", None),
        ("Int64", None),
        ("FLOAT", "FP32"),  # trt.DataType names, as the network reports them
        ("HALF", "FP16"),
        ("UINT8", None),
        ("BOOL", None),
    ],
)
def test_tensor_precision_reads_inspector_formats_and_datatype_names(text, precision):
    assert tensor_precision(text) == precision


@pytest.mark.parametrize(
    "name, precisions",
    [
        ("trt8.4_fp16_resnet18", {"FP16": 5}),  # the input reformat counts as FP16: its output is
        ("trt8.4_int8_qdq_resnet18", {"INT8": 4, "FP32": 1, "FP16": 1}),
        ("trt10.x_int8_resnet18_issue4020", {"INT8": 1}),
        ("trt10.1_fp16_myelin_alexnet", {"FP16": 13, "other": 1}),  # Myelin kernels typed; shape_call has no tensors
        ("trt10.16_fp32_myelin_mnist", {"FP32": 8, "other": 1}),  # a kgen of Int32 -> Int64 casts is "other"
    ],
)
def test_real_inspector_output_of_tensorrt_8_and_10_reads_back_per_layer(name, precisions):
    built = layer_precisions(inspector(name))
    assert built == {"profiles": [{"layers": sum(precisions.values()), "precisions": precisions}]}


def test_tensorrt_11_layer_tensors_name_their_type_in_datatype():
    """The key handling of 11.x (``"Datatype"`` + optional ``"Format"``, ``"I/O Tensors"``), on the one file that is
    not real TensorRT output: its values are the real 10.1 file's, so it tests keys, never values. Reading only
    ``"Format/Datatype"`` found no type here, and every FP16/INT8 build on TensorRT 11 failed the precision check."""
    built = layer_precisions(inspector("trt11_fp16_DERIVED_not_real"))
    assert built == {"profiles": [{"layers": 2, "precisions": {"FP16": 2}}]}
    assert check_precision("encoder", "fp16", built, {"FP16": 30}).startswith("engine layers: {'FP16': 2}")


@pytest.mark.parametrize(
    "name, fp16, int8",
    [
        ("trt8.4_fp16_resnet18", True, False),
        ("trt8.4_int8_qdq_resnet18", True, True),
        ("trt10.x_int8_resnet18_issue4020", False, True),
        ("trt10.1_fp16_myelin_alexnet", True, False),
        ("trt10.16_fp32_myelin_mnist", False, False),  # the negative control: FP32 with Myelin kernels
        ("trt11_fp16_DERIVED_not_real", True, False),
    ],
)
def test_the_precision_check_passes_exactly_where_the_engine_has_the_precision(name, fp16, int8):
    built = layer_precisions(inspector(name))
    for precision, present in (("fp16", fp16), ("int8", int8)):
        if present:
            assert check_precision(name, precision, built, {}).startswith("engine layers")
        else:
            with pytest.raises(MsvitEdgeError, match=f"asked for {precision} but the {name} engine has no"):
                check_precision(name, precision, built, {})


def per_profile(info: dict, profiles: int, first_suffixed: bool) -> dict:
    """``info`` listed once per profile, as TensorRT 10.16 lists multi-profile engines (" [profile N]" names). No
    real multi-profile file is at hand: this repeats a real single-profile listing in that shape."""
    layers = [
        layer | {"Name": layer["Name"] + (f" [profile {k}]" if k or first_suffixed else "")}
        for k in range(profiles)
        for layer in info["Layers"]
    ]
    return info | {"Layers": layers}


@pytest.mark.parametrize("first_suffixed", [False, True])
def test_layers_listed_once_per_profile_are_counted_per_profile(first_suffixed):
    single = layer_precisions(inspector("trt10.16_fp32_myelin_mnist"))["profiles"][0]
    built = layer_precisions(per_profile(inspector("trt10.16_fp32_myelin_mnist"), 3, first_suffixed))
    assert built == {"profiles": [single] * 3}  # 9 layers each, not 27


def test_a_profile_without_the_precision_fails_and_is_named():
    fp16, fp32 = inspector("trt10.1_fp16_myelin_alexnet"), inspector("trt10.16_fp32_myelin_mnist")
    mixed = {"Layers": fp16["Layers"] + per_profile(fp32, 2, False)["Layers"][len(fp32["Layers"]) :]}
    built = layer_precisions(mixed)
    assert [p["layers"] for p in built["profiles"]] == [14, 9]
    with pytest.raises(MsvitEdgeError, match=r"has no FP16 layer in profile 1: TensorRT built it as \{'FP32': 8"):
        check_precision("encoder", "fp16", built, {"FP16": 30})
    assert "(each of 2 profiles)" in check_precision(
        "encoder", "fp16", layer_precisions(per_profile(fp16, 2, False)), {}
    )


def test_layer_precisions_need_detailed_profiling():
    with pytest.raises(MsvitEdgeError, match="profiling verbosity is not DETAILED"):
        layer_precisions({"Layers": ["qkv", "norm"]})  # what the inspector lists at LAYER_NAMES_ONLY


def test_an_int8_request_that_built_fp32_fails_and_names_the_cause():
    fp32 = layer_precisions(inspector("trt10.16_fp32_myelin_mnist"))
    with pytest.raises(MsvitEdgeError, match=r"asked for int8 but the encoder engine has no INT8 layer: TensorRT bui"):
        check_precision("encoder", "int8", fp32, {"INT8": 4, "FP32": 20})
    with pytest.raises(MsvitEdgeError, match=r"its graph has no FP16 tensors .* not a fp16 graph from the precision"):
        check_precision("encoder_masked", "fp16", fp32, {"FP32": 20})
    assert check_precision("encoder", "fp32", fp32, {}) == "fp32: nothing to check"


# ---- the plain ViT (vit.plan) -------------------------------------------------------------------------------------


def test_the_plain_vit_has_one_profile_over_the_batch_at_the_static_image_size():
    assert SHAPES.profiles("vit") == [{"images": ((1, 3, 32, 32), (1, 3, 32, 32), (32, 3, 32, 32))}]


def test_a_stage_the_shapes_do_not_list_is_a_clear_error():
    with pytest.raises(MsvitEdgeError, match="no input shapes for the vit graph"):
        EngineShapes(PLAN, {"encoder": {"tokens": ["batch", "tokens", 32]}}).profiles("vit")


def onnx_graph(path: Path, cast_to: str | None = None, int8_zero_point: bool = False) -> Path:
    """A one-MatMul graph, optionally with a Cast (AutoCast's mark) or a Q/DQ pair with an INT8 zero point."""
    from onnx import TensorProto, helper, numpy_helper, save

    nodes, inits, x = [], [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")], "x"
    if int8_zero_point:
        inits += [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
        nodes += [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    if cast_to is not None:
        to = getattr(TensorProto, cast_to)
        nodes += [helper.make_node("Cast", [x], ["c"], to=to), helper.make_node("Cast", ["c"], ["back"], to=1)]
        x = "back"
    nodes.append(helper.make_node("MatMul", [x, "w"], ["y"]))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    save(helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:], inits)), str(path))
    return path


@pytest.mark.parametrize(
    "cast_to, int8, found, missing",
    [
        (None, False, {"FP32"}, {"FP16", "INT8"}),
        ("FLOAT16", False, {"FP32", "FP16"}, {"INT8"}),
        ("BFLOAT16", False, {"BF16"}, {"FP16", "INT8"}),
        (None, True, {"FP32", "INT8"}, {"FP16"}),
    ],
)
def test_graph_precisions_read_casts_and_quantization_from_the_onnx_graph(tmp_path, cast_to, int8, found, missing):
    counts = graph_precisions(onnx_graph(tmp_path / "g.onnx", cast_to, int8))
    assert found <= set(counts) and not missing & set(counts)


def test_a_plain_vit_without_the_requested_precision_is_no_baseline():
    assert comparison_gap("fp32", {"FP32": 10}) is None
    assert comparison_gap("fp16", {"FP32": 3, "FP16": 10}) is None
    assert comparison_gap("fp16", {"FP32": 3, "BF16": 10}) is None  # what check_precision accepts for fp16
    assert comparison_gap("int8", {"FP16": 10, "INT8": 4}) is None
    why = comparison_gap("int8", {"FP32": 3, "FP16": 10})
    assert "plain-ViT graph has no INT8 tensors" in why and "would overstate the speedup" in why


def test_the_build_skips_an_fp32_plain_vit_at_fp16_and_says_why(tmp_path, caplog):
    graphs = {"tokenizer": "t.onnx", "vit": onnx_graph(tmp_path / "vit.onnx")}
    caplog.set_level(logging.INFO, logger="msvit_edge")
    assert _skipped_comparison(graphs, SHAPES, "fp32") == {}
    skipped = _skipped_comparison(graphs, SHAPES, "fp16")
    assert list(skipped) == ["vit"] and "no FP16 tensors" in skipped["vit"]
    assert caplog.messages == [f"tensorrt: vit.plan not built: {skipped['vit']}"]
    fp16 = graphs | {"vit": onnx_graph(tmp_path / "vit.fp16.onnx", "FLOAT16")}
    assert _skipped_comparison(fp16, SHAPES, "fp16") == {}
    assert _skipped_comparison({"tokenizer": "t.onnx"}, SHAPES, "fp16") == {}  # no vit, nothing said
    assert len(caplog.messages) == 1
    old = EngineShapes(PLAN, {k: v for k, v in SHAPES.inputs.items() if k != "vit"})
    assert "export it again" in _skipped_comparison(graphs, old, "fp32")["vit"]


def test_the_bundles_vit_graph_is_fp32_and_its_shapes_come_from_the_manifest(bundle):
    assert comparison_gap("fp16", graph_precisions(bundle.graph("vit"))) is not None
    images = EngineShapes.from_bundle(bundle).profiles("vit")[0]["images"]
    assert images[0][1:] == (3, 32, 32) and images[2][0] == bundle.plan.batch[2]


@pytest.mark.skipif(importlib.util.find_spec("modelopt") is None, reason="needs ModelOpt (the quantize extra)")
def test_modelopt_autocast_of_the_vit_graph_is_a_baseline_at_fp16(bundle, tmp_path):
    """What the precision pass will hand the build for ``vit`` at fp16 reads as FP16 here."""
    from msvit_edge.calibration.fp16 import to_fp16

    fp16 = to_fp16(bundle.graph("vit"), tmp_path / "vit.fp16.onnx")
    assert graph_precisions(fp16).get("FP16") and comparison_gap("fp16", graph_precisions(fp16)) is None


def test_the_pipeline_says_why_an_engine_directory_has_no_plain_vit(bundle, tmp_path):
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    out = tmp_path / "engines"
    out.mkdir()
    for stage in ("tokenizer", "encoder", "vit"):
        (out / f"{stage}.plan").write_bytes(b"never loaded here")  # opening a folder checks its files' digests
    facts = {"tensorrt_version": "11.4", "engines": {s: {"file": f"{s}.plan"} for s in ("tokenizer", "encoder")}}
    pipe = TensorRTPipeline(engine_dir(bundle, out, facts))
    with pytest.raises(MsvitEdgeError, match=r"no plain-ViT engine here: .*rebuild with --force"):
        pipe.plain_vit()
    (out / "tensorrt.json").write_text(json.dumps({"skipped": {"vit": "the plain-ViT graph has no FP16 tensors"}}))
    with pytest.raises(MsvitEdgeError, match="no plain-ViT engine here: the plain-ViT graph has no FP16 tensors"):
        pipe.plain_vit()
    facts["engines"]["vit"] = {"file": "vit.plan"}
    with pytest.raises(MsvitEdgeError, match="activate the TensorRT pipeline"):
        TensorRTPipeline(engine_dir(bundle, out, facts)).plain_vit()


# ---- device-side cut and profile choice --------------------------------------------------------------------------


def emulate(copies: list[Copy2D], src: bytes, size: int) -> bytes:
    """cudaMemcpy2DAsync on host bytes."""
    dst = bytearray(size)
    for c in copies:
        for row in range(c.height):
            s, d = c.src + row * c.spitch, c.dst + row * c.dpitch
            dst[d : d + c.width] = src[s : s + c.width]
    return bytes(dst)


@pytest.mark.parametrize("batching", ["pad", "split"])
@pytest.mark.parametrize("pad_to_bucket", [False, True])
def test_the_device_cut_copies_what_the_numpy_cut_takes(batching, pad_to_bucket):
    rng = np.random.default_rng(0)
    B, M, D = 12, 81, 8
    tokens = rng.standard_normal((B, M, D)).astype(np.float32)
    counts = rng.choice([17, 20, 29, 30, 44, 65], size=B)
    for call in select(counts, PLAN, pad_to_bucket, batching):
        expected = np.ascontiguousarray(tokens[call.index][:, : call.rows])
        copies = copy_plan(call.index, call.rows, M, D * 4)
        got = np.frombuffer(emulate(copies, tokens.tobytes(), expected.nbytes), np.float32).reshape(expected.shape)
        np.testing.assert_array_equal(got, expected)


def test_consecutive_images_are_one_copy():
    assert len(copy_plan(np.array([0, 1, 2, 3]), 20, 81, 128)) == 1
    assert len(copy_plan(np.array([0, 2, 3, 7]), 20, 81, 128)) == 3


PROFILES = [{"tokens": ((1, 17, 32), (1, 29, 32), (32, 29, 32))}, {"tokens": ((1, 30, 32), (1, 65, 32), (32, 65, 32))}]


def test_the_bucket_chooses_the_profile_and_any_profile_that_holds_the_shape_serves_without_one():
    assert choose_profile({"tokens": (4, 29, 32)}, PROFILES, 0) == 0
    assert choose_profile({"tokens": (4, 40, 32)}, PROFILES, None) == 1
    assert choose_profile({"tokens": (4, 40, 32)}, PROFILES, 0) == 1  # the bucket's profile cannot hold it


@pytest.mark.parametrize("shape", [(33, 20, 32), (1, 66, 32), (1, 20, 16)])
def test_a_shape_outside_every_profile_is_a_clear_error(shape):
    with pytest.raises(MsvitEdgeError) as err:
        choose_profile({"tokens": shape}, PROFILES, 0)
    assert f"input shape tokens {list(shape)} is outside every optimisation profile" in str(err.value)
    assert "profile 0: tokens [1, 17, 32]..[32, 29, 32]; profile 1: tokens [1, 30, 32]..[32, 65, 32]" in str(err.value)


# ---- without TensorRT --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not TRT_ABSENT, reason="TensorRT is installed here")
def test_without_tensorrt_the_build_says_how_to_install_it_in_one_line(tmp_path):
    from msvit_edge.engines.tensorrt import build_engines

    with pytest.raises(MsvitEdgeError) as err:
        build_engines({}, SHAPES, tmp_path, "fp16")
    message = str(err.value)
    assert "\n" not in message and "pip install '.[tensorrt]' in the msvit-edge clone" in message
    assert "JetPack's system TensorRT (python3-libnvinfer)" in message and "msvit-edge doctor" in message


def test_the_pipeline_refuses_a_bundle(tmp_path):
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"schema_version": 0}))
    with pytest.raises(MsvitEdgeError):
        TensorRTPipeline(bundle)


def test_the_backend_imports_without_tensorrt_cuda_or_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None\n"
        "import msvit_edge.engines.tensorrt as t; print(t.TensorRTPipeline.__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "TensorRTPipeline", result.stderr[-2000:]


# ---- the runtime: input dtypes and one scratch buffer -----------------------------------------------------------


def test_an_input_of_another_dtype_than_the_engines_is_a_one_line_error():
    expected = {"tokens": np.dtype(np.float32), "mask": np.dtype(bool)}
    check_dtypes("encoder_masked", {"tokens": np.float32, "mask": np.bool_}, expected)
    with pytest.raises(MsvitEdgeError) as err:
        check_dtypes("encoder_masked", {"tokens": np.float16, "mask": np.bool_}, expected)
    assert str(err.value).startswith("the encoder_masked engine takes tokens as float32, not float16: ")
    assert "\n" not in str(err.value)


class FakeContext:
    """What ``open_engine`` and ``_share_scratch`` call on an execution context, recorded."""

    def __init__(self, strategy: str):
        self.strategy, self.profile, self.memory = strategy, None, None

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        self.profile = index
        return True

    def set_device_memory(self, ptr: int, size: int) -> None:
        self.memory = (ptr, size)


class FakeEngine:
    """An encoder engine with one profile per scratch size: tokens [-1, -1, 32] -> logits."""

    num_io_tensors = 2

    def __init__(self, scratch: list[int]):
        self.scratch, self.num_optimization_profiles = scratch, len(scratch)

    def get_tensor_name(self, i: int) -> str:
        return ["tokens", "logits"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "tokens" else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return "FLOAT"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, -1, 32) if name == "tokens" else (-1, 10)

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        return [(1, 17, 32), (1, 29, 32), (32, 29, 32)]

    def create_execution_context(self, strategy: str) -> FakeContext:
        return FakeContext(strategy)

    def get_device_memory_size_for_profile_v2(self, index: int) -> int:
        return self.scratch[index]


class FakeArray:
    """``polygraphy.cuda.DeviceArray.raw`` on a counter instead of cudaMalloc: each allocation a new pointer."""

    allocations = 0

    def __init__(self, nbytes: int):
        self.ptr, self.allocated_nbytes = 0, 0
        self.resize((nbytes,))

    @staticmethod
    def raw(shape: tuple[int]) -> FakeArray:
        return FakeArray(shape[0])

    def resize(self, shape: tuple[int]) -> FakeArray:
        if shape[0] > self.allocated_nbytes:
            FakeArray.allocations += 1
            self.ptr, self.allocated_nbytes = 4096 * FakeArray.allocations, shape[0]
        return self


def test_every_execution_context_shares_one_scratch_buffer_sized_for_the_largest_profile(bundle, tmp_path, monkeypatch):
    """TensorRT's default (STATIC) context reserves its engine's largest scratch: K buckets would hold K times it."""
    from types import SimpleNamespace

    from polygraphy import cuda

    from msvit_edge.engines.tensorrt import TensorRTPipeline
    from msvit_edge.engines.trt_contexts import open_engine

    trt = SimpleNamespace(
        TensorIOMode=SimpleNamespace(INPUT="INPUT"),
        ExecutionContextAllocationStrategy=SimpleNamespace(USER_MANAGED="USER_MANAGED"),
        nptype=lambda dtype: np.float32,
    )
    stream = SimpleNamespace(ptr=1, synchronize=lambda: None)
    monkeypatch.setattr(cuda, "DeviceArray", FakeArray)
    out = tmp_path / "engines"
    out.mkdir()
    pipe = TensorRTPipeline(engine_dir(bundle, out, {"tensorrt_version": "10.3.0", "engines": {}}))
    pipe.stream = stream
    for stage, scratch in (("encoder", [300, 700, 500]), ("encoder_masked", [400, 600, 200])):
        pipe.engines[stage] = open_engine(trt, FakeEngine(scratch), stream)
        pipe._share_scratch()
    contexts = [c for loaded in pipe.engines.values() for c in loaded.contexts]
    assert [c.profile for c in contexts] == [0, 1, 2, 0, 1, 2] and {c.strategy for c in contexts} == {"USER_MANAGED"}
    assert {c.memory for c in contexts} == {(pipe.scratch.ptr, 700)}
    assert pipe.device_memory() == {"device_scratch_mb": 700 / 1e6, "device_buffers_mb": 0.0}
    pipe.engines["vit"] = open_engine(trt, FakeEngine([900]), stream)  # plain_vit() loads a larger one later
    pipe._share_scratch()
    assert {c.memory for loaded in pipe.engines.values() for c in loaded.contexts} == {(pipe.scratch.ptr, 900)}


# ---- the TensorRT boundary -------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [AttributeError, RuntimeError, "PolygraphyException"])
def test_what_tensorrt_or_polygraphy_raise_becomes_one_line_naming_both_versions(error):
    from polygraphy.exception import PolygraphyException

    error = PolygraphyException if error == "PolygraphyException" else error
    with pytest.raises(MsvitEdgeError) as err, tensorrt_errors("TensorRT could not build the encoder engine"):
        raise error("'tensorrt.IBuilderConfig' object has no attribute 'int8_calibrator'\n  more detail")
    message = str(err.value)
    assert message.startswith(f"TensorRT could not build the encoder engine: {error.__name__}: 'tensorrt.IBuilderC")
    assert f"(TensorRT not found, Polygraphy {package_version('polygraphy')})" in message and "\n" not in message
    assert isinstance(err.value.__cause__, error)  # --debug still shows where it came from


def test_a_polygraphy_below_the_floor_is_named_with_the_upgrade(monkeypatch):
    import msvit_edge.engines.trt_boundary as trt_boundary

    monkeypatch.setattr(trt_boundary, "package_version", lambda dist: "0.50.1")
    assert versions().endswith(
        "Polygraphy 0.50.1; msvit-edge needs Polygraphy >= 0.53.4: pip install -U 'polygraphy>=0.53.4'"
    )
    monkeypatch.setattr(trt_boundary, "package_version", lambda dist: "0.53.4")
    assert versions() == "TensorRT not found, Polygraphy 0.53.4"


def fake_tensorrt(without: str = "") -> object:
    """A TensorRT 11-like ``tensorrt`` module with only what ``capabilities`` probes, less the attribute ``without``."""
    from types import SimpleNamespace

    names = {
        "__version__": "11.4.0",
        "NetworkDefinitionCreationFlag": SimpleNamespace(STRONGLY_TYPED=1),
        "BuilderFlag": SimpleNamespace(),
        "ICudaEngine": SimpleNamespace(device_memory_size_v2=0),
    }
    return SimpleNamespace(**{k: v for k, v in names.items() if k != without})


@pytest.mark.skipif(not TRT_ABSENT, reason="TensorRT is installed here")
def test_the_build_turns_tensorrt_and_polygraphy_failures_into_one_line(bundle, tmp_path, monkeypatch):
    import msvit_edge.engines.trt_build as trt_build

    graphs = {stage: bundle.graph(stage) for stage in ("tokenizer", "encoder", "encoder_masked")}
    monkeypatch.setattr(trt_build, "import_tensorrt", lambda: fake_tensorrt("NetworkDefinitionCreationFlag"))
    with pytest.raises(MsvitEdgeError, match=r"^TensorRT's capabilities could not be read: AttributeError: .*\(Te"):
        build_engines(graphs, bundle, tmp_path, "fp32")
    monkeypatch.setattr(trt_build, "import_tensorrt", fake_tensorrt)  # Polygraphy then imports the real one, and fails
    with pytest.raises(MsvitEdgeError) as err:
        build_engines(graphs, bundle, tmp_path, "fp32")
    assert str(err.value).startswith("TensorRT could not build the tokenizer engine from tokenizer.onnx: Polygraphy")
    assert "'tensorrt' is required but could not be imported" in str(err.value) and "\n" not in str(err.value)


# ---- the timing cache and build --backend tensorrt up to the TensorRT calls ---------------------------------------


def test_the_timing_cache_is_shared_in_the_bundle_only_where_the_engine_folder_is_and_it_can_be_written(
    tmp_path, monkeypatch
):
    shared, tmp = tmp_path / "bundle" / "engines", tmp_path / "tmp"
    tmp.mkdir()
    name = "tensorrt-10.3.0-orin.timing.cache"
    assert timing_cache_file(shared, shared / "tensorrt-fp16-orin", tmp, "10.3.0-orin") == shared / name
    assert shared.is_dir()  # created: Polygraphy writes the cache but makes no folder
    elsewhere = tmp_path / "out"
    assert timing_cache_file(shared, elsewhere, tmp, "10.3.0-orin") == tmp / name
    elsewhere.mkdir()
    (elsewhere / name).write_bytes(b"timings")  # a previous build at --out: its timings seed this one
    assert timing_cache_file(shared, elsewhere, tmp, "10.3.0-orin").read_bytes() == b"timings"
    monkeypatch.setattr("os.access", lambda path, mode: False)  # a read-only bundle
    assert timing_cache_file(shared, shared / "tensorrt-fp16-orin", tmp, "10.3.0-orin") == tmp / name
    assert timing_cache_file(shared, shared / "x", tmp, "11.4.0-h200") == tmp / "tensorrt-11.4.0-h200.timing.cache"


class ReachedTensorRT(Exception):
    """Raised by the stand-in for ``build_engines``: the build got to its TensorRT calls."""


@pytest.fixture
def stand_in(monkeypatch) -> list[dict]:
    """``build --backend tensorrt`` without TensorRT: ``build_engines``, the function that imports TensorRT,
    records its arguments and stops the build; ``_require_backend`` (is TensorRT installed?) lets it start."""
    import msvit_edge.build

    calls = []

    def build_engines(graphs, shapes, out_dir, precision, workspace_gb, opt_level, timing_cache):
        calls.append({"shapes": EngineShapes.from_bundle(shapes), "out_dir": out_dir, "timing_cache": timing_cache})
        raise ReachedTensorRT

    monkeypatch.setattr(msvit_edge.build, "build_engines", build_engines)  # the name build calls it by
    monkeypatch.setattr(msvit_edge.build, "_require_backend", lambda backend: None)
    return calls


def build_tensorrt(bundle, out: Path) -> None:
    from msvit_edge.build import BuildConfig, build

    with pytest.raises(ReachedTensorRT):
        build(BuildConfig(bundle=str(bundle.path), backend="tensorrt", out=str(out)))


def test_build_with_out_in_a_new_folder_reaches_tensorrt(bundle, tmp_path, stand_in):
    build_tensorrt(bundle, tmp_path / "new" / "folder" / "engines")
    (call,) = stand_in
    assert call["timing_cache"].parent == call["out_dir"] and call["out_dir"].parent == tmp_path / "new" / "folder"
    assert call["timing_cache"].name.endswith(f"-{this_device()}.timing.cache")


@pytest.fixture
def read_only_bundle(bundle, copy_bundle, monkeypatch):
    """A copy of the bundle that cannot be written: its folders read-only and, since root writes anyway, denied by
    the permission check the build relies on (``os.access``)."""
    copy = copy_bundle(bundle)
    root = copy.path.resolve()
    real_access = os.access
    monkeypatch.setattr(
        "os.access", lambda p, mode, **kw: not Path(p).resolve().is_relative_to(root) and real_access(p, mode, **kw)
    )
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    yield copy
    for folder in folders:
        folder.chmod(0o755)


def test_build_of_a_read_only_bundle_reaches_tensorrt_with_the_cache_in_the_engine_folder(
    read_only_bundle, tmp_path, stand_in
):
    build_tensorrt(read_only_bundle, tmp_path / "engines")
    (call,) = stand_in
    assert call["timing_cache"].parent == call["out_dir"]
    assert not (read_only_bundle.path / "engines").exists()


@pytest.fixture(scope="module")
def batch8_bundle(workdir, tmp_path_factory):
    """The tiny model exported with ``--max-batch 8``."""
    from msvit_edge.export import ExportConfig, export

    out = tmp_path_factory.mktemp("batch8") / "bundle"
    cfg = ExportConfig(str(out), str(workdir / "tiny.safetensors"), buckets=2, calib=str(workdir / "fmnist.npz"))
    cfg = dataclasses.replace(cfg, calib_images=100, val_images=16, max_batch=8)
    return export(cfg)


def test_build_of_a_bundle_exported_with_max_batch_8_reaches_tensorrt_with_profiles_up_to_8(
    batch8_bundle, tmp_path, stand_in
):
    build_tensorrt(batch8_bundle, tmp_path / "engines")
    (call,) = stand_in
    for stage in ("tokenizer", "encoder", "encoder_masked"):
        assert {max(s[2][0] for s in profile.values()) for profile in call["shapes"].profiles(stage)} == {8}


# ---- torch-tensorrt ----------------------------------------------------------------------------------------------


def test_torch_tensorrt_compiles_one_input_range_per_bucket_traced_above_batch_1():
    from msvit_edge.engines.torch_tensorrt import bucket_inputs, vit_inputs

    inputs = bucket_inputs(PLAN, 32)
    assert len(inputs) == len(PLAN.buckets)
    assert inputs[0]["tokens"] == ((1, 17, 32), (2, 29, 32), (32, 29, 32))
    assert inputs[1]["mask"] == ((1, 30), (2, 65), (32, 65))
    one = BucketPlan(PLAN.buckets, PLAN.histogram, 0.1, (1, 1, 1))
    assert bucket_inputs(one, 32)[0]["tokens"][1] == (1, 29, 32)  # a batch range of 1 stays 1
    assert vit_inputs(PLAN, (3, 32, 32)) == {"images": ((1, 3, 32, 32), (2, 3, 32, 32), (32, 3, 32, 32))}


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None, reason="torch-tensorrt is installed")
def test_without_torch_tensorrt_its_backend_says_how_to_install_it():
    from msvit_edge.engines.torch_tensorrt import import_torch_tensorrt

    hint = r"pip install '\.\[torch-tensorrt\]' in the msvit-edge clone on x86 with CUDA"
    with pytest.raises(MsvitEdgeError, match=hint):
        import_torch_tensorrt()


def test_doctor_and_readme_offer_what_torch_tensorrt_and_build_do():
    """torch-tensorrt compiles FP32 only; ``build`` makes FP16/INT8 graphs with ModelOpt and PyTorch, for ONNX Runtime
    too: doctor offers no more on a GPU machine with everything else installed, and the README's table agrees."""
    from msvit_edge.machine.doctor import PRECISIONS, diagnose
    from msvit_edge.machine.environment import environment

    env = environment()
    env |= {"packages": dict.fromkeys(env["packages"], "1.0"), "onnxruntime_providers": ["CPUExecutionProvider"]}
    env |= {"tensorrt": "10.3.0", "torch_cuda": "12.6", "gpus": [{"name": "GPU", "driver_version": "1"}]}
    report = diagnose(env)
    assert [report.capability("torch-tensorrt", p).status for p in PRECISIONS] == ["yes", "no", "no"]
    assert "torch-tensorrt in FP32 only" in report.capability("torch-tensorrt", "int8").reason
    no_modelopt = diagnose(env | {"packages": env["packages"] | {"nvidia-modelopt": None}})
    assert [no_modelopt.capability(b, "int8").status for b in ("onnxruntime", "tensorrt")] == ["graphs", "graphs"]
    readme = (Path(__file__).parents[1] / "README.md").read_text().splitlines()
    row = next(line for line in readme if line.startswith("| torch-tensorrt"))
    assert [cell.strip() for cell in row.split("|")[2:5]] == ["yes", "", ""]


@pytest.mark.gpu
def test_torch_tensorrt_matches_the_torch_pipeline():
    pytest.importorskip("torch_tensorrt", reason="needs torch-tensorrt (the torch-tensorrt extra)")
    import torch

    from msvit_edge.bundle.buckets import plan_buckets
    from msvit_edge.engines.pytorch import TorchPipeline
    from msvit_edge.engines.torch_tensorrt import TorchTensorRTPipeline
    from msvit_edge.model.config import MSViTConfig, ViTConfig
    from msvit_edge.model.msvit import MSViT

    torch.manual_seed(0)
    vit = ViTConfig(img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2, num_heads=4)
    model = MSViT(MSViTConfig(vit)).eval()
    images = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        counts = model.tokenize(torch.from_numpy(images), threshold=0.5).counts.numpy()
    plan = plan_buckets(counts, 2, lambda n: n * n, 17, 65, batch=(1, 1, 16))
    eager = TorchPipeline(model, plan, device="cuda")
    with TorchTensorRTPipeline(model, plan) as compiled:
        for size in (1, 16):
            for start in range(0, len(images), size):
                got, want = compiled(images[start : start + size], 0.5), eager(images[start : start + size], 0.5)
                np.testing.assert_array_equal(got.counts, want.counts)
                np.testing.assert_allclose(got.logits, want.logits, atol=1e-3, rtol=1e-3)
        for size in (1, 16):  # the plain ViT, compiled over the plan's batch range
            got, want = compiled.plain_vit()(images[:size]), eager.plain_vit()(images[:size])
            np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)


# ---- real engines (TensorRT and a GPU) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A tiny MSViT exported with 2 buckets; the gate is centred between distinct logits so counts vary and no
    region sits on the threshold, where the last bits of TensorRT vs ONNX Runtime would decide."""
    import torch

    from msvit_edge.bundle.preprocess import preprocess
    from msvit_edge.export import ExportConfig, export
    from msvit_edge.model.checkpoint import save_checkpoint
    from msvit_edge.model.config import MSViTConfig, ViTConfig
    from msvit_edge.model.msvit import MSViT

    root = tmp_path_factory.mktemp("trt")
    vit = ViTConfig(
        img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2, num_heads=4, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)  # blocky images: some regions flat, some busy
    images = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    busy = rng.random((200, 32, 32, 1)) < 0.3
    images = np.where(busy, rng.integers(0, 256, images.shape, dtype=np.uint8), images).astype(np.uint8)
    np.savez(root / "calib.npz", images=images, labels=rng.integers(0, 10, 200))
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(vit))
    with torch.no_grad():
        logits = model.gate(torch.from_numpy(preprocess(images, vit.mean, vit.std)))
        distinct = torch.unique(logits)
        k = int(torch.searchsorted(distinct, logits.quantile(0.6)))
        model.gate.mlp[-1].bias -= (distinct[k - 1] + distinct[k]) / 2
    save_checkpoint(model, root / "tiny.safetensors")
    calib = str(root / "calib.npz")
    cfg = ExportConfig(str(root / "bundle"), str(root / "tiny.safetensors"), buckets=2, calib=calib, calib_images=200)
    cfg = dataclasses.replace(cfg, val_images=48, max_batch=32)
    return export(cfg)


def engine_dir(bundle, out: Path, facts: dict, precision: str = "fp32"):
    """An engine directory around built plans (what ``msvit_edge.build`` writes, reduced to what readers need)."""
    from msvit_edge.bundle.engine_folder import KIND, SCHEMA_VERSION, EngineDir, bundle_id, relative_to

    manifest = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "backend": "tensorrt",
        "backend_version": facts["tensorrt_version"],
        "precision": precision,
        "device": {"slug": "test"},
        "bundle": {"path": relative_to(bundle.path, out), "sha256": bundle_id(bundle)},
        "graphs": {stage: facts["engines"][stage]["file"] for stage in facts["engines"]},
        "buckets": bundle.plan.to_dict(),
        "files": {f: sha256(out / f) for f in sorted({e["file"] for e in facts["engines"].values()})},
        "tensorrt": facts,
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return EngineDir(out)


@pytest.fixture(scope="module")
def built(tiny_bundle, tmp_path_factory):
    from msvit_edge.engines.tensorrt import build_engines

    out = tmp_path_factory.mktemp("engines")
    graphs = {stage: tiny_bundle.graph(stage) for stage in ("tokenizer", "encoder", "encoder_masked", "vit")}
    facts = build_engines(graphs, tiny_bundle, out, "fp32", timing_cache=out.parent / "timing.cache")
    return engine_dir(tiny_bundle, out, facts), facts


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_the_encoder_engines_have_one_profile_per_bucket_and_report_memory(built, tiny_bundle):
    engine, facts = built
    plan = tiny_bundle.plan
    for stage in ("encoder", "encoder_masked"):
        got = facts["engines"][stage]
        (b_min, b_opt, b_max) = plan.batch
        assert [p["tokens"] for p in got["profiles"]] == [
            [[b_min, b.min, 32], [b_opt, b.opt, 32], [b_max, b.max, 32]] for b in plan.buckets
        ]
        assert len(got["device_memory"]["per_profile"]) == len(plan.buckets) and got["device_memory"]["max"] > 0
        assert got["layers"]["profiles"][0]["layers"] > 0 and got["precision"]["requested"] == "fp32"
        assert len(got["layers"]["profiles"]) in (1, len(plan.buckets))  # listed once, or once per profile
    assert len(facts["engines"]["tokenizer"]["profiles"]) == 1
    assert facts["engines"]["vit"]["profiles"] == [{"images": [[1, 3, 32, 32], [1, 3, 32, 32], [32, 3, 32, 32]]}]
    assert facts["skipped"] == {} and facts["engines"]["vit"]["precision"]["requested"] == "fp32"
    assert (engine.path.parent / "timing.cache").stat().st_size > 0
    assert sorted(facts["trtexec"]) == (["10", "11"] if facts["strongly_typed"] else ["10"])


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("batching", ["pad", "split"])
@pytest.mark.parametrize("pad_to_bucket", [False, True])
def test_tensorrt_matches_onnxruntime_at_batch_1_and_batched(built, tiny_bundle, batching, pad_to_bucket):
    from msvit_edge.engines.ort import OnnxRuntimePipeline
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, _ = built
    ref = tiny_bundle.reference()
    images = tiny_bundle.preprocess(ref.images)
    options = {"pad_to_bucket": pad_to_bucket, "batching": batching}
    with TensorRTPipeline(engine, **options) as trt_pipe, OnnxRuntimePipeline(tiny_bundle, **options) as ort_pipe:
        for size in (1, 16):
            for start in range(0, len(images), size):
                batch = images[start : start + size]
                got, want = trt_pipe(batch, tiny_bundle.threshold), ort_pipe(batch, tiny_bundle.threshold)
                np.testing.assert_array_equal(got.counts, want.counts)
                np.testing.assert_allclose(got.probs, want.probs, atol=1e-5)
                np.testing.assert_allclose(got.logits, want.logits, atol=1e-4, rtol=1e-4)
                assert [c.bucket for c in got.calls] == [c.bucket for c in want.calls]
    assert len({int(c) for c in ref.counts}) > 1 and len({tiny_bundle.plan.index(int(c)) for c in ref.counts}) == 2


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_the_plain_vit_engine_matches_onnxruntimes_vit_graph(built, tiny_bundle):
    from msvit_edge.engines.ort import OnnxRuntimePipeline
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, _ = built
    images = tiny_bundle.preprocess(tiny_bundle.reference().images)
    with TensorRTPipeline(engine) as trt_pipe, OnnxRuntimePipeline(tiny_bundle) as ort_pipe:
        got, want = trt_pipe.plain_vit(), ort_pipe.plain_vit()
        for size in (1, 16, 32):
            np.testing.assert_allclose(got(images[:size]), want(images[:size]), atol=1e-4, rtol=1e-4)
        msvit = trt_pipe(images[:4], tiny_bundle.threshold)  # the MSViT engines still run beside it
    assert msvit.logits.shape == (4, 10)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_the_pipeline_holds_one_scratch_buffer_of_the_largest_profiles_size(built):
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, facts = built
    need = {stage: max(e["device_memory"]["per_profile"]) for stage, e in facts["engines"].items()}
    with TensorRTPipeline(engine) as pipe:
        assert pipe.device_memory()["device_scratch_mb"] == max(need[s] for s in GRAPH_STAGES) / 1e6
        pipe.plain_vit()
        assert pipe.device_memory()["device_scratch_mb"] == max(need.values()) / 1e6


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_the_engine_directory_passes_the_shared_validation(built, tiny_bundle):
    from msvit_edge.bundle import validation
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, _ = built
    ref = engine.reference()
    with TensorRTPipeline(engine) as pipe:
        report = validation.validate(pipe, ref, engine.preprocess(ref.images), engine.threshold, batch=16)
    validation.check(report, validation.TOLERANCES["fp32"], "tensorrt fp32")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_a_batch_beyond_the_profiles_is_a_clear_error(built, tiny_bundle):
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, _ = built
    images = tiny_bundle.preprocess(tiny_bundle.reference().images[:1])
    with TensorRTPipeline(engine) as pipe, pytest.raises(MsvitEdgeError, match="outside every optimisation profile"):
        pipe(np.repeat(images, 33, axis=0), tiny_bundle.threshold)  # the plan's batch range ends at 32


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("trtexec") is None, reason="needs trtexec on PATH")
def test_the_recorded_trtexec_script_builds_engines_that_match_the_python_build(built):
    from msvit_edge.engines.tensorrt import TensorRTPipeline

    engine, facts = built
    # a sibling folder keeps the script's relative paths (graphs in the bundle, the timing cache) valid
    sibling = engine.path.with_name(engine.path.name + "-trtexec")
    shutil.copytree(engine.path, sibling)
    for plan in sibling.glob("*.plan"):
        plan.unlink()
    script = facts["trtexec"][facts["family"]]
    result = subprocess.run(["sh", script], capture_output=True, text=True, cwd=sibling, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    images = engine.preprocess(engine.reference().images[:16])
    with TensorRTPipeline(sibling) as cli_built, TensorRTPipeline(engine) as py_built:
        got, want = cli_built(images, engine.threshold), py_built(images, engine.threshold)
    np.testing.assert_array_equal(got.counts, want.counts)
    np.testing.assert_allclose(got.logits, want.logits, atol=1e-4, rtol=1e-4)
