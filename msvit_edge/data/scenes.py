"""The "Fashion-MNIST scenes" demo task: each item on a larger canvas with a smooth background, rendered on the fly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from msvit_edge.bundle.preprocess import check_stats, normalise
from msvit_edge.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist
from msvit_edge.errors import MsvitEdgeError

# Item pixels dimmer than this (out of 255) are treated as empty: Fashion-MNIST has faint specks around the object,
# and zeroing them both in the render and in box() makes the box exactly the region the item changed.
_ITEM_THRESHOLD = 16
_CLUTTER_SIZES = (6, 10)  # fragment side range in px, inclusive
_CLUTTER_CONTRAST = 0.45  # fragments are pasted with this fraction of an item's opacity


@dataclass(frozen=True)
class SceneConfig:
    """How Fashion-MNIST items are rendered into larger scenes.

    Attributes:
        canvas: Side of the square scene, px.
        item_scale: Resize factor of the 28x28 item. 1.0 keeps it native so that a coarse token (a 2x patch region
            downsampled to one patch) sees the item at half the resolution of fine tokens.
        noise: Std of the gaussian pixel noise, in 0..1 units.
        clutter: Number of small low-contrast fragments of other items pasted at random places (0 = none).
        seed: Seed of the scene layout; scene i is a function of (seed, i) only.
    """

    canvas: int = 80
    item_scale: float = 1.0
    noise: float = 0.03
    clutter: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.canvas <= 0 or self.item_scale <= 0 or min(self.noise, self.clutter, self.seed) < 0:
            raise MsvitEdgeError(f"invalid {self}: canvas and item_scale must be > 0, noise, clutter and seed >= 0")


class FashionMNISTScenes(Dataset):
    """Fashion-MNIST items placed at random on a smooth coloured background: most of each scene is easy.

    Scene i shows item i (label i) composited, with its intensity as opacity and a random bright colour, at a random
    position fully inside a linear colour gradient, plus gaussian noise and optional clutter fragments of other
    items behind it. Each part of a scene draws from its own generator seeded by (config.seed, i), so the layout can
    be recomputed cheaply (``box``) and never depends on the item's pixels.

    Args:
        images: uint8 items [N, H, W], bright object on black.
        labels: Integer labels [N].
        config: Scene rendering settings.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        config: SceneConfig = SceneConfig(),
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ):
        _check_items(images, labels, config)
        self.images, self.labels, self.config = images, labels, config
        check_stats(mean, std, 3)
        self.mean, self.std = tuple(mean), tuple(std)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Re-render every scene (new positions, backgrounds, colours) for training epoch ``epoch``; 0 = as built."""
        self.epoch = epoch

    @classmethod
    def from_split(
        cls,
        split: str = "train",
        root: str | Path | None = None,
        config: SceneConfig = SceneConfig(),
        **kw: Sequence[float],
    ) -> FashionMNISTScenes:
        """Builds scenes from a Fashion-MNIST split (see ``load_fashion_mnist``); ``kw`` goes to ``__init__``."""
        images, labels = load_fashion_mnist(root, split)
        return cls(images, labels, config, **kw)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        scene = self.render(index).transpose(2, 0, 1)  # [H, W, 3] -> [3, H, W]
        return torch.from_numpy(normalise(scene, self.mean, self.std)), int(self.labels[index])

    def render(self, index: int) -> np.ndarray:
        """Returns scene ``index`` before normalisation: float32 [canvas, canvas, 3] in 0..1."""
        place_rng, background_rng, colour_rng, clutter_rng = _scene_rngs(self.config.seed, index, self.epoch)
        scene = _gradient(background_rng, self.config.canvas)
        for _ in range(self.config.clutter):
            self._paste_fragment(scene, index, clutter_rng)
        alpha = _item_alpha(self._item(index))
        x0, y0 = self._position(place_rng, alpha.shape)
        _composite(scene, alpha, _item_colour(colour_rng), x0, y0)
        scene += background_rng.normal(0.0, self.config.noise, scene.shape)
        return np.clip(scene, 0.0, 1.0, out=scene).astype(np.float32)

    def box(self, index: int) -> tuple[int, int, int, int]:
        """Tight box of item ``index`` in its scene, without rendering it.

        Returns:
            (x0, y0, x1, y1) in canvas px, ends exclusive, around the item's visible pixels; an empty box at the
            item's position if the item has none.
        """
        alpha = _item_alpha(self._item(index))
        x0, y0 = self._position(_scene_rngs(self.config.seed, index, self.epoch)[0], alpha.shape)
        rows, cols = np.nonzero(alpha)
        if rows.size == 0:
            return x0, y0, x0, y0
        return x0 + int(cols.min()), y0 + int(rows.min()), x0 + int(cols.max()) + 1, y0 + int(rows.max()) + 1

    def mask(self, index: int) -> np.ndarray:
        """Per-pixel labels of scene ``index``, without rendering it: uint8 [canvas, canvas], 0 for the background and
        1 + the item's label where the item's own pixels are visible (the pixels ``box`` bounds); clutter is
        background."""
        alpha = _item_alpha(self._item(index))
        x0, y0 = self._position(_scene_rngs(self.config.seed, index, self.epoch)[0], alpha.shape)
        labels = np.zeros((self.config.canvas, self.config.canvas), np.uint8)
        h, w = alpha.shape
        labels[y0 : y0 + h, x0 : x0 + w][alpha > 0] = 1 + int(self.labels[index])
        return labels

    def _item(self, index: int) -> np.ndarray:
        """uint8 item [h, w], resized by config.item_scale."""
        item = self.images[index]
        if self.config.item_scale == 1.0:
            return item
        h, w = (max(1, round(s * self.config.item_scale)) for s in item.shape)
        return np.asarray(Image.fromarray(item).resize((w, h), Image.Resampling.BILINEAR))

    def _position(self, rng: np.random.Generator, item_shape: tuple[int, ...]) -> tuple[int, int]:
        """Top-left corner (x0, y0) of the item's frame, uniform over positions fully inside the canvas."""
        y0 = int(rng.integers(0, self.config.canvas - item_shape[0] + 1))
        x0 = int(rng.integers(0, self.config.canvas - item_shape[1] + 1))
        return x0, y0

    def _paste_fragment(self, scene: np.ndarray, index: int, rng: np.random.Generator) -> None:
        """Pastes a faint square crop of another (native-size) item, centred on one of its visible pixels."""
        other = (index + 1 + int(rng.integers(len(self) - 1))) % len(self)  # any index but ``index``
        alpha = _item_alpha(self.images[other])
        side = min(int(rng.integers(_CLUTTER_SIZES[0], _CLUTTER_SIZES[1] + 1)), *alpha.shape, self.config.canvas)
        rows, cols = np.nonzero(alpha)
        if rows.size == 0:
            return
        k = int(rng.integers(rows.size))
        top = int(np.clip(rows[k] - side // 2, 0, alpha.shape[0] - side))
        left = int(np.clip(cols[k] - side // 2, 0, alpha.shape[1] - side))
        crop = alpha[top : top + side, left : left + side] * _CLUTTER_CONTRAST
        y0, x0 = (int(rng.integers(0, self.config.canvas - s + 1)) for s in crop.shape)
        _composite(scene, crop, _item_colour(rng), x0, y0)


def _check_items(images: np.ndarray, labels: np.ndarray, config: SceneConfig) -> None:
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels):
        raise MsvitEdgeError(f"scenes need uint8 items [N, H, W] and N labels, got {images.shape} and {labels.shape}")
    if config.clutter and len(images) < 2:
        raise MsvitEdgeError("clutter needs at least 2 items (fragments come from other items)")
    side = max(round(s * config.item_scale) for s in images.shape[1:])
    if side > config.canvas:
        raise MsvitEdgeError(f"scaled item ({side} px) does not fit the {config.canvas} px scene canvas")


def _scene_rngs(seed: int, index: int, epoch: int = 0) -> list[np.random.Generator]:
    """Independent generators for placement, background (+noise), item colour and clutter of one scene."""
    entropy = [seed, index] if epoch == 0 else [seed, index, epoch]
    return [np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(4)]


def _gradient(rng: np.random.Generator, canvas: int) -> np.ndarray:
    """Linear gradient [canvas, canvas, 3] between two mid-dark colours along a random direction."""
    start = rng.uniform(0.1, 0.55, size=3)
    end = np.clip(start + rng.uniform(-0.25, 0.25, size=3), 0.05, 0.65)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:canvas, 0:canvas] / max(canvas - 1, 1)
    t = xs * np.cos(angle) + ys * np.sin(angle)  # [canvas, canvas] position along the direction
    t = (t - t.min()) / max(np.ptp(t), 1e-9)
    return start + (end - start) * t[..., None]


def _item_colour(rng: np.random.Generator) -> np.ndarray:
    """A bright RGB colour, white a third of the time: items must stand out from the mid-dark background."""
    return np.ones(3) if rng.random() < 1 / 3 else rng.uniform(0.7, 1.0, size=3)


def _item_alpha(item: np.ndarray) -> np.ndarray:
    """Opacity [h, w] in 0..1 from intensity, zero below the visibility threshold."""
    return np.where(item >= _ITEM_THRESHOLD, item / 255.0, 0.0)


def _composite(scene: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x0: int, y0: int) -> None:
    """Blends a flat ``colour`` into ``scene`` [H, W, 3] in place with opacity ``alpha`` [h, w] at (x0, y0)."""
    h, w = alpha.shape
    region = scene[y0 : y0 + h, x0 : x0 + w]
    region += alpha[..., None] * (colour - region)
