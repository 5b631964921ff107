"""A segmentation bundle: the tokenizer's cell index, encoders that take it, cell logits upsampled on the host, and
ONNX Runtime held to PyTorch per pixel (issue 23, export and validation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msvit_edge.bundle import dense, validation
from msvit_edge.engines.ort import OnnxRuntimePipeline
from msvit_edge.engines.pytorch import TorchPipeline
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.model.checkpoint import load_checkpoint


@pytest.mark.parametrize("grid, size", [(10, 80), (8, 32), (14, 224), (3, 7)])
def test_the_hosts_upsampling_is_pytorchs_bilinear(grid, size):
    logits = torch.randn(2, 5, grid, grid, generator=torch.Generator().manual_seed(grid))
    want = torch.nn.functional.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(dense.upsample(logits.numpy(), size), want.numpy(), rtol=0, atol=2e-6)
    np.testing.assert_array_equal(dense.pixel_labels(logits.numpy(), size), want.argmax(1).numpy())


def test_a_segmentation_bundle_says_its_task_and_feeds_the_cell_index(seg_bundle):
    assert seg_bundle.task == "segmentation" and seg_bundle.dense
    io = {name: seg_bundle.record.graphs[name].io() for name in ("tokenizer", "encoder", "encoder_masked", "vit")}
    assert [o["name"] for o in io["tokenizer"]["outputs"]] == ["tokens", "counts", "probs", "order", "cells"]
    assert io["tokenizer"]["outputs"][-1]["shape"][1:] == [64] and io["tokenizer"]["outputs"][-1]["dtype"] == "int64"
    assert [i["name"] for i in io["encoder"]["inputs"]] == ["tokens", "cells"]
    assert [i["name"] for i in io["encoder_masked"]["inputs"]] == ["tokens", "mask", "cells"]
    for name in ("encoder", "encoder_masked", "vit"):
        assert io[name]["outputs"][0]["shape"][1:] == [11, 8, 8]  # cell logits: K classes on the 8x8 grid
    ref = seg_bundle.reference()
    assert ref.dense and ref.logits.shape == (24, 11, 8, 8) and ref.labels.shape == (24, 32, 32)
    assert set(np.unique(ref.labels)) <= set(range(11)) and (ref.labels > 0).any()  # items on the background


def test_onnx_runtime_gives_pytorchs_cell_logits_at_every_batching(seg_workdir, seg_bundle):
    ref = seg_bundle.reference()
    x = seg_bundle.preprocess(ref.images)
    assert len(set(ref.counts.tolist())) > 2  # mixed counts: the key mask and several buckets are exercised
    model, _ = load_checkpoint(seg_workdir / "seg.safetensors")
    with OnnxRuntimePipeline(seg_bundle) as pipe:
        assert pipe.one_call  # batch 1: the composed graph, which wires the cell index inside
        for batch in (1, 5, 24):
            out = pipe.run_batched(x, seg_bundle.threshold, batch)
            np.testing.assert_array_equal(out.counts, ref.counts)
            np.testing.assert_allclose(out.logits, ref.logits, rtol=0, atol=1e-4)
        pipe.pad_to_bucket = True
        np.testing.assert_allclose(pipe(x, seg_bundle.threshold).logits, ref.logits, rtol=0, atol=1e-4)
        with torch.no_grad():  # the plain ViT: the same weights all fine, the same head
            want = model.encode_cells(model.embed(torch.from_numpy(x)))
        np.testing.assert_allclose(pipe.plain_vit()(x), want.numpy(), rtol=0, atol=1e-4)
    torch_out = TorchPipeline(model).run_batched(x, seg_bundle.threshold, 8)
    np.testing.assert_allclose(torch_out.logits, ref.logits, rtol=0, atol=1e-5)
    with torch.no_grad():  # and the cell logits upsampled on the host are the model's own pixel logits
        pixels = model(torch.from_numpy(x), seg_bundle.threshold)
    np.testing.assert_allclose(dense.upsample(ref.logits, 32), pixels.numpy(), rtol=0, atol=1e-4)


def test_the_export_validation_holds_pixels_and_miou(seg_bundle):
    report = seg_bundle.record.validation
    assert report["accuracy"]["metric"] == "miou" and report["accuracy"]["engine"] == report["accuracy"]["reference"]
    for mode in validation.MODES:
        assert report[mode]["logits"]["pixel_agreement"] == 1.0 and report[mode]["counts_equal"]
    ref = seg_bundle.reference()
    scores = dense.scores(dense.pixel_labels(ref.logits, 32), ref.labels, 11)
    assert report["accuracy"]["reference"] == pytest.approx(scores.miou)
    assert scores.pixel_accuracy > 0.3  # trained: the background at least, not a constant answer


def test_a_dense_engine_off_by_pixels_or_miou_fails_with_the_numbers(seg_bundle):
    ref = seg_bundle.reference()
    worse = ref.logits.copy()
    worse[:, 0] += 0.5 * np.abs(worse).max()  # background everywhere it was close: pixels flip, mIoU falls

    class Out:
        logits, counts = worse, ref.counts

    agree = validation.agreement(Out, ref, ref.labels)
    assert agree.top1_agreement < 1 and agree.miou < agree.reference_miou
    logits = validation.compare(worse, ref.logits) | {"pixel_agreement": agree.top1_agreement}
    assert "top1_agreement" not in logits  # a dense comparison never reads a class out of the flattened grid
    reason = validation.verdict(logits, 0, len(ref.counts), validation.tolerance("int8", True))
    want = agree.top1_agreement < validation.tolerance("int8", True).min_agreement  # which side of 98% it fell
    assert (reason is not None and "pixel labels agree with PyTorch's on" in reason) == want
    strict = validation.Tolerance(atol=None, min_agreement=1.0, max_accuracy_drop=0.0)
    assert "pixel labels agree with PyTorch's on" in validation.verdict(logits, 0, 24, strict)
    lenient = validation.Tolerance(atol=None, min_agreement=0.0, max_accuracy_drop=0.0)
    assert "mIoU" in validation.verdict(logits, 0, 24, lenient, top1=(agree.miou, agree.reference_miou))
    assert "per-pixel agreement >= 98%" in validation.criterion(validation.tolerance("int8", True), is_dense=True)
    with pytest.raises(MsvitEdgeError, match="counts differ"):
        validation.check(
            {"images": 24, "accuracy": {"engine": 1, "reference": 1}}
            | {m: {"logits": logits, "counts_differ": 1} for m in validation.MODES},
            validation.tolerance("fp32", True),
        )


def test_a_random_weights_segmenter_exports_with_the_papers_class_count(tmp_path):
    from msvit_edge.export import ExportConfig, load_model

    model, source = load_model(ExportConfig(preset="vit_tiny_patch16_224", random_weights=True, task="segmentation"))
    assert model.config.task == "segmentation" and model.vit_config.num_classes == 150 and "random" in source
    with pytest.raises(MsvitEdgeError, match="--task and --num-classes build a random-weights model"):
        ExportConfig(task="segmentation")


def test_serving_a_segmentation_bundle_is_refused_and_writes_nothing(seg_bundle, tmp_path):
    from msvit_edge.serve.repository import triton_repo

    with pytest.raises(MsvitEdgeError, match="serving a segmentation bundle is not built yet"):
        triton_repo(seg_bundle, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_the_export_command_takes_the_task_only_with_random_weights(seg_workdir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "bundle"
    argv = ["export", "--ckpt", str(seg_workdir / "seg.safetensors"), "--task", "Segmentation", "--out", str(out)]
    result = subprocess.run([sys.executable, "-m", "msvit_edge", *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "--task and --num-classes build a random-weights model" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_unlabelled_pixels_and_fine_regions_have_one_rule_each(seg_bundle):
    labels = np.array([[0, 7, 255], [3, 255, 1]])
    np.testing.assert_array_equal(dense.mark_ignored(labels, 255), [[0, 7, -1], [3, -1, 1]])
    np.testing.assert_array_equal(dense.mark_ignored(labels, 0), [[-1, 7, 255], [3, 255, 1]])
    probs = np.array([[0.0, 0.3, 0.9]], np.float32)  # a gate probability that rounded to 0 is still fine at t = 0
    assert dense.fine_regions(probs, 0.0).all() and not dense.fine_regions(probs, 1.0).any()
    np.testing.assert_array_equal(dense.fine_regions(probs, 0.5), [[False, False, True]])
    assert seg_bundle.ignore_index == 255  # what its export was told (the default)
    with pytest.raises(ValueError, match="per pixel"):
        validation.agreement(seg_bundle.reference(), seg_bundle.reference())
