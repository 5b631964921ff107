"""Segmentation masks as users' data sets ship them: PNG label maps and an optional class-names file.

A mask holds one class index per pixel. Grayscale PNGs (8 or 16 bit) store the index itself. Palette PNGs store it
as the palette index, as Pascal VOC and MMSegmentation write them; where ``classes.txt`` gives the classes' colours,
the colours decide instead and a colour that is no class's is an error (a paint program that re-ordered the palette
would otherwise relabel pixels silently). RGB masks need those colours. ``ignore_index`` marks unlabelled pixels
(255 by default, VOC's border): a palette index equal to it is ignored whatever its colour.

``classes.txt``: one class per line, in index order; ``name`` or ``name:r,g,b`` (CVAT's ``labelmap.txt`` lines, whose
further ``:`` fields are ignored, read as they are); blank lines and ``#`` comments are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from msvit_edge.errors import MsvitEdgeError

IGNORE_INDEX = 255
CLASSES_FILE = "classes.txt"
_INDEX_MODES = frozenset({"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N"})
_COLOUR_MODES = frozenset({"RGB", "RGBA"})


@dataclass(frozen=True)
class MaskClasses:
    """The classes a mask's indices name, and their colours (RGB [K, 3] uint8) where the data set gives them."""

    names: tuple[str, ...]
    colours: np.ndarray | None = None


def read_classes(path: Path) -> MaskClasses:
    """A class-names file (see the module docstring); errors name the file and line."""
    names, colours = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, colour = line.partition(":")
        names.append(name.strip())
        colours.append(_colour(colour.partition(":")[0], path, number) if colour else None)
    if not names:
        raise MsvitEdgeError("names no classes", path)
    if any(c is None for c in colours) and any(c is not None for c in colours):
        raise MsvitEdgeError("gives colours for some classes only (name:r,g,b on every line, or on none)", path)
    return MaskClasses(tuple(names), None if colours[0] is None else np.array(colours, np.uint8))


def _colour(text: str, path: Path, line: int) -> tuple[int, int, int]:
    parts = text.replace(" ", "").split(",")
    if len(parts) != 3 or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise MsvitEdgeError(f"line {line}: colour {text.strip()!r} is not r,g,b with each in 0..255", path)
    return int(parts[0]), int(parts[1]), int(parts[2])


def read_mask(path: Path, classes: MaskClasses, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A mask PNG -> int64 class indices [H, W] (``ignore_index`` where unlabelled), checked against ``classes``."""
    try:
        with Image.open(path) as image:
            image.load()
            labels = _labels(image, path, classes, ignore_index)
    except UnidentifiedImageError as err:
        raise MsvitEdgeError("not a readable mask (unknown or damaged format)", path) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise MsvitEdgeError(f"corrupt mask ({err})", path) from err
    wrong = (labels >= len(classes.names)) & (labels != ignore_index)
    if wrong.any():
        y, x = np.argwhere(wrong)[0]
        raise MsvitEdgeError(
            f"class {labels[y, x]} at pixel (x={x}, y={y}) is out of range: {len(classes.names)} classes "
            f"(0..{len(classes.names) - 1}), ignore index {ignore_index}",
            path,
        )
    return labels


def _labels(image: Image.Image, path: Path, classes: MaskClasses, ignore_index: int) -> np.ndarray:
    if image.mode in _INDEX_MODES:
        return np.asarray(image).astype(np.int64)
    if image.mode == "P" and classes.colours is None:
        return np.asarray(image).astype(np.int64)
    if image.mode == "P":
        index = np.asarray(image).astype(np.int64)
        palette = np.array(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
        used = np.unique(index)
        labelled = used[used != ignore_index]
        if labelled.size and labelled[-1] >= len(palette):
            raise MsvitEdgeError(
                f"palette index {labelled[-1]} is past the mask's {len(palette)} palette colours", path
            )
        lookup = np.full(256, ignore_index, np.int64)
        lookup[labelled] = _by_colour(palette[labelled], path, classes, what="palette colour")
        return lookup[index]
    if image.mode in _COLOUR_MODES and classes.colours is not None:
        rgb = np.asarray(image.convert("RGB"))
        colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
        return _by_colour(colours, path, classes, what="colour")[inverse.reshape(-1)].reshape(rgb.shape[:2])
    if image.mode in _COLOUR_MODES:
        raise MsvitEdgeError(
            f"is a colour ({image.mode}) mask, but {CLASSES_FILE} gives no class colours (name:r,g,b per line); "
            "or save masks as grayscale class indices",
            path,
        )
    raise MsvitEdgeError(f"unsupported mask mode {image.mode!r}: save class indices as an 8- or 16-bit PNG", path)


def _by_colour(colours: np.ndarray, path: Path, classes: MaskClasses, what: str) -> np.ndarray:
    """The class of each colour [n, 3] by the classes' colours."""
    match = np.all(colours[:, None, :] == classes.colours[None, :, :], axis=-1)  # [n, K]
    unknown = ~match.any(1)
    if unknown.any():
        listed = ", ".join(str(tuple(int(v) for v in c)) for c in colours[unknown][:4])
        raise MsvitEdgeError(f"{what}s that are no class's in {CLASSES_FILE}: {listed}", path)
    return match.argmax(1)
