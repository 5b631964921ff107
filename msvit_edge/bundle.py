"""The export bundle: what ``msvit-edge export`` writes and every backend reads. No PyTorch needed to read it.

DIR/manifest.json        schema version, model config, source checkpoint sha256, graphs and their I/O, bucket
                         plan, gate threshold, preprocessing, tool versions, export-time validation
DIR/tokenizer.onnx       images [B, C, H, W] (+ threshold []) -> tokens [B, M, D], counts [B], probs [B, R],
                         order [B, M]; static shapes but B; the selected tokens come first
DIR/encoder.onnx         tokens [B, N, D] -> logits [B, K]; for batch 1 or equal counts (no mask)
DIR/encoder_masked.onnx  tokens [B, N, D], mask [B, N] (True = real token) -> logits; mixed counts
DIR/vit.onnx             images [B, C, H, W] -> logits: the same weights as a plain ViT (all fine), for comparison
DIR/reference.npz        validation images (uint8 NHWC), labels, and PyTorch's logits, counts and probs on them
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msvit_edge.buckets import BucketPlan
from msvit_edge.errors import MsvitEdgeError

SCHEMA_VERSION = 1
GRAPHS = ("tokenizer", "encoder", "encoder_masked")


@dataclass(frozen=True)
class Reference:
    """PyTorch's answers on the bundle's validation images, for machines without PyTorch."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    logits: np.ndarray  # float32 [N, K]
    counts: np.ndarray  # int64 [N]
    probs: np.ndarray  # float32 [N, R]

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **self.__dict__)

    @classmethod
    def load(cls, path: Path) -> Reference:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__})


class Bundle:
    """A read-only view of an export bundle folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / "manifest.json"
        if not manifest.is_file():
            raise MsvitEdgeError("not an export bundle (no manifest.json)", self.path)
        try:
            self.manifest = json.loads(manifest.read_text())
        except json.JSONDecodeError as e:
            raise MsvitEdgeError(f"manifest is not valid JSON ({e})", manifest) from None
        if self.manifest.get("schema_version") != SCHEMA_VERSION:
            raise MsvitEdgeError(
                f"manifest schema {self.manifest.get('schema_version')} is not {SCHEMA_VERSION}", manifest
            )
        missing = [g for g in GRAPHS if not self.graph(g).is_file()]
        if missing:
            raise MsvitEdgeError(f"bundle is missing {', '.join(g + '.onnx' for g in missing)}", self.path)

    def graph(self, name: str) -> Path:
        return self.path / f"{name}.onnx"

    @property
    def plan(self) -> BucketPlan:
        return BucketPlan.from_dict(self.manifest["buckets"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    def reference(self) -> Reference:
        path = self.path / "reference.npz"
        if not path.is_file():
            raise MsvitEdgeError("bundle has no reference.npz (PyTorch's answers on the validation images)", self.path)
        return Reference.load(path)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images [B, H, W, C] -> the tokenizer's normalised float32 input [B, C, H, W]."""
        return preprocess(images, self.manifest["preprocessing"]["mean"], self.manifest["preprocessing"]["std"])


def to_uint8(images: np.ndarray, mean, std) -> np.ndarray:
    """The inverse of ``preprocess``: normalised float [B, C, H, W] -> uint8 [B, H, W, C], rounded and clipped."""
    mean = np.asarray(mean, np.float32)[None, :, None, None]
    std = np.asarray(std, np.float32)[None, :, None, None]
    return (np.clip(images * std + mean, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def preprocess(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 images [B, H, W, C] -> float32 [B, C, H, W], scaled to 0..1 and normalised per channel."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255)
    mean = np.asarray(mean, np.float32)[None, :, None, None]
    std = np.asarray(std, np.float32)[None, :, None, None]
    return (x - mean) / std
