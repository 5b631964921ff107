"""``eval`` and ``train`` on a segmenter: mIoU, pixel accuracy, per-class IoU and the gate's boundary recall with the
classifier's baselines, the report files and overlays, and ``train --task segmentation``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from msvit_edge.bundle.metrics import boundary_recall, segmentation_scores
from msvit_edge.cli.app import app
from msvit_edge.data import FASHION_MNIST_DIR, boundary_regions, open_segmentation_dataset, random_subset
from msvit_edge.measure.eval_report import SegmentationTally
from msvit_edge.model.checkpoint import load_checkpoint, save_checkpoint
from msvit_edge.model.config import SEGMENTATION, MSViTConfig, preset
from msvit_edge.model.factory import create_model

needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs the dataset-fashion-mnist package")
IMAGES = 40


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A random-weights segmenter (its gate centred on real scenes so that decisions vary), evaluated by the CLI."""
    root = tmp_path_factory.mktemp("segeval")
    torch.manual_seed(0)
    vit = preset("vit_demo_patch8_80", embed_dim=32, depth=1, num_heads=2, num_classes=11)
    model = create_model(MSViTConfig(vit, task=SEGMENTATION)).eval()
    drawn = random_subset(open_segmentation_dataset("fashion-mnist-scenes", "test", 80, vit.mean, vit.std), IMAGES)
    images = torch.stack([drawn[i][0] for i in range(IMAGES)])
    labels = torch.stack([drawn[i][1] for i in range(IMAGES)])
    with torch.no_grad():
        model.gate.mlp[-1].bias -= model.gate(images).quantile(0.7)
    save_checkpoint(model, root / "seg.safetensors")
    args = ["eval", "--ckpt", str(root / "seg.safetensors"), "--limit", str(IMAGES), "--overlays", "3"]
    result = CliRunner().invoke(app, [*args, "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return json.loads((root / "out" / "report.json").read_text()), root / "out", model, images, labels


@needs_fmnist
def test_the_report_has_every_settings_scores_and_the_baselines_token_counts(evaluated):
    report, _, _, _, _ = evaluated
    assert report["task"] == SEGMENTATION and report["images"] == IMAGES and report["ignore_index"] == 255
    assert len(report["classes"]) == 11 and report["classes"][0] == "background"
    s = report["settings"]
    assert {"msvit", "all-fine", "all-coarse", "random"} <= set(s) and "object-oracle" not in s
    for name, scores in s.items():
        assert len(scores["iou"]) == 11 and 0 <= scores["boundary_recall"] <= 1, name
        assert np.array(scores["confusion"]).sum() == IMAGES * 80 * 80, name  # no scene pixel is ignored
    assert s["all-fine"]["boundary_recall"] == 1 and s["all-coarse"]["boundary_recall"] == 0
    assert 0 < s["msvit"]["boundary_fine"] < s["msvit"]["boundary_regions"]  # the centred gate's decisions vary
    for key in ("tokens_mean", "tokens_min", "tokens_max", "gmacs", "boundary_regions"):
        assert s["random"][key] == s["msvit"][key]  # the same count per image, only the positions differ


@needs_fmnist
def test_miou_and_pixel_accuracy_are_the_stored_confusion_matrix_s(evaluated):
    for name, scores in evaluated[0]["settings"].items():
        confusion = np.array(scores["confusion"])
        recomputed = segmentation_scores(confusion)
        assert scores["miou"] == pytest.approx(recomputed.miou), name
        assert scores["pixel_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum()), name
        assert [v is None for v in scores["iou"]] == list(np.isnan(recomputed.iou)), name


@needs_fmnist
def test_msvit_scores_are_the_models_answers_recounted(evaluated):
    report, _, model, images, labels = evaluated
    with torch.no_grad():
        out = model.tokenize(images)
        predicted = model.encode_selection(out).argmax(1)
    m = report["settings"]["msvit"]
    assert np.array(m["confusion"]).trace() == int((predicted == labels).sum())
    edges = np.stack([boundary_regions(t, 16).ravel() for t in labels.numpy()])
    assert (m["boundary_fine"], m["boundary_regions"]) == boundary_recall(model.fine_regions(out).numpy(), edges)
    assert m["tokens_mean"] == pytest.approx(out.counts.float().mean().item())


@needs_fmnist
def test_the_report_page_and_overlays_are_written(evaluated):
    _, out, _, _, _ = evaluated
    page = (out / "report.md").read_text()
    assert "| setting | mIoU | pixel accuracy | boundary recall |" in page and "| Ankle boot |" in page
    assert (out / "tradeoff.png").is_file()
    overlays = sorted((out / "overlays").glob("*.png"))
    assert [p.name for p in overlays] == ["000.png", "001.png", "002.png"]
    with Image.open(overlays[0]) as strip:
        assert strip.width > 3 * 80 * 4  # gate, predicted and ground-truth panels side by side


def test_boundary_recall_of_a_hand_counted_case():
    labels = np.zeros((4, 4), np.int64)
    labels[0, 1] = 1  # a boundary inside region 0 (top left); region 1 shares the edge (0,1)-(0,2)
    labels[3, 3] = 255  # ignored: no boundary at (3,3)
    assert boundary_regions(labels, 2).ravel().tolist() == [True, True, False, False]
    tally = SegmentationTally(num_classes=2, region=2)
    logits = torch.zeros(1, 2, 4, 4)
    tally.add(logits, torch.from_numpy(labels)[None], torch.tensor([9]), torch.tensor([[True, False, True, False]]))
    s = tally.scores()
    assert (s["boundary_fine"], s["boundary_regions"]) == (1, 2)  # fine: regions 0 and 2; boundaries: 0 and 1
    assert s["boundary_recall"] == 0.5 and s["boundary_precision"] == 0.5
    assert s["pixel_accuracy"] == 14 / 15  # every labelled pixel predicted 0; one of the 15 is class 1


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "msvit_edge", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)  # fmt: skip


def test_a_bad_task_is_a_one_line_usage_error(tmp_path):
    result = run("train", "--task", "detection", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2 and "detection" in result.stderr and "--task" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "run").exists()


@needs_fmnist
def test_train_task_segmentation_writes_a_segmentation_checkpoint(tmp_path):
    args = ["--stage", "backbone", "--epochs", "1", "--train-size", "32", "--val-size", "16", "--batch-size", "16"]
    out = tmp_path / "run"
    result = run("train", "--task", "Segmentation", *args, "--no-progress", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["task"] == SEGMENTATION
    model, _ = load_checkpoint(out / "model.safetensors")
    assert model.config.task == SEGMENTATION and model.vit_config.num_classes == 11
