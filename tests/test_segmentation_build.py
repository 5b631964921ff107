"""build for real on the tiny segmenter's bundle (issue 23): ONNX Runtime engines at fp32, fp16 and int8 (ModelOpt
AutoCast; ModelOpt Q/DQ calibrated on real scenes with the tokenizer's cell index), held per pixel and by mIoU, and
the INT8 graphs' cell index and decoder kept out of Q/DQ."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from msvit_edge.build import BuildConfig, build
from msvit_edge.bundle import dense, validation
from msvit_edge.bundle.engine_folder import EngineDir
from msvit_edge.calibration import encoder_feeds
from msvit_edge.calibration.compare import compare_outputs, run_graphs
from msvit_edge.calibration.images import load_images
from msvit_edge.calibration.int8 import cell_nodes
from msvit_edge.engines import open_pipeline

CALIB = 200  # scenes of the training split (the data the bundle was planned on), above MIN_IMAGES
DEPTH, CELLS, CLASSES = 2, 64, 11  # the tiny segmenter's (tests/conftest.py): 8x8 fine cells, the scenes' classes
INDEX_OPS = ("GatherElements", "Gather", "GatherND", "ScatterElements", "ScatterND", "Where")


@pytest.fixture(scope="module")
def bundle(seg_bundle, copy_bundle):
    """This module's own copy: it writes engines and precision graphs into it."""
    return copy_bundle(seg_bundle)


@pytest.fixture(scope="module")
def engines(bundle, tmp_path_factory) -> dict:
    """fp32 and fp16 engine folders by ``build``, int8 by the CLI (its printed lines too), all ONNX Runtime."""
    root = tmp_path_factory.mktemp("seg-engines")
    made = {p: build(BuildConfig(str(bundle.path), p, "onnxruntime", out=str(root / p))) for p in ("fp32", "fp16")}
    args = ["--bundle", str(bundle.path), "--precision", "int8", "--backend", "onnxruntime"]
    cmd = [sys.executable, "-m", "msvit_edge", "build", *args, "--calib-images", str(CALIB), "--out", str(root / "i")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return made | {"int8": EngineDir(root / "i"), "int8 output": result.stdout}


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def test_each_precision_passes_the_dense_tolerance_with_pytorchs_token_counts(engines, bundle):
    ref = bundle.reference()
    for precision in ("fp32", "fp16", "int8"):
        engine, tolerance = engines[precision], validation.tolerance(precision, is_dense=True)
        assert (
            engine.record.tolerance
            == validation.tolerance_dict(precision, True)
            != validation.tolerance_dict(precision)
        )
        report = engine.record.validation
        assert report["accuracy"]["metric"] == "miou"
        assert report["accuracy"]["reference"] - report["accuracy"]["engine"] <= tolerance.max_accuracy_drop + 1e-12
        for mode in validation.MODES:
            assert report[mode]["counts_equal"], (precision, mode)
            assert report[mode]["logits"]["pixel_agreement"] >= tolerance.min_agreement, (precision, report[mode])
        with open_pipeline(engine) as pipe:  # the engine's own token counts are PyTorch's, image by image
            for batch in (1, 24):
                out = pipe.run_batched(bundle.preprocess(ref.images), bundle.threshold, batch)
                np.testing.assert_array_equal(out.counts, ref.counts)
                assert out.logits.shape == (len(ref.images), CLASSES, 8, 8)
    assert engines["fp32"].record.validation["batch1"]["logits"]["max_abs"] <= 1e-4


def test_the_cli_prints_the_pixel_validation_and_the_dense_criterion(engines):
    out = engines["int8 output"]
    assert "validation: onnxruntime int8 vs PyTorch on 24 reference images (mIoU " in out
    assert "per-pixel agreement" in out and "top-1" not in out
    assert "validation passed: identical token counts, per-pixel agreement >= 98%, mIoU drop <= 1 points" in out
    assert engines["int8"].record.calibration["calibration"]["images"] == CALIB


def test_int8_keeps_the_cell_index_and_the_decoder_out_of_qdq(engines, bundle):
    """Every weighted MatMul of the blocks is Q/DQ, as in a classifier; nothing quantized reaches an index op, and
    the decoder's MatMul reads the gathered features and its weight unquantized (calibration.int8 says why)."""
    for name in ("encoder", "encoder_masked", "vit"):
        model = onnx.load(str(engines["int8"].graph(name)))
        made = producers(model)
        kinds = [[made[i].op_type if i in made else "" for i in n.input] for n in model.graph.node]
        matmuls = [k for n, k in zip(model.graph.node, kinds, strict=True) if n.op_type == "MatMul"]
        assert sum(k == ["DequantizeLinear"] * 2 for k in matmuls) == 4 * DEPTH, (name, matmuls)
        for node, k in zip(model.graph.node, kinds, strict=True):
            if node.op_type in INDEX_OPS:
                assert not {"QuantizeLinear", "DequantizeLinear"} & set(k), (name, node.name, k)
        (gather,) = [n for n in model.graph.node if n.op_type == "GatherElements"]
        (decoder,) = [n for n in model.graph.node if n.op_type == "MatMul" and gather.output[0] in n.input]
        weight = decoder.input[1]
        assert weight not in made and weight in {i.name for i in model.graph.initializer}  # an FP32 weight, no DQ
        assert decoder.name in cell_nodes(bundle.graph(name))
        if name != "vit":  # the index comes straight from the int64 input
            (cells,) = [i for i in model.graph.input if i.name == "cells"]
            assert cells.type.tensor_type.elem_type == onnx.TensorProto.INT64
            assert made[gather.input[1]].op_type == "Expand"


def test_fp16_leaves_the_cell_index_int64(engines):
    for name in ("encoder", "encoder_masked"):
        model = onnx.shape_inference.infer_shapes(onnx.load(str(engines["fp16"].graph(name))))
        types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
        (gather,) = [n for n in model.graph.node if n.op_type == "GatherElements"]
        assert types["cells"] == types[gather.input[1]] == onnx.TensorProto.INT64
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)  # the rest did go FP16


@pytest.mark.parametrize("spread", [False, True], ids=["own-counts", "spread-counts"])
def test_calibration_feeds_carry_each_images_cells_within_its_rows(bundle, spread):
    """The tokenizer's cells of the very images fed, below each image's count at its own threshold, spread or not."""
    images, _ = load_images(bundle, n=128)
    feeds = encoder_feeds(bundle, images, spread=spread)
    assert sum(len(f["tokens"]) for f in feeds.encoder) == 128 == sum(len(f["tokens"]) for f in feeds.encoder_masked)
    for f in feeds.encoder:
        assert f.keys() == {"tokens", "cells"} and f["cells"].shape == (len(f["tokens"]), CELLS)
        assert f["cells"].dtype == np.int64 and f["cells"].min() > 0 and f["cells"].max() < f["tokens"].shape[1]
    for f in feeds.encoder_masked:
        counts = f["mask"].sum(1)
        assert f.keys() == {"tokens", "mask", "cells"} and (f["cells"].max(1) < counts).all()
        assert (f["cells"].max(1) == counts - 1).all()  # the last selected row covers a cell: no row wasted
    if spread:  # each image at a threshold of its own: counts (and their cells) go round every bucket
        assert all(n > 0 for n in feeds.coverage)


def test_precision_comparisons_count_pixels_and_miou(engines, bundle):
    images, labels = load_images(bundle, n=24, offset=CALIB)  # held out from the calibration images
    assert labels.shape == (24, 32, 32) and labels.min() >= dense.IGNORED
    fp32 = run_graphs(bundle, {}, images)
    graphs = {n: engines["int8"].graph(n) for n in ("encoder", "encoder_masked")}
    report = compare_outputs(run_graphs(bundle, graphs, images), fp32, labels)
    assert report["counts_identical"] and report["top1_agreement"] >= validation.DENSE_TOLERANCES["int8"].min_agreement
    assert report["reference_miou"] - report["miou"] <= validation.DENSE_TOLERANCES["int8"].max_accuracy_drop
    assert compare_outputs(fp32, fp32)["top1_agreement"] == 1.0  # no labels: per pixel at the images' size


def test_cell_nodes_finds_nothing_in_a_classifiers_graph(tmp_path):
    """A classifier's logits are [B, K]: nothing is kept from Q/DQ beyond ModelOpt's own rules."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Gather", ["tokens", "zero"], ["cls"], axis=1),
        helper.make_node("MatMul", ["cls", "w"], ["logits"]),
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.INT64, [], [0]),
        helper.make_tensor("w", TensorProto.FLOAT, [8, 3], [0.0] * 24),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["B", "N", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 3])],
        inits,
    )
    onnx.save(helper.make_model(graph), tmp_path / "c.onnx")
    assert cell_nodes(tmp_path / "c.onnx") == []
