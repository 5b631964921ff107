"""The demo's segmentation task: Fashion-MNIST scenes with per-pixel labels from the items' own pixels."""

from __future__ import annotations

import torch

from msvit_edge.data.idx import FASHION_MNIST_CLASSES
from msvit_edge.data.masks import IGNORE_INDEX
from msvit_edge.data.scenes import FashionMNISTScenes

SCENE_MASK_CLASSES = ("background", *FASHION_MNIST_CLASSES)  # label 1 + k: Fashion-MNIST class k


class FashionMNISTSceneMasks(FashionMNISTScenes):
    """The same scenes (generator, seeds, splits, per-epoch re-rendering) with a label map in place of the label.

    Yields ``(image, mask)``: the normalised scene [3, S, S] and int64 labels [S, S] (``FashionMNISTScenes.mask``):
    11 classes, the background 0 and item class k as 1 + k. No pixel is ignored; ``ignore_index`` is the one losses
    and metrics are told, as for a user's folder.
    """

    classes = SCENE_MASK_CLASSES
    ignore_index = IGNORE_INDEX

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, _ = super().__getitem__(index)
        return image, torch.from_numpy(self.mask(index).astype("int64"))
