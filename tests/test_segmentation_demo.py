"""``msvit-edge demo --task segmentation``: the whole chain on the embedded segmenter, as a user runs it (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from msvit_edge.bundle import Bundle
from msvit_edge.model.checkpoint import load_checkpoint
from msvit_edge.model.segmenter import MSViTSegmenter


def test_the_embedded_segmenter_is_small_and_says_how_it_was_made():
    from msvit_edge.model.checkpoint import demo_checkpoint

    path = demo_checkpoint("segmentation")
    model, _ = load_checkpoint(path)
    assert isinstance(model, MSViTSegmenter) and model.vit_config.num_classes == 11
    assert path.stat().st_size < 4e6  # the repository carries it: fp16, as the classifier's
    assert (path.parent / "demo-segmentation.md").read_text().count("msvit-edge train") >= 2  # both stages' commands


@pytest.mark.slow
def test_demo_task_segmentation_runs_the_chain_and_reports_miou(tmp_path):
    out = tmp_path / "demo"
    argv = [sys.executable, "-m", "msvit_edge", "demo", "--task", "Segmentation", "--out", str(out)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    bundle = Bundle(out / "bundle")
    assert bundle.dense and bundle.record.validation["accuracy"]["metric"] == "miou"
    engines = sorted(p.name for p in (out / "bundle" / "engines").iterdir())
    assert [e.split("-")[:2] for e in engines] == [["onnxruntime", "fp32"], ["onnxruntime", "int8"]]
    report = json.loads((out / "report" / "report.json").read_text())
    for row in report["engines"]:  # every engine passed its dense tolerance and reports the segmentation scores
        assert row["status"] == "passed", row.get("error")
        assert row["accuracy"]["metric"] == "miou" and 0 < row["accuracy"]["miou"] <= 1
        assert row["accuracy"]["logits"]["pixel_agreement"] >= 0.98
    assert "mIoU" in (out / "report" / "report.md").read_text()
    from msvit_edge.engines.pytorch import bundle_model

    assert isinstance(bundle_model(bundle), MSViTSegmenter)  # the embedded segmenter is found by its sha256
    overlay = Image.open(out / "report" / "overlays" / "-".join(engines[1].split("-")[:2]) / "000.png")
    assert overlay.width > 2.5 * overlay.height  # three captioned panels side by side: gate, predicted, ground truth
    assert "validated: per-pixel agreement" in result.stdout and "Traceback" not in result.stderr
