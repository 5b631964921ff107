"""Pixels to the tokenizer's input with numpy and Pillow only: what training's loaders did, for deployed machines.

One home for the normalisation (``normalise``; ``preprocess`` from uint8 and its inverse ``to_uint8``), for what a
bundle manifest records about it (``record``) and for photo loading (``load_image``). ``msvit_edge.data``'s data sets
normalise with ``normalise`` and load photos with ``load_image`` too, so an image reaches a deployed model without
PyTorch exactly as it reached the model in training.

A bundle's manifest records the resize rule as data (``preprocessing.resize``, made by ``resize_rule``)::

    {"method": "shorter_side_bicubic_center_crop", "size": 224,       # image files (ImageFolder): load_image
     "npz": "bilinear_antialiased_stretch", "idx": "rendered_at_size"}  # what the array inputs did
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from msvit_edge.errors import MsvitEdgeError

# Image files: the shorter side scaled to S (bicubic), then the centre S x S crop, so objects keep their aspect ratio.
PHOTO_RESIZE = "shorter_side_bicubic_center_crop"
# .npz arrays that are not S x S: both sides stretched to S (bilinear, antialiased; aspect ratio not kept).
NPZ_RESIZE = "bilinear_antialiased_stretch"
# Fashion-MNIST IDX items: composed into scenes on an S x S canvas, never resized.
IDX_RESIZE = "rendered_at_size"
# What PIL raises for a damaged file; UnidentifiedImageError (not an image at all) is an OSError.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def resize_rule(size: int) -> dict:
    """The manifest's machine-readable record of how msvit-edge's loaders bring inputs to ``size`` x ``size``."""
    return {"method": PHOTO_RESIZE, "size": size, "npz": NPZ_RESIZE, "idx": IDX_RESIZE}


def load_image(path: str | Path | BinaryIO, size: int, name: str | None = None) -> np.ndarray:
    """An image file of any size and mode -> uint8 RGB [size, size, 3], as training loaded an ImageFolder.

    16-bit images are scaled to 8 bits, transparent pixels become black, EXIF rotation is applied; then the
    ``PHOTO_RESIZE`` rule. ``path`` may be an open binary file (bytes from a request), which errors call ``name``.
    """
    source = path if hasattr(path, "read") else Path(path)
    image = ImageOps.fit(open_rgb(source, name), (size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def load_images(paths: Sequence[str | Path], rule: dict) -> np.ndarray:
    """Image files -> uint8 [N, S, S, 3] by a manifest's resize ``rule`` (see ``resize_rule``)."""
    if rule.get("method") != PHOTO_RESIZE:
        raise MsvitEdgeError(f"unknown resize method {rule.get('method')!r} (this msvit-edge knows {PHOTO_RESIZE})")
    return np.stack([load_image(p, int(rule["size"])) for p in paths])


def open_rgb(path: Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Fully decodes an image file to 8-bit RGB; raises MsvitEdgeError naming the file (or ``name``) if PIL cannot."""
    where = name or path
    try:
        with Image.open(path) as image:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
    except UnidentifiedImageError as err:
        raise MsvitEdgeError("not a readable image (unknown or damaged format)", where) from err
    except _PIL_ERRORS as err:
        raise MsvitEdgeError(f"corrupt image ({err})", where) from err


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        # PIL's own conversion saturates at 255 instead of rescaling 0..65535.
        levels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def check_images(images: object, size: int, channels: int) -> None:
    """Refuse what the tokenizer cannot take, in one line: anything but uint8 [B, size, size, channels]."""
    if not isinstance(images, np.ndarray):
        raise MsvitEdgeError(f"images must be a numpy uint8 array [B, H, W, C], got a {type(images).__name__}")
    if images.dtype != np.uint8 or images.ndim != 4:
        hint = " (one image? add the batch dimension: images[None])" if images.ndim == 3 else ""
        raise MsvitEdgeError(f"images must be uint8 [B, H, W, C], got {images.dtype} {list(images.shape)}{hint}")
    if images.shape[1:] != (size, size, channels):
        _, h, w, c = images.shape
        raise MsvitEdgeError(
            f"images are {h}x{w} with {c} channels; the model takes {size}x{size} with {channels} "
            "(load photos with Bundle.load_images, which resizes them as training did)"
        )


def record(size: int, mean: Sequence[float], std: Sequence[float]) -> dict:
    """What a bundle manifest says about preprocessing (``preprocessing``): what ``preprocess`` does, as data."""
    return {
        "input": "uint8 RGB [B, H, W, C]",
        "size": size,
        "scale": 1 / 255,
        "mean": list(mean),
        "std": list(std),
        "layout": "NCHW float32",
        # what msvit-edge's loaders did to reach `size` (the reference images are stored at `size`)
        "resize": resize_rule(size),
    }


def check_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> None:
    """Refuse normalisation statistics that are not one mean and one positive std per channel."""
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise MsvitEdgeError(f"mean and std need {channels} values each with std > 0, got mean={mean}, std={std}")


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Images in 0..1, channels first ([C, H, W] or [B, C, H, W]) -> float32 ``(x - mean) / std`` per channel."""
    return (np.asarray(images, np.float32) - _per_channel(mean)) / _per_channel(std)


def preprocess(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 images [B, H, W, C] -> float32 [B, C, H, W], scaled to 0..1 and normalised per channel."""
    return normalise(images.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255), mean, std)


def to_uint8(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The inverse of ``preprocess``: normalised float [B, C, H, W] -> uint8 [B, H, W, C], rounded and clipped."""
    pixels = np.clip(images * _per_channel(std) + _per_channel(mean), 0, 1)
    return (pixels * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def _per_channel(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, np.float32)[:, None, None]  # [C, 1, 1]: broadcasts over [..., C, H, W]


# ---- ImageFolder trees (root/<class name>/**/<image>), listed without PyTorch --------------------------------------

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def folder_samples(root: Path, skip_other: bool = False) -> tuple[list[tuple[Path, int]], list[str]]:
    """(image path, label) of every image under ``root/<class>/``, and the class names (sorted subfolders)."""
    classes = _class_folders(root)
    samples = [(path, label) for label, name in enumerate(classes) for path in _class_images(root / name, skip_other)]
    return samples, classes


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
            warnings.warn(f"skipping {err}", stacklevel=5)
            continue
        paths.append(path)
    if not paths:
        raise MsvitEdgeError("class folder has no images", folder)
    return paths
