"""Users' segmentation data: ``root/images/<name>.{jpg,png}`` with ``root/masks/<name>.png``.

Names pair an image with its mask (subfolders too: ``images/a/b.jpg`` with ``masks/a/b.png``). A split may sit in
``root/<split>/{images,masks}`` or ``root/{images,masks}/<split>``; the test split also answers to ``val``. The class
names come from ``classes.txt`` (the split folder's, else the root's), or are the indices of the model's classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from msvit_edge.bundle.preprocess import IMAGE_EXTENSIONS, check_stats, open_rgb, preprocess
from msvit_edge.data.masks import CLASSES_FILE, IGNORE_INDEX, MaskClasses, read_classes, read_mask
from msvit_edge.errors import MsvitEdgeError

_SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}


def is_mask_folder(root: Path) -> bool:
    """Whether ``root`` holds this layout, at the top or per split."""
    tops = (root, *(root / s for names in _SPLIT_FOLDERS.values() for s in names))
    return any((t / "images").is_dir() and (t / "masks").is_dir() for t in tops)


def split_folders(root: Path, split: str) -> tuple[Path, Path]:
    """(images folder, masks folder) of ``split``; the whole folder, with a warning, for a test split it lacks."""
    for name in _SPLIT_FOLDERS[split]:
        for top, sub in (root / name, ""), (root, name):  # root/<split>/images or root/images/<split>
            images, masks = top / "images" / sub, top / "masks" / sub
            if images.is_dir() and masks.is_dir():
                return images, masks
    if not ((root / "images").is_dir() and (root / "masks").is_dir()):
        raise MsvitEdgeError(f"no images/ and masks/ folders for the {split} split", root)
    if split == "test":
        warnings.warn(
            f"{root}: no test/ or val/ split, so the test split is every image of the folder, the same images a "
            "train split of it would use",
            stacklevel=4,
        )
    return root / "images", root / "masks"


class MaskFolderDataset(Dataset):
    """Image and mask pairs; yields the normalised image [3, S, S] and int64 labels [S, S] (``ignore_index`` where
    unlabelled).

    Both are brought to ``image_size`` as photos are (``msvit_edge.bundle.preprocess.load_image``: shorter side to S,
    centre crop), the image bicubic and the mask nearest. A mask is checked when it is loaded: size against its image,
    indices against the classes, colours against ``classes.txt``'s (``msvit_edge.data.masks``).

    Args:
        images: The images folder.
        masks: The masks folder beside it.
        image_size: Side of the output, px.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        classes: What the mask indices name (``find_classes``).
        ignore_index: Label of unlabelled pixels.
    """

    def __init__(
        self,
        images: Path,
        masks: Path,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        classes: MaskClasses,
        ignore_index: int = IGNORE_INDEX,
    ):
        check_stats(mean, std, 3)
        self.image_size, self.mean, self.std, self.ignore_index = image_size, tuple(mean), tuple(std), ignore_index
        self.mask_classes = classes
        self.classes = list(self.mask_classes.names)
        self.samples = pairs(Path(images), Path(masks))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.samples[index]
        image = open_rgb(image_path)
        labels = read_mask(mask_path, self.mask_classes, self.ignore_index)
        if labels.shape[::-1] != image.size:
            h, w = labels.shape
            raise MsvitEdgeError(
                f"mask is {w}x{h} but its image {image_path.name} is {image.size[0]}x{image.size[1]}", mask_path
            )
        size = (self.image_size, self.image_size)
        pixels = np.asarray(ImageOps.fit(image, size, Image.Resampling.BICUBIC))  # load_image's rule, image open
        labels = np.asarray(ImageOps.fit(Image.fromarray(labels.astype(np.int32)), size, Image.Resampling.NEAREST))
        image_tensor = torch.from_numpy(preprocess(pixels[None], self.mean, self.std)[0])
        return image_tensor, torch.from_numpy(labels.astype(np.int64))


def find_classes(files: Sequence[Path], num_classes: int | None, root: Path) -> MaskClasses:
    """The first of ``files`` that exists, read; else ``num_classes`` classes named by their index.

    Args:
        files: Where a class-names file may be.
        num_classes: The model's classes: without a file, their count; with one, the most it may name.
        root: The data set, named in the error when neither says how many classes there are.
    """
    for file in files:
        if file.is_file():
            classes = read_classes(file)
            if num_classes is not None and len(classes.names) > num_classes:
                raise MsvitEdgeError(f"names {len(classes.names)} classes; the model has {num_classes} outputs", file)
            return classes
    if num_classes is None:
        raise MsvitEdgeError(f"how many classes? add a {CLASSES_FILE} (one class name per line)", root)
    return MaskClasses(tuple(str(i) for i in range(num_classes)))


def pairs(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """(image, mask) of every name, sorted; an image without its mask, or a mask without its image, is an error."""
    found = {}
    for path in _files(images):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise MsvitEdgeError(f"not an image file (expected one of {', '.join(sorted(IMAGE_EXTENSIONS))})", path)
        name = path.relative_to(images).with_suffix("")
        if name in found:
            raise MsvitEdgeError(
                f"two images named {name} ({found[name].name} too): which one does its mask label?", path
            )
        found[name] = path
    labelled = {}
    for path in _files(masks):
        name = path.relative_to(masks).with_suffix("")
        if path.suffix.lower() != ".png":
            raise MsvitEdgeError("masks must be PNG files (a lossy format would change class indices)", path)
        if name not in found:
            raise MsvitEdgeError(f"mask without an image: no {images.name}/{name}.{{jpg,png}}", path)
        labelled[name] = path
    for name, path in found.items():
        if name not in labelled:
            raise MsvitEdgeError(f"image without a mask: no {masks.name}/{name}.png", path)
    if not found:
        raise MsvitEdgeError("holds no images", images)
    return [(found[name], labelled[name]) for name in sorted(found)]


def _files(folder: Path) -> list[Path]:
    """Files under ``folder``, sorted, hidden ones (``.DS_Store``) and those in hidden folders left out."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
