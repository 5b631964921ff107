"""Training a segmenter: mIoU and pixel accuracy, the pixel loss with an ignore index, the flip gate gradient on
pixel losses, a segmenter from the classification demo, and short real runs on the scenes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msvit_edge.bundle.metrics import confusion_matrix, segmentation_scores
from msvit_edge.data import FASHION_MNIST_DIR, FashionMNISTSceneMasks
from msvit_edge.model.checkpoint import demo_checkpoint, load_checkpoint
from msvit_edge.model.config import SEGMENTATION, MSViTConfig, ViTConfig
from msvit_edge.model.factory import create_model
from msvit_edge.model.segmenter import MSViTSegmenter
from msvit_edge.training.config import TrainConfig
from msvit_edge.training.objective import Objective
from msvit_edge.training.state import build_model
from msvit_edge.training.step import flip_gain
from msvit_edge.training.train import train

needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs the dataset-fashion-mnist package")
TINY = ViTConfig(
    img_size=32, patch_size=4, num_classes=3, embed_dim=32, depth=2, num_heads=4, mean=(0.5,) * 3, std=(0.5,) * 3
)


def test_miou_and_pixel_accuracy_of_a_hand_counted_case():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 3]])  # the ignored pixel's prediction counts for nothing
    confusion = confusion_matrix(pred, target, num_classes=4)
    # labelled 0: predicted 0 once, 1 once; labelled 1: predicted 1 twice; labelled 2: predicted 0 once
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    scores = segmentation_scores(confusion)
    # IoU 0: 1 hit / (2 labelled + 2 predicted - 1); IoU 1: 2 / (2 + 3 - 2); IoU 2: 0 / 1; class 3: nowhere
    assert scores.iou[:3] == pytest.approx((1 / 3, 2 / 3, 0.0)) and math.isnan(scores.iou[3])
    assert scores.miou == pytest.approx(1 / 3) and scores.pixel_accuracy == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        confusion_matrix(np.array([0]), np.array([4]), num_classes=4)


def test_the_pixel_loss_is_each_images_mean_over_its_labelled_pixels():
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(3, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    labels[0, :2] = 255
    labels[1] = 255  # nothing labelled: contributes zero, not NaN
    objective = Objective(SEGMENTATION, label_smoothing=0.1, ignore_index=255)  # smoothing is classification's
    labelled = labels[0].flatten() != 255
    first = F.cross_entropy(logits[0].flatten(1).T[labelled], labels[0].flatten()[labelled])
    torch.testing.assert_close(objective.per_image(logits, labels), torch.stack([first, torch.tensor(0.0)]))
    assert objective(logits, labels) == pytest.approx(first.item() / 2)
    hits = (logits[0].argmax(0) == labels[0])[2:].sum().item()
    assert objective.accuracy(logits, labels) == pytest.approx(hits / 8)


def test_flip_gain_on_a_segmenter_is_the_pixel_loss_change():
    torch.manual_seed(0)
    model = create_model(MSViTConfig(TINY, task=SEGMENTATION)).train()
    images = torch.randn(6, 3, 32, 32)
    labels = torch.randint(3, (6, 32, 32))
    fine = (torch.rand(6, 16) < 0.5).float()
    regions, rows = torch.randint(16, (6,)), torch.arange(6)
    objective = Objective(SEGMENTATION)

    def loss(decisions):
        return objective.per_image(model.encode_selection(model.tokenize(images, decisions=decisions)), labels)

    with torch.no_grad():
        as_fine, as_coarse = fine.clone(), fine.clone()
        as_fine[rows, regions], as_coarse[rows, regions] = 1.0, 0.0
        expected = loss(as_fine) - loss(as_coarse)
        gain = flip_gain(model, images, labels, fine, regions, loss(fine), objective)
    assert expected.abs().min() > 1e-7
    torch.testing.assert_close(gain, expected, rtol=1e-5, atol=1e-6)


@needs_fmnist
def test_a_segmenter_starts_from_the_classification_demo_with_its_backbone_and_gate():
    demo, _ = load_checkpoint(demo_checkpoint())
    model, meta = build_model(TrainConfig(init=str(demo_checkpoint()), task=SEGMENTATION))
    assert isinstance(model, MSViTSegmenter) and meta["task_from"] == "classification"
    assert model.vit_config.num_classes == 11 and model.config.threshold == demo.config.threshold
    kept = {k: v for k, v in demo.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in kept.items())
    again, _ = build_model(TrainConfig(init=str(demo_checkpoint())))  # no --task: the checkpoint's
    assert type(again) is type(demo)


@needs_fmnist
def test_a_segmentation_run_from_scratch_writes_a_segmentation_checkpoint(tmp_path):
    cfg = TrainConfig(
        out=str(tmp_path / "run"), task=SEGMENTATION, stage="backbone", epochs=1, train_size=32, val_size=16,
        batch_size=16, progress=False, warmup_epochs=0,
    )  # fmt: skip
    model, _ = load_checkpoint(train(cfg))
    assert isinstance(model, MSViTSegmenter) and model.config.task == SEGMENTATION
    records = [json.loads(line) for line in (tmp_path / "run" / "train.jsonl").read_text().splitlines()]
    assert {"val_miou", "val_pixel_acc", "val_tokens"} <= set(records[-1])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["task"] == SEGMENTATION


@pytest.mark.slow
@needs_fmnist
def test_a_short_real_run_on_the_scenes_lowers_the_pixel_loss(tmp_path):
    """Stage 2 (gate + backbone with gBaS and the flip gradient) from the classification demo: 512 scenes, 1 epoch."""
    cfg = TrainConfig(
        out=str(tmp_path / "run"), task=SEGMENTATION, init=str(demo_checkpoint()), epochs=1, train_size=512,
        val_size=128, batch_size=32, log_every=1, progress=False, warmup_epochs=0.1,
    )  # fmt: skip
    model, _ = load_checkpoint(train(cfg))
    records = [json.loads(line) for line in (tmp_path / "run" / "train.jsonl").read_text().splitlines()]
    task = [r["task"] for r in records if "task" in r]
    assert len(task) == 16 and np.mean(task[-4:]) < 0.5 * task[0]
    assert records[-1]["val_pixel_acc"] > 0.9 and 0 < records[-1]["val_miou"] <= 1
    scenes = FashionMNISTSceneMasks.from_split("test")
    with torch.no_grad():
        logits = model(torch.stack([scenes[i][0] for i in range(4)]))
    assert logits.shape == (4, 11, 80, 80)
