"""bench on a segmentation bundle (the tiny segmenter's, its FP32 graphs in ONNX Runtime): mIoU, pixel accuracy,
per-class IoU and the gate's boundary recall against the label maps, per-pixel agreement with PyTorch, the dense
tolerance and gates, the ideal speedup with the decoder's MACs on both sides, the report's columns and overlays, and
``--data`` with PyTorch's answers computed now. Short timing runs: what was measured and written, never how fast."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from msvit_edge.bundle import dense
from msvit_edge.data import boundary_regions
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.measure.accuracy import verdict
from msvit_edge.measure.bench import BenchConfig, bench
from msvit_edge.measure.images import boundary_map
from msvit_edge.measure.overlay import CAPTION, GAP, OVERLAYS, SCALE
from msvit_edge.model.config import CLASSIFICATION, SEGMENTATION, MSViTConfig
from msvit_edge.model.flops import msvit_macs, vit_macs

QUICK = {"warmup": 0.0, "iters": 2, "batch": (1, 4)}


@pytest.fixture(scope="module")
def report(seg_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg-bench") / "report"
    return bench(BenchConfig(sources=(str(seg_bundle.path),), thresholds=(0.0, 1.0), out=str(out), **QUICK)), out


def recount(bundle) -> tuple[dense.SegmentationScores, float]:
    """mIoU, pixel accuracy, per-class IoU and boundary recall of the stored reference, counted here."""
    ref = bundle.reference()
    size, region = ref.labels.shape[-1], 2 * MSViTConfig.from_dict(bundle.manifest["model"]).vit.patch_size
    scores = dense.scores(dense.pixel_labels(ref.logits, size), ref.labels, ref.logits.shape[1])
    edges = np.stack([boundary_regions(t, region, dense.IGNORED).ravel() for t in ref.labels])
    fine = ref.probs > bundle.threshold
    return scores, float((fine & edges).sum() / edges.sum())


def test_scores_equal_a_recount_from_the_stored_reference(report, seg_bundle):
    data, _ = report
    engine = data.engines[0]
    acc = engine.accuracy
    scores, recall = recount(seg_bundle)
    assert engine.status == "passed" and acc["n"] == 24 and acc["metric"] == "miou"
    assert acc["reference_miou"] == scores.miou and acc["reference_pixel_accuracy"] == scores.pixel_accuracy
    assert acc["reference_iou"] == [None if np.isnan(v) else v for v in scores.iou] and len(acc["iou"]) == 11
    assert acc["reference_boundary_recall"] == pytest.approx(recall) and 0 < recall < 1
    assert acc["agreement"] == 1.0 and acc["counts_agreement"] == 1.0 and acc["logits"]["max_abs"] <= 1e-4
    # the bundle's own FP32 graphs label every pixel as PyTorch does: the same scores, and the same gate decisions
    assert (acc["miou"], acc["pixel_accuracy"]) == (scores.miou, scores.pixel_accuracy)
    assert acc["iou"] == acc["reference_iou"]
    assert acc["boundary_recall"] == acc["reference_boundary_recall"]
    assert sum(b["images"] for b in acc["per_bucket"]) == 24
    assert all(b["agreement"] == 1.0 for b in acc["per_bucket"] if b["images"])
    assert "top1" not in acc and "top1" not in engine.row and engine.row["miou"] == acc["miou"]


def test_boundary_regions_are_the_data_sets_rule_and_unlabelled_pixels_make_none(seg_bundle):
    labels = seg_bundle.reference().labels
    assert np.array_equal(boundary_map(labels, 8), np.stack([boundary_regions(t, 8, -1).ravel() for t in labels]))
    blank = np.zeros((2, 32, 32), np.int64)
    blank[0, 4:12, 4:12] = dense.IGNORED  # unlabelled next to labelled: no boundary
    blank[1, :, 20:] = 3  # a real one between x = 19 and 20: both its pixels in the third column of regions
    found = boundary_map(blank, 8).reshape(2, 4, 4)
    assert not found[0].any() and found[1, :, 2].all() and found[1].sum() == 4


def test_the_ideal_speedup_counts_the_decoder_on_both_sides(report, seg_bundle):
    data, _ = report
    model = MSViTConfig.from_dict(seg_bundle.manifest["model"])
    counts = seg_bundle.reference().counts  # batch 1 and 4 both cycle through all 24 images once

    def ideal(task: str) -> float:
        return vit_macs(model.vit, task=task) / np.mean([msvit_macs(model.vit, model.gate, n, task) for n in counts])

    expected = ideal(SEGMENTATION)
    assert expected != pytest.approx(ideal(CLASSIFICATION))  # the decoder's MACs change the ratio
    for lat in data.engines[0].latency.values():
        assert lat["ideal_speedup"] == pytest.approx(expected)
        assert lat["speedup"] == pytest.approx(lat["vit"]["p50_ms"] / lat["p50_ms"])
        assert lat["efficiency"] == pytest.approx(lat["speedup"] / expected)
    curve = data.engines[0].curve
    assert [p["tokens"] for p in curve] == [b.max for b in seg_bundle.plan.buckets]


def test_the_threshold_sweep_reports_miou_and_boundary_recall(report):
    data, _ = report
    sweep = {p["threshold"]: p for p in data.engines[0].thresholds}
    assert sweep[0.0]["mean_tokens"] == 65 and sweep[1.0]["mean_tokens"] == 17
    assert sweep[0.0]["boundary_recall"] == 1.0 and sweep[1.0]["boundary_recall"] == 0.0  # all fine, all coarse
    assert all(0 < p["miou"] < 1 and "top1" not in p for p in sweep.values())


def test_the_reports_show_miou_where_a_classifier_shows_top1(report):
    _, out = report
    md = (out / "report.md").read_text()
    head = md.splitlines()[4]
    assert "| mIoU | pixel acc. | boundary recall | agreement |" in head and "top-1" not in head
    assert "per-pixel agreement with PyTorch 100.00%" in md and "| class | IoU | PyTorch IoU |" in md
    assert "overlays: overlays/onnxruntime-fp32/" in md
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert {"miou", "pixel_accuracy", "boundary_recall"} <= set(rows[0]) and "top1" not in rows[0]
    on_disk = json.loads((out / "report.json").read_text())["engines"][0]
    assert on_disk["row"]["miou"] == on_disk["accuracy"]["miou"]


def test_overlays_put_three_panels_side_by_side(report, seg_bundle):
    _, out = report
    files = sorted((out / "overlays" / "onnxruntime-fp32").iterdir())
    assert [f.name for f in files] == [f"{i:03d}.png" for i in range(OVERLAYS)]
    side = 32 * SCALE
    assert Image.open(files[0]).size == (3 * side + 2 * GAP, side + CAPTION)
    ref = seg_bundle.reference()
    truth = np.asarray(Image.open(files[0]).convert("RGB"))[:side, 2 * (side + GAP) :][::SCALE, ::SCALE]
    assert len({tuple(c) for c in truth.reshape(-1, 3)}) == len(np.unique(ref.labels[0]))  # its classes' colours


def test_dense_tolerance_and_gates_read_pixels_and_miou(seg_bundle, tmp_path):
    acc = {"metric": "miou", "miou": 0.5, "reference_miou": 0.5, "n": 24, "counts_differ": 0, "agreement": 0.998}
    acc["logits"] = {"max_abs": 1e-5, "max_rel": 1e-5, "min_cosine": 1.0, "pixel_agreement": 0.998}
    info = {"precision": "fp32", "latency_only": False}
    assert "pixel labels agree with PyTorch's on 99.80% of pixels, below 99.90%" in verdict(acc, info, BenchConfig())
    assert verdict(acc, info | {"precision": "fp16"}, BenchConfig()) is None
    dropped = acc | {"miou": 0.49}
    assert "mIoU 49.00% is 1.00 points below" in verdict(dropped, info | {"precision": "fp16"}, BenchConfig())
    assert "per-pixel agreement" in verdict(acc, info | {"precision": "int8"}, BenchConfig(min_agreement=0.999))
    cfg = BenchConfig(sources=(str(seg_bundle.path),), out=str(tmp_path / "r"), min_accuracy=0.99, **QUICK)
    with pytest.raises(MsvitEdgeError, match=r"bundle mIoU \d+\.\d+% < 99\.00%"):
        bench(cfg)


def test_data_computes_pytorchs_label_maps_now_as_eval_scores_them(seg_bundle, seg_workdir, tmp_path):
    from msvit_edge.measure.evaluate import EvalConfig, evaluate

    ckpt = str(seg_workdir / "seg.safetensors")
    cfg = BenchConfig(
        sources=(str(seg_bundle.path), f"torch:{seg_bundle.path}"), data="fashion-mnist-scenes", limit=40, ckpt=ckpt,
        out=str(tmp_path / "b"), warmup=0.0, iters=2, batch=(1,),
    )  # fmt: skip
    engines = bench(cfg).engines
    for engine in engines:  # the bundle's graphs in ONNX Runtime, and the PyTorch model itself
        acc = engine.accuracy
        assert engine.status == "passed" and acc["n"] == 40 and "PyTorch on the same images, now" in acc["images"]
        assert acc["agreement"] == 1.0 and acc["counts_agreement"] == 1.0 and len(engine.curve) == 3
    assert engines[1].accuracy["miou"] == engines[0].accuracy["reference_miou"]  # PyTorch's, however it is run
    assert sorted(p.name for p in (tmp_path / "b" / "overlays").iterdir()) == ["onnxruntime-fp32", "torch-fp32"]
    ev = evaluate(EvalConfig(ckpt=ckpt, data="fashion-mnist-scenes", limit=40, overlays=0, out=str(tmp_path / "e")))
    msvit = ev["settings"]["msvit"]
    assert ev["images"] == 40 and acc["reference_miou"] == pytest.approx(msvit["miou"], abs=1e-3)
    assert acc["reference_pixel_accuracy"] == pytest.approx(msvit["pixel_accuracy"], abs=1e-3)
    assert acc["reference_boundary_recall"] == pytest.approx(msvit["boundary_recall"])


NO_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch now fails, as on a Jetson without PyTorch
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.measure.bench import BenchConfig, bench
acc = bench(BenchConfig(sources=(sys.argv[1],), out=sys.argv[2], warmup=0.0, iters=2, batch=(1,))).engines[0].accuracy
print(acc["miou"], acc["boundary_recall"], acc["agreement"])
try:
    bench(BenchConfig(sources=(sys.argv[1],), data="fashion-mnist-scenes", out=sys.argv[2] + "-data", iters=1))
except MsvitEdgeError as e:
    print(e)
"""


def test_without_pytorch_the_bundles_images_are_scored_and_data_is_refused(report, tmp_path):
    data, _ = report
    argv = [str(data.engines[0].info["bundle"]), str(tmp_path / "r")]
    result = subprocess.run([sys.executable, "-c", NO_TORCH, *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    scores, refusal = result.stdout.splitlines()
    acc = data.engines[0].accuracy
    assert scores.split() == [str(acc["miou"]), str(acc["boundary_recall"]), "1.0"]
    assert "read through PyTorch, which is not installed here" in refusal
