"""The model to export, its gate threshold, and the bucket plan from its token counts on calibration images."""

from __future__ import annotations

import functools
import hashlib
import textwrap
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from msvit_edge.bundle.buckets import BucketPlan, plan_buckets
from msvit_edge.data import open_dataset, open_segmentation_dataset, random_subset
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.export.config import ExportConfig
from msvit_edge.model.checkpoint import demo_checkpoint, load_checkpoint
from msvit_edge.model.config import SEGMENTATION, MSViTConfig, preset
from msvit_edge.model.factory import create_model
from msvit_edge.model.flops import encoder_macs
from msvit_edge.model.msvit import MSViT, check_threshold


def load_model(cfg: ExportConfig) -> tuple[MSViT, Path | str]:
    """The model to export and where it came from: a checkpoint, the demo, or a random-weights preset."""
    if cfg.random_weights:
        torch.manual_seed(0)
        overrides = {"num_classes": cfg.num_classes} if cfg.num_classes else {}
        config = MSViTConfig(preset(cfg.preset, **overrides), task=cfg.task or "classification")
        return create_model(config).eval(), f"random weights ({cfg.preset})"
    ckpt = Path(cfg.ckpt) if cfg.ckpt else demo_checkpoint()
    return load_checkpoint(ckpt)[0], ckpt


def choose_threshold(model: MSViT, cfg: ExportConfig) -> float:
    """The gate threshold: given, the checkpoint's, or the one that makes ``fine_fraction`` of the calibration
    images' regions fine (a random-weights model has no trained threshold)."""
    if cfg.fine_fraction is None:
        return check_threshold(model.config.threshold if cfg.threshold is None else cfg.threshold)
    probs = gate_probs(model, cfg.calib, cfg.calib_images, cfg.skip_corrupt, cfg.ignore_index)
    return float(np.quantile(probs, 1 - cfg.fine_fraction))


def dataset(
    model: MSViT, data: str, split: str, n: int, skip_corrupt: bool = False, ignore_index: int | None = None
) -> Dataset:
    """``n`` images of ``data`` drawn at random, at the model's size (scenes are rendered at it); a segmenter's come
    with their label maps (``ignore_index``: the masks' unlabelled value, default 255)."""
    vit = model.vit_config
    if model.config.task == SEGMENTATION:
        extra = {} if ignore_index is None else {"ignore_index": ignore_index}
        data_set = open_segmentation_dataset(data, split, vit.img_size, vit.mean, vit.std, vit.num_classes, **extra)
    else:
        data_set = open_dataset(data, split, vit.img_size, vit.mean, vit.std, skip_corrupt=skip_corrupt)
    return random_subset(data_set, n)


@torch.no_grad()
def gate_probs(
    model: MSViT, data: str, n: int, skip_corrupt: bool = False, ignore_index: int | None = None
) -> np.ndarray:
    """The gate's fine probabilities [n, R] on ``n`` training images."""
    loader = DataLoader(dataset(model, data, "train", n, skip_corrupt, ignore_index), batch_size=250)
    return torch.cat([model.gate(x).sigmoid() for x, _ in loader]).numpy()


@torch.no_grad()
def token_counts(
    model: MSViT,
    data: str,
    split: str,
    n: int,
    threshold: float,
    skip_corrupt: bool = False,
    ignore_index: int | None = None,
) -> tuple[np.ndarray, str]:
    """The gate's token counts on ``n`` images of a data set, drawn at random, and the sha256 of those images."""
    loader = DataLoader(dataset(model, data, split, n, skip_corrupt, ignore_index), batch_size=250)
    digest, counts = hashlib.sha256(), []
    for x, _ in loader:
        digest.update(x.numpy().tobytes())
        counts.append(model.tokenize(x, threshold=threshold).counts)
    return torch.cat(counts).numpy(), digest.hexdigest()


def plan_for(model: MSViT, cfg: ExportConfig, threshold: float) -> tuple[BucketPlan, str]:
    """The bucket plan from the calibration images' token counts, and those images' sha256."""
    counts, digest = token_counts(
        model, cfg.calib, "train", cfg.calib_images, threshold, cfg.skip_corrupt, cfg.ignore_index
    )
    vit = model.vit_config
    if cfg.random_weights and cfg.fine_fraction is None and len(set(counts.tolist())) < cfg.buckets:
        raise MsvitEdgeError(  # an untrained gate decides (nearly) alike for every image: nothing to plan on
            f"the untrained gate gives {len(set(counts.tolist()))} distinct token count(s) for {cfg.buckets} buckets: "
            "pass --fine-fraction (e.g. 0.5) to spread a random-weights model's decisions"
        )
    macs = functools.partial(encoder_macs, vit)
    return plan_buckets(counts, cfg.buckets, macs, *vit.token_range, (1, 1, cfg.max_batch)), digest


def describe_plan(plan: BucketPlan) -> str:
    rows = [
        f"  bucket {i}: tokens {b.min}..{b.max} (opt {b.opt}), {100 * b.share:.1f}% of calibration images"
        for i, b in enumerate(plan.buckets)
    ]
    head = (
        f"buckets: {len(plan.buckets)} from {sum(plan.histogram.values())} calibration images, tokens mean "
        f"{plan.mean_count:.1f} (min {min(plan.histogram)}, max {max(plan.histogram)}); expected padding overhead "
        f"{100 * plan.expected_overhead:.2f}%"
    )
    histogram = " ".join(f"{n}:{k}" for n, k in sorted(plan.histogram.items()))
    wrapped = textwrap.wrap(histogram, 116, initial_indent="  histogram (tokens:images) ", subsequent_indent="    ")
    return "\n".join([head, *rows, *wrapped])
