"""The images ``bench`` measures on: the bundle's validation images with their stored PyTorch answers, or
``--data``'s test split with PyTorch's answers computed now (none without PyTorch). Read once per bundle per run:
every source of a bundle is measured on the same images against the same reference.

A segmentation bundle's images come with label maps [N, S, S] (unlabelled pixels ``dense.IGNORED``, as its stored
reference marks them) and the coarse regions of each that hold a class boundary (``boundary_map``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle, Reference, dense
from msvit_edge.bundle.metrics import boundary_regions
from msvit_edge.bundle.preprocess import folder_samples
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.measure.config import BenchConfig
from msvit_edge.measure.reference import reference_on
from msvit_edge.measure.sources import Source
from msvit_edge.model.config import SEGMENTATION


@dataclass
class Images:
    """What every source is measured on: preprocessed images, labels and (when known) PyTorch's answers."""

    x: np.ndarray  # float32 [N, C, H, W], normalised for the tokenizer
    labels: np.ndarray  # int64 [N]; segmentation: label maps [N, S, S], unlabelled pixels ``dense.IGNORED``
    reference: Reference | None  # PyTorch's logits, counts and probs on ``x`` at the bundle's threshold
    origin: str  # where the images and the reference came from, for the report
    boundary: np.ndarray | None = None  # segmentation: bool [N, R], the coarse regions holding a class boundary

    @property
    def dense(self) -> bool:
        """Whether these are a segmentation bundle's images (label maps, not labels)."""
        return self.labels.ndim == 3

    @cached_property
    def reference_pixels(self) -> np.ndarray | None:
        """PyTorch's pixel labels (dense), upsampled once for every source measured on these images."""
        if self.reference is None:
            return None
        return dense.pixel_labels(self.reference.logits, self.labels.shape[-1])


def images_per_source(sources: list[Source], cfg: BenchConfig) -> list[Images]:
    """Each source's images, in order; sources of one bundle share them (read and answered once)."""
    by_bundle: dict[Path, Images] = {}
    for source in sources:
        key = source.bundle.path.resolve()
        if key not in by_bundle:
            by_bundle[key] = with_boundaries(load_images(source, cfg), source)
    return [by_bundle[source.bundle.path.resolve()] for source in sources]


def load_images(source: Source, cfg: BenchConfig) -> Images:
    """The bundle's validation images with their stored reference, or ``cfg.data`` with PyTorch's answers now."""
    bundle = source.bundle
    if cfg.data is None:
        ref = bundle.reference()
        return Images(bundle.preprocess(ref.images), ref.labels, ref, f"{len(ref.labels)} bundle validation images")
    ignore = source.bundle.ignore_index if cfg.ignore_index is None else cfg.ignore_index
    x, labels = _read_data(source, cfg.data, cfg.limit, ignore)
    ref, why = reference_on(bundle, x, labels, cfg.ckpt)
    return Images(x, labels, ref, f"{len(x)} images of {cfg.data} (test split); reference: {why}")


def with_boundaries(images: Images, source: Source) -> Images:
    """A segmentation bundle's images with their boundary regions (the gate's coarse regions: 2 patches a side)."""
    if images.dense:
        images.boundary = boundary_map(images.labels, 2 * source.config.vit.patch_size)
    return images


def _read_data(source: Source, data: str, limit: int, ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed images and labels of ``data``'s test split, ``limit`` drawn at random (as ``eval --limit``); a
    segmentation bundle's with label maps (``open_segmentation_dataset``)."""
    segmenting = source.config.task == SEGMENTATION
    try:
        import torch  # lazy: torch is optional (torch-free bench on a Jetson)
    except ImportError:
        if segmenting:
            raise MsvitEdgeError(
                "a segmentation bundle's --data (images with label maps) is read through PyTorch, which is not "
                "installed here: bench the bundle's own validation images (no --data)"
            ) from None
        return _read_folder(source.bundle, Path(data), limit)
    from torch.utils.data import DataLoader

    from msvit_edge.data import open_dataset, open_segmentation_dataset, random_subset, unwrap  # lazy: imports torch

    vit = source.config.vit
    if segmenting:
        dataset = open_segmentation_dataset(
            data, "test", vit.img_size, vit.mean, vit.std, vit.num_classes, ignore_index
        )
    else:
        dataset = open_dataset(data, "test", vit.img_size, vit.mean, vit.std)
    dataset = random_subset(dataset, limit)  # never empty
    batches = list(DataLoader(dataset, batch_size=256))
    x, labels = torch.cat([x for x, _ in batches]).numpy(), torch.cat([y for _, y in batches]).numpy()
    labels = labels.astype(np.int64, copy=False)
    if segmenting:  # unlabelled pixels marked as every bundle's reference marks them
        labels = dense.mark_ignored(labels, unwrap(dataset)[0].ignore_index)
    return x, labels


def _read_folder(bundle: Bundle, root: Path, limit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Without PyTorch (a Jetson): an ImageFolder tree, loaded and resized as training did (``Bundle.load_images``)."""
    if not root.is_dir():
        raise MsvitEdgeError("without PyTorch, --data takes an ImageFolder tree (root/<class>/<images>)", root)
    samples, _ = folder_samples(root / "test" if (root / "test").is_dir() else root)
    keep = np.sort(np.random.default_rng(seed).permutation(len(samples))[:limit])
    paths, labels = zip(*(samples[i] for i in keep), strict=True)
    return bundle.preprocess(bundle.load_images(list(paths))), np.asarray(labels, np.int64)


def boundary_map(labels: np.ndarray, region: int) -> np.ndarray:
    """Which coarse regions of each label map [N, S, S] hold a class boundary: bool [N, R], row-major
    (``bundle.metrics.boundary_regions``, ``dense.IGNORED`` unlabelled), ``dense.CHUNK`` images at a time."""
    labels = np.asarray(labels)
    parts = [
        boundary_regions(labels[i : i + dense.CHUNK], region, dense.IGNORED) for i in range(0, len(labels), dense.CHUNK)
    ]
    return np.concatenate(parts).reshape(len(labels), -1)
