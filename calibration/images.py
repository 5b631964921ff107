"""Calibration images from a ``--data``/``--calib`` argument, as uint8 pixels. Needs PyTorch (the data loaders).

Images are drawn from a seeded permutation of the split, so calibration (``offset`` 0) and a held-out comparison
set (``offset`` = the calibration count) never share an image, and an ordered data set (an ImageFolder sorted by
class) still gives every class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle, dense
from msvit_edge.bundle.preprocess import to_uint8
from msvit_edge.errors import MsvitEdgeError


def default_data(bundle: Bundle) -> str:
    """The data the bundle's buckets were planned on (its training split is the default calibration set), where a
    name says where it is: the demo scenes, or a path an older bundle recorded and that exists here."""
    from msvit_edge.data import SCENES_SPEC  # lazy: msvit_edge.data imports torch

    calib = bundle.record.planned_on
    if calib is None:
        raise MsvitEdgeError(
            "the bundle does not record the data its buckets were planned on: pass the calibration images with --calib",
            bundle.path,
        )
    if calib == SCENES_SPEC or (Path(calib).is_absolute() and Path(calib).exists()):
        return calib
    raise MsvitEdgeError(
        f"the bundle's buckets were planned on {calib!r}, and a bundle records no paths: pass the calibration "
        "images with --calib",
        bundle.path,
    )


def load_images(
    bundle: Bundle, data: str | None = None, n: int = 512, offset: int = 0, split: str = "train", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` images of a data set at the bundle's size, as uint8 [n, H, W, 3], and their labels [n] (a
    segmentation bundle's: label maps [n, H, W]).

    A split with fewer than ``offset + n`` images gives what it has (``check_images`` refuses too few).

    Args:
        bundle: The export bundle (its preprocessing decides size and normalisation).
        data: Any form ``train``/``eval`` take; None: the data the bundle was planned on.
        n: How many images.
        offset: Where in the seeded permutation to start.
        split: "train" (calibration, method comparison) or "test" (final evaluation only).
        seed: The permutation's seed.
    """
    import torch  # lazy: torch is heavy, and optional (a Jetson has none)
    from torch.utils.data import DataLoader, Subset  # lazy: torch

    pre = bundle.record.preprocessing
    dataset = _open(bundle, data or default_data(bundle), split)
    if offset >= len(dataset):
        raise MsvitEdgeError(f"the {split} split has {len(dataset)} images, none from image {offset} on")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[offset : offset + n]
    images, labels = [], []
    for x, y in DataLoader(Subset(dataset, order.tolist()), batch_size=256):
        images.append(to_uint8(x.numpy(), pre.mean, pre.std))
        labels.append(y.numpy())
    labels = np.concatenate(labels).astype(np.int64)
    return np.concatenate(images), dense.mark_ignored(labels, dataset.ignore_index) if bundle.dense else labels


def _open(bundle: Bundle, data: str, split: str):
    """The data set as the bundle's task reads it (a segmenter's with label maps, its masks' unlabelled value the
    one its export was told)."""
    from msvit_edge.data import open_dataset, open_segmentation_dataset  # lazy: msvit_edge.data imports torch

    pre = bundle.record.preprocessing
    if not bundle.dense:
        return open_dataset(data, split, pre.size, pre.mean, pre.std)
    classes = bundle.record.model["vit"]["num_classes"]
    return open_segmentation_dataset(data, split, pre.size, pre.mean, pre.std, classes, bundle.ignore_index)
