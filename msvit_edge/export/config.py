"""What ``msvit-edge export`` is asked to do: ``ExportConfig``, checked when made."""

from __future__ import annotations

from dataclasses import dataclass

from msvit_edge.errors import require

OPSET = 20  # ModelOpt calibrates at 20; TensorRT 10.x parses it; no ONNX Attention op (opset 23) to trip ORT
SIMPLIFIERS = ("onnxslim", "onnxsim", "none")
# Images that plan the buckets and validation images, by default: a latency-only bundle (random weights) has no
# accuracy to keep, and at 224 px every image costs (docs/deit-s.md)
CALIB_IMAGES, VAL_IMAGES = 2000, 128
LATENCY_ONLY_CALIB_IMAGES, LATENCY_ONLY_VAL_IMAGES = 256, 32
ADE20K_CLASSES = 150  # a random-weights segmenter's head: the paper's segmentation data set (ADE20k)


@dataclass
class ExportConfig:
    out: str = "bundle"
    ckpt: str | None = None  # None: the embedded demo checkpoint (or a random-weights preset)
    preset: str | None = None  # with random_weights: a model of this preset, for latency only
    random_weights: bool = False
    fine_fraction: float | None = None  # set the threshold so this share of calibration regions is fine
    buckets: int = 5  # one TensorRT profile each; why 5: docs/measurements.md
    calib: str = "fashion-mnist-scenes"  # images whose token counts plan the buckets (training split)
    calib_images: int | None = None  # None: CALIB_IMAGES (LATENCY_ONLY_CALIB_IMAGES with random weights)
    val_images: int | None = None  # validation images (test split) stored with PyTorch's answers; None: as above
    threshold: float | None = None  # gate threshold baked into the manifest (default: the checkpoint's)
    simplifier: str = "onnxslim"
    max_batch: int = 64
    force: bool = False
    skip_corrupt: bool = False  # ImageFolder --calib: report and skip unreadable images and non-image files
    task: str | None = None  # with random_weights: classification (default) or segmentation
    num_classes: int | None = None  # with random_weights: the head's classes (default: the preset's; segmentation 150)
    ignore_index: int | None = None  # segmentation masks: the unlabelled value (default 255)

    def __post_init__(self) -> None:
        if self.calib_images is None:
            self.calib_images = LATENCY_ONLY_CALIB_IMAGES if self.random_weights else CALIB_IMAGES
        if self.val_images is None:
            self.val_images = LATENCY_ONLY_VAL_IMAGES if self.random_weights else VAL_IMAGES
        if self.random_weights and self.task == "segmentation" and self.num_classes is None:
            self.num_classes = ADE20K_CLASSES
        checks = {
            f"--simplifier must be one of {', '.join(SIMPLIFIERS)}, got {self.simplifier!r}": self.simplifier
            in SIMPLIFIERS,
            f"--buckets must be >= 1, got {self.buckets}": self.buckets >= 1,
            f"--calib-images must be >= 1, got {self.calib_images}": self.calib_images >= 1,
            f"--val-images must be >= 1, got {self.val_images}": self.val_images >= 1,
            f"max_batch must be >= 2 (the batch dim is traced at 2), got {self.max_batch}": self.max_batch >= 2,
            "--random-weights needs --preset (which model to build)": self.preset is not None
            or not self.random_weights,
            "--preset builds a model with random weights: add --random-weights (or pass --ckpt)": self.preset is None
            or self.random_weights,
            "--ckpt and --random-weights exclude each other": not (self.ckpt and self.random_weights),
            "--task and --num-classes build a random-weights model: add --random-weights (a checkpoint says both)": (
                self.random_weights or (self.task is None and self.num_classes is None)
            ),
            f"--task must be classification or segmentation, got {self.task!r}": self.task
            in (None, "classification", "segmentation"),
            f"--num-classes must be >= 2, got {self.num_classes}": self.num_classes is None or self.num_classes >= 2,
            "--fine-fraction and --threshold exclude each other": self.fine_fraction is None or self.threshold is None,
            f"--fine-fraction must be in (0, 1), got {self.fine_fraction}": self.fine_fraction is None
            or 0 < self.fine_fraction < 1,
        }
        require(checks)
