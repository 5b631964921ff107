"""Fashion-MNIST from its IDX files (gzipped or not): uint8 items and labels, no PyTorch."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from msvit_edge.errors import MsvitEdgeError

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

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 2051, 2049


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
