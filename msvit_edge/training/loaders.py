"""The images a run trains and validates on: a held-out slice of the training split (``val_size`` items) is the
validation set, so the test split is never looked at while training; each epoch's loader is this rank's share."""

from __future__ import annotations

import copy

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from msvit_edge.data import open_dataset, open_segmentation_dataset, random_subset, split, unwrap
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.model.config import SEGMENTATION
from msvit_edge.model.msvit import MSViT
from msvit_edge.training.config import TrainConfig


def split_datasets(cfg: TrainConfig, model: MSViT) -> tuple[Dataset, Dataset]:
    """(training set, validation set) of ``cfg.data``'s training split, at ``model``'s input size and normalisation;
    with label maps for a segmentation model."""
    full = open_training_split(cfg, model)
    classes, outputs = len(getattr(full, "classes", ())), model.vit_config.num_classes
    if classes > outputs:
        raise MsvitEdgeError(f"{classes} classes but the model has {outputs} outputs (use --num-classes)", cfg.data)
    if len(full) <= cfg.val_size:
        raise MsvitEdgeError(f"{len(full)} training items cannot spare {cfg.val_size} for validation", cfg.data)
    train_set, val_set = split(full, cfg.val_size, cfg.seed)
    val_set.dataset = copy.copy(full)  # its own epoch: validation scenes stay as built while training re-renders
    train_set = random_subset(train_set, cfg.train_size, cfg.seed)
    if len(train_set) < cfg.batch_size:
        raise MsvitEdgeError(f"{len(train_set)} training items are fewer than one batch of {cfg.batch_size}", cfg.data)
    return train_set, val_set


def open_training_split(cfg: TrainConfig, model: MSViT) -> Dataset:
    """The training split of ``cfg.data``, as the model's task reads it."""
    vit = model.vit_config
    if model.config.task == SEGMENTATION:
        return open_segmentation_dataset(
            cfg.data, "train", vit.img_size, vit.mean, vit.std, vit.num_classes, cfg.ignore_index, cfg.scene
        )
    return open_dataset(
        cfg.data, "train", vit.img_size, vit.mean, vit.std, scene=cfg.scene, skip_corrupt=cfg.skip_corrupt
    )


def epoch_loader(dataset: Dataset, cfg: TrainConfig, epoch: int, world: int, rank: int) -> DataLoader:
    """This rank's shuffled share of ``dataset`` for ``epoch``: ``batch_size / world`` images a batch."""
    set_epoch(dataset, epoch)
    sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size // world,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.workers,
        persistent_workers=False,
    )


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Let data sets that re-render per epoch (scenes: new positions and backgrounds) know the epoch."""
    base, _ = unwrap(dataset)
    if hasattr(base, "set_epoch"):
        base.set_epoch(epoch)
