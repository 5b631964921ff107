"""The images ``bench`` measures on: the bundle's validation images with their stored PyTorch answers, or
``--data``'s test split with PyTorch's answers computed now (none without PyTorch). Read once per bundle per run:
every source of a bundle is measured on the same images against the same reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle, Reference
from msvit_edge.bundle.preprocess import folder_samples
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.measure.config import BenchConfig
from msvit_edge.measure.reference import reference_on
from msvit_edge.measure.sources import Source


@dataclass
class Images:
    """What every source is measured on: preprocessed images, labels and (when known) PyTorch's answers."""

    x: np.ndarray  # float32 [N, C, H, W], normalised for the tokenizer
    labels: np.ndarray  # int64 [N]
    reference: Reference | None  # PyTorch's logits, counts and probs on ``x`` at the bundle's threshold
    origin: str  # where the images and the reference came from, for the report


def images_per_source(sources: list[Source], cfg: BenchConfig) -> list[Images]:
    """Each source's images, in order; sources of one bundle share them (read and answered once)."""
    by_bundle: dict[Path, Images] = {}
    for source in sources:
        key = source.bundle.path.resolve()
        if key not in by_bundle:
            by_bundle[key] = load_images(source, cfg)
    return [by_bundle[source.bundle.path.resolve()] for source in sources]


def load_images(source: Source, cfg: BenchConfig) -> Images:
    """The bundle's validation images with their stored reference, or ``cfg.data`` with PyTorch's answers now."""
    bundle = source.bundle
    if cfg.data is None:
        ref = bundle.reference()
        return Images(bundle.preprocess(ref.images), ref.labels, ref, f"{len(ref.labels)} bundle validation images")
    x, labels = _read_data(source, cfg.data, cfg.limit)
    ref, why = reference_on(bundle, x, labels, cfg.ckpt)
    return Images(x, labels, ref, f"{len(x)} images of {cfg.data} (test split); reference: {why}")


def _read_data(source: Source, data: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed images and labels of ``data``'s test split, ``limit`` drawn at random (as ``eval --limit``)."""
    try:
        import torch  # lazy: torch is optional (torch-free bench on a Jetson)
    except ImportError:
        return _read_folder(source.bundle, Path(data), limit)
    from torch.utils.data import DataLoader

    from msvit_edge.data import open_dataset, random_subset  # lazy: imports torch

    vit = source.config.vit
    dataset = random_subset(open_dataset(data, "test", vit.img_size, vit.mean, vit.std), limit)  # never empty
    batches = list(DataLoader(dataset, batch_size=256))
    return torch.cat([x for x, _ in batches]).numpy(), torch.cat([y for _, y in batches]).numpy().astype(np.int64)


def _read_folder(bundle: Bundle, root: Path, limit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Without PyTorch (a Jetson): an ImageFolder tree, loaded and resized as training did (``Bundle.load_images``)."""
    if not root.is_dir():
        raise MsvitEdgeError("without PyTorch, --data takes an ImageFolder tree (root/<class>/<images>)", root)
    samples, _ = folder_samples(root / "test" if (root / "test").is_dir() else root)
    keep = np.sort(np.random.default_rng(seed).permutation(len(samples))[:limit])
    paths, labels = zip(*(samples[i] for i in keep), strict=True)
    return bundle.preprocess(bundle.load_images(list(paths))), np.asarray(labels, np.int64)
