"""ImageFolder trees: ``root/<class name>/**/*.jpg``, loaded as deployed machines load photos."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from msvit_edge.bundle.preprocess import IMAGE_EXTENSIONS, check_stats, folder_samples, load_image, open_rgb, preprocess
from msvit_edge.errors import MsvitEdgeError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset"]


class ImageFolderDataset(Dataset):
    """Images in ``root/<class name>/**/*.{jpg,jpeg,png,bmp,webp}``; classes are the sorted subfolder names.

    Any size and mode is accepted: images are loaded by ``msvit_edge.bundle.preprocess.load_image`` (shorter side to
    ``image_size``, bicubic, centre crop), the torch-free loader deployed machines use too. Hidden files and folders
    (``.DS_Store``) are ignored; any other non-image file is an error (skipped, with a warning, by ``skip_corrupt``).

    Args:
        root: The dataset folder.
        image_size: Side of the output images, px.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        skip_corrupt: Check every image at construction and skip, with a warning naming each, those PIL cannot
            read and files that are not images; otherwise a corrupt image raises when it is loaded.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        skip_corrupt: bool = False,
    ):
        self.root = Path(root)
        self.image_size = image_size
        check_stats(mean, std, 3)
        self.mean, self.std = tuple(mean), tuple(std)
        self.samples, self.classes = folder_samples(self.root, skip_corrupt)
        if skip_corrupt:
            self.samples = _drop_corrupt(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        pixels = load_image(path, self.image_size)[None]  # uint8 [1, S, S, 3]
        return torch.from_numpy(preprocess(pixels, self.mean, self.std)[0]), label


def _drop_corrupt(samples: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
    kept = []
    for path, label in samples:
        try:
            open_rgb(path)
        except MsvitEdgeError as err:
            warnings.warn(f"skipping {err}", stacklevel=3)
            continue
        kept.append((path, label))
    return kept
