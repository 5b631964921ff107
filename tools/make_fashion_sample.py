"""Write the Fashion-MNIST sample that ships inside the package, for `msvit-edge demo` where the full data set is
not installed:

    python tools/make_fashion_sample.py [--train 1200] [--test 300]

Reads the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) and writes the same IDX gzip
format, with an equal number of items of every class drawn by a seeded permutation, to
msvit_edge/assets/fashion-mnist-sample/. Fashion-MNIST: Zalando Research, MIT licence.
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np

from msvit_edge.data import load_fashion_mnist

OUT = Path(__file__).resolve().parents[1] / "msvit_edge" / "assets" / "fashion-mnist-sample"


def balanced(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices, ``n // 10`` of each class, in a seeded random order."""
    order = np.random.default_rng(seed).permutation(len(labels))
    picked = np.concatenate([order[labels[order] == k][: n // 10] for k in range(10)])
    return np.sort(picked)


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(f">{1 + array.ndim}i", magic, *array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime 0: the same bytes on every run
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1200)
    p.add_argument("--test", type=int, default=300)
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for split, prefix, n in (("train", "train", args.train), ("test", "t10k", args.test)):
        images, labels = load_fashion_mnist(split=split)
        keep = balanced(labels, n, seed=0)
        write_idx(OUT / f"{prefix}-images-idx3-ubyte.gz", images[keep])
        write_idx(OUT / f"{prefix}-labels-idx1-ubyte.gz", labels[keep].astype(np.uint8))
        print(f"{split}: {len(keep)} items -> {OUT}")


if __name__ == "__main__":
    main()
