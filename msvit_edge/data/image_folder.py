"""ImageFolder trees: ``root/<class name>/**/*.jpg``, loaded as deployed machines load photos."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.preprocess import check_stats, load_image, open_rgb, preprocess

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class ImageFolderDataset(Dataset):
    """Images in ``root/<class name>/**/*.{jpg,jpeg,png,bmp,webp}``; classes are the sorted subfolder names.

    Any size and mode is accepted: images are loaded by ``msvit_edge.preprocess.load_image`` (shorter side to
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
        self.classes = _class_folders(self.root)
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in _class_images(self.root / name, skip_corrupt)
        ]
        if skip_corrupt:
            self.samples = _drop_corrupt(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        pixels = load_image(path, self.image_size)[None]  # uint8 [1, S, S, 3]
        return torch.from_numpy(preprocess(pixels, self.mean, self.std)[0]), label


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise MsvitEdgeError("dataset folder not found", root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name))
    if not classes:
        raise MsvitEdgeError("no class subfolders (expected root/<class name>/<images>)", root)
    return classes


def _class_images(folder: Path, skip_other: bool = False) -> list[Path]:
    """Image files under a class folder, sorted; a file that is not an image raises, or is skipped with a warning."""
    paths = []
    for path in sorted(folder.rglob("*")):
        if any(_is_hidden(part) for part in path.relative_to(folder).parts) or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            err = MsvitEdgeError(f"not an image file (expected one of {', '.join(sorted(IMAGE_EXTENSIONS))})", path)
            if not skip_other:
                raise err
            warnings.warn(f"skipping {err}", stacklevel=4)
            continue
        paths.append(path)
    if not paths:
        raise MsvitEdgeError("class folder has no images", folder)
    return paths


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
