"""Data sets: Fashion-MNIST IDX files, the "Fashion-MNIST scenes" demo task, ImageFolder trees and .npz archives.

Every data set yields ``(image, label)`` with ``image`` a float32 tensor [3, S, S] normalised by
``msvit_edge.bundle.preprocess.normalise`` and exposes ``.classes`` (class names, index = label); a segmentation data
set's label is an int64 label map [S, S] and it exposes ``.ignore_index`` too. Problems with the user's files raise
:class:`~msvit_edge.errors.MsvitEdgeError` naming the offending file. One concern per module:

- ``idx``: Fashion-MNIST's IDX files (numpy only);
- ``scenes``: the scene generator and its data set; ``scene_masks``: the same scenes with per-pixel labels;
- ``boxes``: which coarse regions an object's box touches, and which hold a class boundary;
- ``image_folder`` and ``npz``: the user's own images;
- ``masks`` (mask PNGs and class-names files) and ``mask_folder``: the user's own images with masks;
- ``spec``: ``open_dataset`` and ``open_segmentation_dataset``, what a ``--data`` argument names;
- ``subsets``: seeded random subsets and held-out splits.
"""

from msvit_edge.bundle.metrics import boundary_regions
from msvit_edge.data.boxes import region_overlap
from msvit_edge.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist
from msvit_edge.data.image_folder import IMAGE_EXTENSIONS, ImageFolderDataset
from msvit_edge.data.mask_folder import MaskFolderDataset
from msvit_edge.data.masks import IGNORE_INDEX, MaskClasses, read_classes, read_mask
from msvit_edge.data.npz import NpzDataset
from msvit_edge.data.scene_masks import SCENE_MASK_CLASSES, FashionMNISTSceneMasks
from msvit_edge.data.scenes import FashionMNISTScenes, SceneConfig
from msvit_edge.data.spec import SCENES_SPEC, data_name, open_dataset, open_segmentation_dataset, segmentation_classes
from msvit_edge.data.subsets import random_subset, split, unwrap

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IGNORE_INDEX",
    "IMAGE_EXTENSIONS",
    "SCENES_SPEC",
    "SCENE_MASK_CLASSES",
    "FashionMNISTSceneMasks",
    "FashionMNISTScenes",
    "ImageFolderDataset",
    "MaskClasses",
    "MaskFolderDataset",
    "NpzDataset",
    "SceneConfig",
    "boundary_regions",
    "data_name",
    "load_fashion_mnist",
    "open_dataset",
    "open_segmentation_dataset",
    "random_subset",
    "read_classes",
    "read_mask",
    "region_overlap",
    "segmentation_classes",
    "split",
    "unwrap",
]
