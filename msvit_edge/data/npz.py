""".npz archives of images and labels, in any common layout, uint8 or float."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from msvit_edge.bundle.preprocess import check_stats, normalise
from msvit_edge.errors import MsvitEdgeError


class NpzDataset(Dataset):
    """Images and labels from an .npz archive.

    ``images`` may be [N, H, W] (gray), [N, H, W, C] or [N, C, H, W] with C in {1, 3}, uint8 0..255 or float 0..1;
    ``labels`` are N non-negative integers. An optional ``classes`` string array names the labels. Images whose
    size is not ``image_size`` are resized (bilinear, antialiased, aspect ratio not kept).

    Args:
        path: The .npz file.
        image_size: Side of the output images, px.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
    """

    def __init__(self, path: str | Path, image_size: int, mean: Sequence[float], std: Sequence[float]):
        self.path = Path(path)
        self.image_size = image_size
        check_stats(mean, std, 3)
        self.mean, self.std = tuple(mean), tuple(std)
        arrays = _load_npz(self.path)
        self.images = _images_nchw(arrays["images"], self.path)  # [N, C, H, W], uint8 or float
        self.labels = _npz_labels(arrays["labels"], len(self.images), self.path)
        count = int(self.labels.max(initial=-1)) + 1
        self.classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(i) for i in range(count)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].float()
        if self.images.dtype == torch.uint8:
            image = image / 255.0
        if image.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        image = image.expand(3, -1, -1)  # gray [1, S, S] -> [3, S, S]; RGB unchanged
        return torch.from_numpy(normalise(image.numpy(), self.mean, self.std)), int(self.labels[index])


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise MsvitEdgeError("file not found", path)
    if not zipfile.is_zipfile(path):
        raise MsvitEdgeError("not an .npz archive (not a zip file)", path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise MsvitEdgeError(f"cannot read .npz archive ({err})", path) from err
    missing = [key for key in ("images", "labels") if key not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "none"
        raise MsvitEdgeError(f"missing array(s) {', '.join(missing)}; the archive has: {found}", path)
    return arrays


def _images_nchw(images: np.ndarray, path: Path) -> torch.Tensor:
    """[N, H, W], [N, H, W, C] or [N, C, H, W] (C in {1, 3}) -> tensor [N, C, H, W] of the same dtype."""
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise MsvitEdgeError(f"images must be uint8 (0..255) or float (0..1), got {images.dtype}", path)
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():  # NaN passes any range test
        raise MsvitEdgeError(f"float images hold {np.count_nonzero(~np.isfinite(images))} NaN or infinite values", path)
    if np.issubdtype(images.dtype, np.floating) and images.size and (images.min() < 0 or images.max() > 1):
        raise MsvitEdgeError(f"float images must be in 0..1, got {images.min():g}..{images.max():g}", path)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    elif images.ndim != 4 or images.shape[1] not in (1, 3):
        raise MsvitEdgeError(f"images must be [N,H,W], [N,H,W,C] or [N,C,H,W] with C 1 or 3, got {images.shape}", path)
    return torch.from_numpy(np.ascontiguousarray(images))


def _npz_labels(labels: np.ndarray, count: int, path: Path) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise MsvitEdgeError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}", path)
    if len(labels) != count:
        raise MsvitEdgeError(f"{len(labels)} labels for {count} images", path)
    if labels.size and labels.min() < 0:
        raise MsvitEdgeError(f"labels must be >= 0, found {labels.min()}", path)
    return labels.astype(np.int64)
