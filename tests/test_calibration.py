"""Precision passes for real: ModelOpt AutoCast FP16, ModelOpt and ONNX Runtime INT8 on a tiny exported MSViT."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.validation import TOLERANCES
from msvit_edge.calibration import (
    MIN_IMAGES,
    cache_key,
    check_images,
    encoder_feeds,
    int8,
    precision,
    precision_graphs,
    qdq,
    settings_for,
)
from msvit_edge.calibration.compare import compare_outputs, run_graphs
from msvit_edge.calibration.images import load_images
from msvit_edge.calibration.qdq import qdq_types
from msvit_edge.errors import MsvitEdgeError

CALIB = MIN_IMAGES + 32
DEPTH = 2  # the shared tiny model's (tests/conftest.py)


@pytest.fixture(scope="module")
def bundle(bundle, copy_bundle) -> Bundle:
    """This module's copy of the shared tiny bundle (tests/conftest.py)."""
    return copy_bundle(bundle)


@pytest.fixture(scope="module")
def images(bundle, workdir) -> dict[str, np.ndarray]:
    """Calibration images and disjoint held-out images with labels, from the data the bundle was planned on."""
    data = str(workdir / "fmnist.npz")
    calib, _ = load_images(bundle, data, n=CALIB)
    held, labels = load_images(bundle, data, n=400 - CALIB, offset=CALIB)
    return {"calib": calib, "held": held, "labels": labels}


@pytest.fixture(scope="module")
def fp32(bundle, images):
    return run_graphs(bundle, {}, images["held"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def op_inputs(model: onnx.ModelProto, op: str) -> list[list[str]]:
    """For each node of type ``op``: the op types producing its inputs ("" for a graph input or initializer)."""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    return [[producer.get(i, "") for i in n.input] for n in model.graph.node if n.op_type == op]


def io_types(model: onnx.ModelProto) -> set[int]:
    return {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output] if v.name != "mask"}


def test_feeds_hold_each_image_at_its_own_count_and_cover_the_plan(bundle, images, caplog):
    with caplog.at_level(logging.INFO, logger="msvit_edge"):
        feeds = encoder_feeds(bundle, images["calib"])
    lines = caplog.messages
    assert sum(len(f["tokens"]) for f in feeds.encoder) == CALIB == sum(feeds.coverage)
    for f in feeds.encoder:  # one exact count per unmasked feed: no padding row reaches the mask-free graph
        assert f.keys() == {"tokens"} and f["tokens"].shape[1] in set(feeds.counts.tolist())
    plan = bundle.plan
    for f in feeds.encoder_masked:
        counts = f["mask"].sum(1)
        bucket = plan.buckets[plan.index(int(counts.max()))]
        assert f["tokens"].shape[1] == bucket.max and counts.min() >= bucket.min
    assert len(set(feeds.counts.tolist())) > 3 and all(n > 0 for n in feeds.coverage)
    assert lines == [lines[0]] and lines[0].startswith(f"calibration: {CALIB} images over 3 buckets")


def test_a_calibration_that_misses_buckets_warns_and_names_them(bundle, images, tmp_path, caplog):
    shutil.copytree(bundle.path, tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["threshold"] = 1.0  # all coarse: every image has the minimum count, 17
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO, logger="msvit_edge"):
        feeds = encoder_feeds(Bundle(tmp_path / "b"), images["calib"])
    assert feeds.coverage == [CALIB, 0, 0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    b = bundle.plan.buckets
    assert all(f"bucket {i} (tokens {b[i].min}..{b[i].max})" in w for i, w in zip((1, 2), warnings, strict=True))
    assert all("misses" in w for w in warnings) and len(warnings) == 2


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: x[: MIN_IMAGES - 1], f"{MIN_IMAGES - 1} calibration images are too few"),
        (lambda x: x[:, :28, :28], "are 28x28 with 3 channels; the model takes 32x32 with 3"),
        (lambda x: x[..., :1], "with 1 channels; the model takes 32x32 with 3"),
        (lambda x: x.astype(np.float32), "images must be uint8 [B, H, W, C], got float32"),
    ],
)
def test_unusable_calibration_images_are_refused_before_any_work(
    bundle, images, tmp_path, monkeypatch, change, message
):
    bad = change(images["calib"])
    with pytest.raises(MsvitEdgeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_images(bundle, bad)
    monkeypatch.setattr(precision, "encoder_feeds", lambda *a, **k: pytest.fail("the tokenizer ran"))
    with pytest.raises(MsvitEdgeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        precision_graphs(bundle, "int8", "onnxruntime", bad, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_int8_without_images_or_with_a_foreign_method_is_refused(bundle, tmp_path):
    with pytest.raises(MsvitEdgeError, match="INT8 needs calibration images"):
        precision_graphs(bundle, "int8", "tensorrt", None, tmp_path)
    with pytest.raises(MsvitEdgeError, match="ModelOpt's calibration methods are entropy, max, not 'minmax'"):
        settings_for("int8", "tensorrt", "minmax")
    with pytest.raises(MsvitEdgeError, match="a calibration method applies to int8 only, not fp16"):
        settings_for("fp16", "tensorrt", "max")
    with pytest.raises(MsvitEdgeError, match="precision must be one of fp32, fp16, int8"):
        settings_for("int4", "tensorrt")


def test_missing_modelopt_names_the_package_to_install(bundle, images, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "modelopt" else real(name, *a))
    hint = r"needs NVIDIA ModelOpt \(nvidia-modelopt\): pip install '\.\[quantize\]'"
    with pytest.raises(MsvitEdgeError, match=hint):
        precision_graphs(bundle, "int8", "tensorrt", images["calib"], tmp_path, cache_dir=tmp_path / "c")
    with pytest.raises(MsvitEdgeError, match=r"FP16 conversion needs NVIDIA ModelOpt"):
        precision_graphs(bundle, "fp16", "tensorrt", None, tmp_path, cache_dir=tmp_path / "c")


def test_fp32_is_the_bundles_own_graphs(bundle, tmp_path):
    made = precision_graphs(bundle, "fp32", "tensorrt", None, tmp_path / "out")
    assert made.graphs == {n: bundle.graph(n) for n in ("tokenizer", "encoder", "encoder_masked")}
    assert made.facts == {"precision": "fp32"} and not (tmp_path / "out").exists()


def test_fp16_keeps_layernorm_and_io_fp32_and_agrees(bundle, images, fp32, cache, tmp_path):
    graphs, facts, _ = precision_graphs(bundle, "fp16", "tensorrt", None, tmp_path, cache_dir=cache)
    assert graphs["tokenizer"] == bundle.graph("tokenizer") and facts["keep_fp32"] == ["LayerNormalization"]
    for name in ("encoder", "encoder_masked"):
        model = onnx.shape_inference.infer_shapes(onnx.load(graphs[name]))
        types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
        norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
        assert len(norms) == 2 * DEPTH + 1
        assert all(types[n.input[0]] == types[n.output[0]] == onnx.TensorProto.FLOAT for n in norms)
        assert io_types(model) == {onnx.TensorProto.FLOAT}
        weights = [i for i in model.graph.initializer if len(i.dims) == 2]
        assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)  # the rest did go FP16
    report = compare_outputs(run_graphs(bundle, graphs, images["held"]), fp32, images["labels"])
    assert report["counts_identical"] and report["top1_agreement"] >= TOLERANCES["fp16"].min_agreement, report


# ids avoid the word "tensorrt", which conftest takes as the marker for tests that need TensorRT itself
@pytest.mark.parametrize("backend", ["tensorrt", "onnxruntime"], ids=["fp16-rest-int8-qdq", "fp32-rest-uint8-qdq"])
def test_int8_quantizes_every_weighted_matmul_and_keeps_counts_and_top1(bundle, images, fp32, cache, tmp_path, backend):
    graphs, facts, folder = precision_graphs(bundle, "int8", backend, images["calib"], tmp_path, cache_dir=cache)
    assert folder.parent == tmp_path and folder.name == f"{backend}-int8-{facts['cache_key'][:12]}"
    assert facts["quantizer"] == "modelopt" and facts["method"] == int8.DEFAULT_METHOD
    assert facts["calibration"]["images"] == CALIB and facts["calibration"]["missed_buckets"] == []
    assert [c["images"] for c in facts["calibration"]["coverage"]] == encoder_feeds(bundle, images["calib"]).coverage
    for name in ("encoder", "encoder_masked"):
        model = onnx.load(graphs[name])
        matmuls = op_inputs(model, "MatMul")
        assert len(matmuls) == 6 * DEPTH and io_types(model) == {onnx.TensorProto.FLOAT}
        # ModelOpt leaves attention's two batch-matmuls unquantized (disable_mha_qdq); every MatMul with a weight
        # is Q/DQ in both graphs
        assert sum(m == ["DequantizeLinear"] * 2 for m in matmuls) == 4 * DEPTH, matmuls
        halves = {i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer}
        assert (True in halves) == (backend == "tensorrt")  # TensorRT's graph has its unquantized rest in FP16
        # TensorRT takes signed Q/DQ only; ONNX Runtime's graphs are unsigned, whose kernels cannot saturate
        assert set(qdq_types(graphs[name])) == {"int8" if backend == "tensorrt" else "uint8"}
    for batch in (32, 1):  # batched runs mostly the masked encoder, batch 1 always the unmasked one
        outputs = run_graphs(bundle, graphs, images["held"], batch=batch)
        report = compare_outputs(outputs, fp32, images["labels"])
        assert report["counts_identical"] and report["top1_agreement"] >= TOLERANCES["int8"].min_agreement, report


def test_onnxruntimes_int8_kernels_compute_what_the_qdq_graph_says(bundle, images, cache, tmp_path):
    """The fused integer kernels ONNX Runtime runs give the logits of the same graph run as plain Q/DQ operators,
    on every x86 CPU. With int8 weights they did not on CPUs without VNNI (VPMADDUBSW saturates: see
    calibration.qdq); uint8 Q/DQ, whose U8U8 kernels widen first, cannot saturate.

    Exact equality is not a property of any CPU: integer and float accumulation round differently, and an
    activation that lands on a rounding boundary is requantized one step apart (seen on an AVX-512 VNNI CPU: 1 image
    of 240, 0.26% of the logits' scale). Saturation is systematic instead (5 of 48 images flipped top-1 on the AVX2
    CPU): so at most 1% of the images may differ beyond float rounding, and none by more than 1% of the scale."""
    import onnxruntime as ort

    made = precision_graphs(bundle, "int8", "onnxruntime", images["calib"], tmp_path, cache_dir=cache)
    feeds = encoder_feeds(bundle, images["held"])
    for name in ("encoder", "encoder_masked"):
        runs = []
        for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
            options = ort.SessionOptions()
            options.graph_optimization_level = level
            sess = ort.InferenceSession(str(made.graphs[name]), options, providers=["CPUExecutionProvider"])
            runs.append(np.concatenate([sess.run(["logits"], feed)[0] for feed in feeds.for_graph(name)]))
        fused, plain = runs
        per_image, scale = np.abs(fused - plain).max(1), np.abs(plain).max()
        assert (per_image > 1e-4 * scale).mean() <= 0.01 and per_image.max() <= 0.01 * scale, (name, per_image.max())


def test_to_unsigned_keeps_every_dequantized_value(tmp_path):
    """uint8 with the zero point moved by 128 dequantizes to the same values as int8, clipping range included."""
    from onnx import TensorProto, helper, numpy_helper

    x = np.linspace(-3, 3, 101, dtype=np.float32)  # past both ends of the int8 range at scale 0.02
    weight = np.arange(-128, 128, dtype=np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        helper.make_node("DequantizeLinear", ["w", "s", "z"], ["v"]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((np.float32(0.02), "s"), (np.int8(-3), "z"), (weight, "w"))]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "v")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [101])], outputs, inits
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), tmp_path / "g.onnx")
    import onnxruntime as ort

    def run() -> list[np.ndarray]:
        return ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    before = run()
    assert qdq.to_unsigned(tmp_path / "g.onnx") == 2 and qdq_types(tmp_path / "g.onnx") == {"uint8": 3}
    after = run()
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    assert np.isclose(after[0].min(), (-128 + 3) * 0.02) and np.isclose(after[0].max(), (127 + 3) * 0.02)


def weight_qdq_graph(path: Path, zero_type: type) -> dict[str, np.ndarray]:
    """x @ DQ(Q(W)) with a per-column scale, and DQ(Q(V)) per tensor; W holds ties (k + 0.5) * scale and values past
    the type's range at both ends. Returns the feed."""
    from onnx import TensorProto, helper, numpy_helper

    scale = np.array([0.02, 0.05, 0.1], np.float32)
    ties = (np.arange(-6, 6, dtype=np.float32)[:, None] + 0.5) * scale  # exactly halfway between two levels
    w = np.concatenate([ties, 300 * scale[None], -300 * scale[None], np.linspace(-1, 1, 12, dtype=np.float32)[:, None]
                        * scale / 0.01 * np.ones((1, 3), np.float32)])  # fmt: skip
    zero = np.array([3, -5, 0] if zero_type is np.int8 else [131, 120, 128], zero_type)
    v = np.linspace(-4, 4, 33, dtype=np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"], axis=1),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"], axis=1),
        helper.make_node("MatMul", ["x", "wd"], ["y"]),
        helper.make_node("QuantizeLinear", ["v", "t", "u"], ["vq"]),
        helper.make_node("DequantizeLinear", ["vq", "t", "u"], ["vd"]),
    ]
    arrays = {"w": w, "s": scale, "z": zero, "v": v, "t": np.float32(0.03), "u": zero_type(zero[0])}
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in arrays.items()]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "vd")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, len(w)])
    graph = helper.make_graph(nodes, "g", [x], outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    return {"x": np.random.default_rng(0).standard_normal((4, len(w))).astype(np.float32)}


def ort_runs(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs with ONNX Runtime's graph optimisations on (fused kernels) and off (plain operators)."""
    import onnxruntime as ort

    runs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        runs += ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feed)
    return runs


@pytest.mark.parametrize("zero_type", [np.int8, np.uint8])
def test_folded_weights_are_what_quantizelinear_computed(tmp_path, zero_type):
    """Weights stored quantized give bit for bit the outputs of the Q/DQ graph: ties, saturation, per axis."""
    feed = weight_qdq_graph(tmp_path / "g.onnx", zero_type)
    before = ort_runs(tmp_path / "g.onnx", feed)
    model = onnx.load(tmp_path / "g.onnx")
    assert sorted(qdq.fold_weights(model)) == ["vq", "wq"]
    onnx.save(model, tmp_path / "g.onnx")
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "MatMul", "DequantizeLinear"]
    assert {i.name for i in model.graph.initializer} == {"wq", "s", "z", "vq", "t", "u"}
    after = ort_runs(tmp_path / "g.onnx", feed)
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_onnxruntime_int8_graphs_store_weights_in_8_bits_and_compute_the_same(tmp_path):
    """A ModelOpt graph (tests/data/previous: FP32 weights behind QuantizeLinear) rewritten by to_unsigned: every
    weighted MatMul reads 8-bit weights, the file is smaller than the FP32 graph (it was larger), the logits stay
    identical."""
    made = Path(__file__).parent / "data" / "previous" / "bundle" / "precision" / "onnxruntime-int8-8b23e9d7200c"
    rng = np.random.default_rng(0)
    for name in ("encoder", "encoder_masked"):
        before, after = made / f"{name}.int8.onnx", tmp_path / f"{name}.int8.onnx"
        shutil.copyfile(before, after)
        model = onnx.load(after)
        feed = {"tokens": rng.standard_normal((3, 9, model.graph.input[0].type.tensor_type.shape.dim[2].dim_value))}
        feed["tokens"] = feed["tokens"].astype(np.float32)
        if name == "encoder_masked":
            feed["mask"] = np.arange(9)[None] < np.array([[9], [5], [1]])
        assert qdq.to_unsigned(after) > 0
        inits = {i.name for i in onnx.load(after).graph.initializer}
        assert not [n for n in onnx.load(after).graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
        fp32 = made.parent.parent / f"{name}.onnx"
        assert after.stat().st_size < fp32.stat().st_size < before.stat().st_size
        assert all(np.array_equal(b, a) for b, a in zip(ort_runs(before, feed), ort_runs(after, feed), strict=True))


def test_a_second_identical_call_reuses_the_cache_and_any_change_misses_it(bundle, images, cache, tmp_path):
    args = (bundle, "int8", "onnxruntime", images["calib"])
    first = precision_graphs(*args, tmp_path / "a", cache_dir=cache)
    second = precision_graphs(*args, tmp_path / "b", cache_dir=cache)
    assert second.facts["cache"] == "hit"
    settings = settings_for("int8", "onnxruntime")
    assert second.facts["cache_key"] == first.facts["cache_key"] == cache_key(bundle, images["calib"], settings)
    assert second.graphs["encoder"].read_bytes() == first.graphs["encoder"].read_bytes()
    fresh = precision_graphs(*args, tmp_path / "c", cache_dir=tmp_path / "fresh")  # calibrated again: reproducible
    assert fresh.facts["cache"] == "miss" and fresh.folder.name == first.folder.name
    assert all(fresh.graphs[n].read_bytes() == first.graphs[n].read_bytes() for n in ("encoder", "encoder_masked"))
    changed = images["calib"].copy()
    changed[0, 0, 0, 0] ^= 1
    keys = {
        cache_key(bundle, changed, settings),
        cache_key(bundle, images["calib"][:-1], settings),
        cache_key(bundle, images["calib"], settings_for("int8", "onnxruntime", "max")),
        cache_key(bundle, images["calib"], settings_for("int8", "tensorrt")),
    }
    assert len(keys) == 4 and first.facts["cache_key"] not in keys


def test_a_failing_pass_is_one_line_that_names_its_log_and_writes_nothing(bundle, images, tmp_path):
    from msvit_edge.calibration.isolated import Job
    from msvit_edge.calibration.ort_int8 import quantize_ort

    (tmp_path / "broken.onnx").write_bytes(bundle.graph("encoder").read_bytes()[:1000])
    feeds = encoder_feeds(bundle, images["calib"]).encoder
    with pytest.raises(MsvitEdgeError, match=r"ort_int8 failed: .+ \(output: .+\.log\)$") as error:
        quantize_ort([Job(tmp_path / "broken.onnx", tmp_path / "out.onnx", feeds)])
    log = Path(str(error.value).rsplit("(output: ", 1)[1][:-1])
    assert "Traceback" in log.read_text()
    assert "\n" not in str(error.value) and sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx"]
    log.unlink()


NO_TORCH = """
import sys
sys.modules["torch"] = None  # a Jetson without PyTorch or ModelOpt
sys.modules["modelopt"] = None
import numpy as np
from msvit_edge.bundle import Bundle
from msvit_edge.calibration import encoder_feeds
feeds = encoder_feeds(Bundle(sys.argv[1]), np.load(sys.argv[2])["images"])
print(sum(feeds.coverage))
"""


def test_calibration_feeds_need_neither_pytorch_nor_modelopt(bundle, images, tmp_path):
    np.savez(tmp_path / "x.npz", images=images["calib"])
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(bundle.path), str(tmp_path / "x.npz")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(CALIB)]


def test_a_segmenters_graphs_never_share_a_classifiers_cache_key(bundle, seg_bundle, images):
    """The key hashes the bundle's graph files: a segmenter's (they take and return cells) differ from any
    classifier's, at every precision and backend, so neither's cache entry is served to the other."""
    for backend in ("onnxruntime", "tensorrt"):
        for kind, calib in (("fp16", None), ("int8", images["calib"])):
            settings = settings_for(kind, backend)
            assert cache_key(bundle, calib, settings) != cache_key(seg_bundle, calib, settings)
