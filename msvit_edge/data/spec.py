"""What a ``--data`` argument names: the demo scenes, a folder of IDX files, an .npz or an ImageFolder tree; for a
segmentation model, the scenes with masks or a folder of images and masks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from msvit_edge.data.image_folder import ImageFolderDataset
from msvit_edge.data.mask_folder import MaskFolderDataset, find_classes, is_mask_folder, split_folders
from msvit_edge.data.masks import CLASSES_FILE, IGNORE_INDEX, read_classes
from msvit_edge.data.npz import NpzDataset
from msvit_edge.data.scene_masks import SCENE_MASK_CLASSES, FashionMNISTSceneMasks
from msvit_edge.data.scenes import FashionMNISTScenes, SceneConfig
from msvit_edge.errors import MsvitEdgeError, UsageError

SCENES_SPEC = "fashion-mnist-scenes"
SPLITS = ("train", "test")


def data_name(spec: str | Path) -> str:
    """What a manifest records of a ``--data`` argument: a named data set as it is, a file or folder by its name
    (where it lay on one machine means nothing on another)."""
    return str(spec) if str(spec) == SCENES_SPEC else Path(spec).name


def open_dataset(
    spec: str | Path,
    split: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scene: SceneConfig | None = None,
    skip_corrupt: bool = False,
) -> Dataset:
    """Opens the dataset a ``--data`` argument names.

    Args:
        spec: "fashion-mnist-scenes" (the demo, from ``FASHION_MNIST_DIR``); a folder of Fashion-MNIST IDX files
            (scenes too); an .npz file; or an ImageFolder tree. For a folder that has a ``split`` subfolder
            (``root/train``, ``root/test``) that subfolder is used, else the folder itself for every split; an .npz
            serves every split.
        split: "train" or "test".
        image_size: Side of the model's input images, px; scenes are rendered at it (a given ``scene`` must match).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        scene: Scene settings (default ``SceneConfig(canvas=image_size)``).
        skip_corrupt: For ImageFolder trees, skip unreadable images with a warning instead of failing.

    Returns:
        A dataset of (float32 [3, image_size, image_size], label) pairs with a ``classes`` attribute; never empty.
    """
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    dataset = _open(spec, split, image_size, mean, std, scene, skip_corrupt)
    if len(dataset) == 0:
        skipped = " readable" if skip_corrupt else ""
        raise MsvitEdgeError(f"holds no{skipped} images (split {split!r})", spec)
    return dataset


def _open(
    spec: str | Path,
    split: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scene: SceneConfig | None,
    skip_corrupt: bool,
) -> Dataset:
    path = Path(spec)
    if str(spec) == SCENES_SPEC or _has_idx_files(path):
        return _open_scenes(None if str(spec) == SCENES_SPEC else path, split, image_size, mean, std, scene)
    if path.suffix.lower() == ".npz":
        return NpzDataset(path, image_size, mean, std)
    if path.is_dir():
        folder = path / split if (path / split).is_dir() else path
        dataset = ImageFolderDataset(folder, image_size, mean, std, skip_corrupt=skip_corrupt)
        if folder == path and split == "test":
            warnings.warn(
                f"{path}: no test/ subfolder, so the test split is every image of the folder, the same "
                "images a train split of it would use",
                stacklevel=4,
            )
        return dataset
    raise MsvitEdgeError(
        f"not a dataset: expected {SCENES_SPEC!r}, a folder of Fashion-MNIST IDX files, an .npz file "
        "or an ImageFolder tree",
        path,
    )


def _has_idx_files(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*-idx[13]-ubyte*"))


def _open_scenes(
    root: Path | None,
    split: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scene: SceneConfig | None,
    kind: type[FashionMNISTScenes] = FashionMNISTScenes,
) -> FashionMNISTScenes:
    config = scene or SceneConfig(canvas=image_size)  # scenes render at any model's size
    if image_size != config.canvas:
        raise MsvitEdgeError(f"image size {image_size} must equal the scene canvas {config.canvas} for {SCENES_SPEC}")
    return kind.from_split(split, root, config, mean=mean, std=std)


def open_segmentation_dataset(
    spec: str | Path,
    split: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    scene: SceneConfig | None = None,
) -> Dataset:
    """Opens the segmentation data set a ``--data`` argument names.

    Args:
        spec: "fashion-mnist-scenes" or a folder of Fashion-MNIST IDX files (the scenes with per-pixel labels,
            ``FashionMNISTSceneMasks``), or a folder of images and masks (``msvit_edge.data.mask_folder``).
        split: "train" or "test".
        image_size: Side of the model's input images, px.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        num_classes: The model's classes (see ``find_classes``).
        ignore_index: Label of unlabelled pixels in the masks.
        scene: Scene settings, as for ``open_dataset``.

    Returns:
        A dataset of (float32 [3, S, S], int64 labels [S, S]) pairs with ``classes`` and ``ignore_index``; never empty.
    """
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = Path(spec)
    if str(spec) == SCENES_SPEC or _has_idx_files(path):
        root = None if str(spec) == SCENES_SPEC else path
        return _open_scenes(root, split, image_size, mean, std, scene, FashionMNISTSceneMasks)
    if not (path.is_dir() and is_mask_folder(path)):
        raise MsvitEdgeError(
            f"not a segmentation dataset: expected {SCENES_SPEC!r}, a folder of Fashion-MNIST IDX files or a folder "
            "with images/<name>.{jpg,png} and masks/<name>.png",
            path,
        )
    images, masks = split_folders(path, split)
    classes = find_classes((images.parent / CLASSES_FILE, path / CLASSES_FILE), num_classes, path)
    return MaskFolderDataset(images, masks, image_size, mean, std, classes, ignore_index)


def segmentation_classes(spec: str | Path) -> tuple[str, ...] | None:
    """The classes a segmentation ``--data`` names, where it names them (the scenes, a ``classes.txt``)."""
    path = Path(spec)
    if str(spec) == SCENES_SPEC or _has_idx_files(path):
        return SCENE_MASK_CLASSES
    files = [path / CLASSES_FILE, *(path / s / CLASSES_FILE for s in ("train", "test", "val"))]
    return next((read_classes(f).names for f in files if f.is_file()), None)
