"""Datasets: Fashion-MNIST IDX files, the "Fashion-MNIST scenes" demo task, ImageFolder trees and .npz archives.

Every dataset yields ``(image, label)`` with ``image`` a float32 tensor [3, S, S] normalised as ``(x - mean) / std``
(x in 0..1) and exposes ``.classes`` (class names, index = label). Problems with the user's files raise
:class:`~msvit_edge.errors.MsvitEdgeError` naming the offending file.
"""

from __future__ import annotations

import gzip
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Subset

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.preprocess import load_image, open_rgb, preprocess

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SCENES_SPEC = "fashion-mnist-scenes"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 2051, 2049
# Item pixels dimmer than this (out of 255) are treated as empty: Fashion-MNIST has faint specks around the object,
# and zeroing them both in the render and in box() makes the box exactly the region the item changed.
_ITEM_THRESHOLD = 16
_CLUTTER_SIZES = (6, 10)  # fragment side range in px, inclusive
_CLUTTER_CONTRAST = 0.45  # fragments are pasted with this fraction of an item's opacity


# ---------------------------------------------------------------------------------------------------------------------
# Fashion-MNIST IDX files


def load_fashion_mnist(root: str | Path | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of Fashion-MNIST from its IDX files (gzipped or not).

    Args:
        root: Folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; defaults to
            ``FASHION_MNIST_DIR`` (the Debian package dataset-fashion-mnist).
        split: "train" (60000 items) or "test" (10000 items, the t10k files).

    Returns:
        uint8 images [N, 28, 28] (bright object on black) and int64 labels [N] in 0..9.

    Raises:
        MsvitEdgeError: Missing folder or file, bad magic number, truncated file, or image/label count mismatch.
    """
    if split not in _IDX_PREFIX:
        raise MsvitEdgeError(f"unknown Fashion-MNIST split {split!r}; expected 'train' or 'test'")
    folder = _fashion_mnist_root(root)
    prefix = _IDX_PREFIX[split]
    images_path = _idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC, ndim=3)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, ndim=1).astype(np.int64)
    if len(images) != len(labels):
        raise MsvitEdgeError(f"{len(labels)} labels but {images_path.name} has {len(images)} images", labels_path)
    return images, labels


def _fashion_mnist_root(root: str | Path | None) -> Path:
    folder = FASHION_MNIST_DIR if root is None else Path(root)
    if folder.is_dir():
        return folder
    if root is None:
        raise MsvitEdgeError(
            "Fashion-MNIST not found; install it with `apt-get install dataset-fashion-mnist` "
            "or pass --data with a folder of Fashion-MNIST IDX files",
            folder,
        )
    raise MsvitEdgeError("folder not found", folder)


def _idx_file(folder: Path, name: str) -> Path:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise MsvitEdgeError(f"missing Fashion-MNIST file {name}[.gz]", folder / name)


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parses an unsigned-byte IDX file: a big-endian int32 magic, ndim int32 sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; a cut-off gzip stream raises EOFError
        raise MsvitEdgeError(f"cannot read IDX file ({err})", path) from err
    header_size = 4 * (1 + ndim)
    if len(raw) < header_size:
        raise MsvitEdgeError(f"truncated IDX file: {len(raw)} bytes, shorter than the header", path)
    found_magic, *shape = np.frombuffer(raw, dtype=">i4", count=1 + ndim)
    if found_magic != magic:
        raise MsvitEdgeError(f"not an IDX file of this kind: magic number {found_magic}, expected {magic}", path)
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    if data.size != np.prod(shape):
        raise MsvitEdgeError(f"truncated IDX file: header says shape {tuple(shape)} but has {data.size} bytes", path)
    return data.reshape(shape)


# ---------------------------------------------------------------------------------------------------------------------
# Fashion-MNIST scenes


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
        self.mean, self.std = _norm_stats(mean, std)
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
        scene = torch.from_numpy(self.render(index)).permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]
        return (scene - self.mean) / self.std, int(self.labels[index])

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


def region_overlap(box: Sequence[int], canvas: int, region: int) -> np.ndarray:
    """Which coarse regions of a square canvas a box overlaps.

    Args:
        box: (x0, y0, x1, y1) in px, ends exclusive.
        canvas: Side of the canvas, px.
        region: Side of a coarse region, px; pixels past the last whole region are ignored.

    Returns:
        bool [G, G] with G = canvas // region; [r, c] covers rows r*region.. and columns c*region.. of the canvas.
    """
    if region <= 0:
        raise ValueError(f"region must be positive, got {region}")
    x0, y0, x1, y1 = box
    starts = np.arange(canvas // region) * region
    rows = (starts < y1) & (starts + region > y0)
    cols = (starts < x1) & (starts + region > x0)
    return rows[:, None] & cols[None, :]


# ---------------------------------------------------------------------------------------------------------------------
# ImageFolder trees


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
        _norm_stats(mean, std)  # checked; ``preprocess`` normalises
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


# ---------------------------------------------------------------------------------------------------------------------
# .npz archives


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
        self.mean, self.std = _norm_stats(mean, std)
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
        return (image - self.mean) / self.std, int(self.labels[index])


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


# ---------------------------------------------------------------------------------------------------------------------
# Dispatch


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
        image_size: Side of the model's input images, px; must equal the scene canvas for scenes.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        scene: Scene settings (default ``SceneConfig()``).
        skip_corrupt: For ImageFolder trees, skip unreadable images with a warning instead of failing.

    Returns:
        A dataset of (float32 [3, image_size, image_size], label) pairs with a ``classes`` attribute; never empty.
    """
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
        return ImageFolderDataset(folder, image_size, mean, std, skip_corrupt=skip_corrupt)
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
) -> FashionMNISTScenes:
    config = scene or SceneConfig()
    if image_size != config.canvas:
        raise MsvitEdgeError(f"image size {image_size} must equal the scene canvas {config.canvas} for {SCENES_SPEC}")
    return FashionMNISTScenes.from_split(split, root, config, mean=mean, std=std)


def _norm_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as [3, 1, 1] tensors that broadcast over [3, H, W] images."""
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise MsvitEdgeError(f"mean and std need 3 values each with std > 0, got mean={mean}, std={std}")
    return torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), torch.tensor(std, dtype=torch.float32).view(3, 1, 1)


def random_subset(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """``n`` items drawn without replacement by a seeded permutation (all items when ``n`` is None or too large).

    Data sets may be ordered (an ImageFolder is sorted by class), so "the first n" would miss whole classes.
    """
    if n is None or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return _subset(dataset, order[:n].tolist())


def split(dataset: Dataset, held_out: int, seed: int = 0) -> tuple[Subset, Subset]:
    """(rest, held-out) partition of ``dataset`` by a seeded permutation; the held-out part is ``held_out`` items."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return _subset(dataset, order[held_out:]), _subset(dataset, order[:held_out])


def unwrap(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The data set a view from ``split``/``random_subset`` indexes, and the items it views (all, for no view).

    Views never nest, so this one level reaches the scenes' ``set_epoch`` and ``box``.
    """
    if isinstance(dataset, Subset):
        return dataset.dataset, list(dataset.indices)
    return dataset, list(range(len(dataset)))


def _subset(dataset: Dataset, indices: list[int]) -> Subset:
    """A view of ``indices`` of ``dataset`` that indexes the underlying data set directly (see ``unwrap``)."""
    base, items = unwrap(dataset)
    return Subset(base, [items[i] for i in indices])
