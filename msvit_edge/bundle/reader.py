"""The export bundle: what ``msvit-edge export`` writes and every backend reads. No PyTorch needed to read it.

DIR/manifest.json        schema version, model config, source checkpoint sha256, graphs (I/O, sha256), bucket
                         plan, gate threshold, preprocessing (with a machine-readable resize rule), tool versions,
                         export-time validation (``msvit_edge.bundle.manifest.BundleManifest``); checked against
                         the graph files whenever a bundle is opened
DIR/tokenizer.onnx       images [B, C, H, W] (+ threshold []) -> tokens [B, M, D], counts [B], probs [B, R],
                         order [B, M]; static shapes but B; the selected tokens come first
DIR/encoder.onnx         tokens [B, N, D] -> logits [B, K]; for batch 1 or equal counts (no mask)
DIR/encoder_masked.onnx  tokens [B, N, D], mask [B, N] (True = real token) -> logits; mixed counts
DIR/vit.onnx             images [B, C, H, W] -> logits: the same weights as a plain ViT (all fine), for comparison
DIR/reference.npz        validation images (uint8 NHWC), labels, and PyTorch's logits, counts and probs on them

A segmentation bundle (``Bundle.task``, the manifest's model ``task``) differs in three places: the tokenizer also
returns ``cells`` [B, G*G] (int64: the row covering each fine cell), both encoders take it as their last input, and
every ``logits`` is per fine cell [B, K, G, G] (``msvit_edge.bundle.dense``: the host upsamples to pixels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.engine_manifest import KIND as ENGINE_KIND
from msvit_edge.bundle.engine_manifest import EngineManifest
from msvit_edge.bundle.manifest import GRAPHS, MISSING, SCHEMA_VERSION, BundleManifest, Graph
from msvit_edge.bundle.preprocess import check_images, load_images, preprocess
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, JsonFile, load_json, sha256

__all__ = ["FOLDER", "GRAPHS", "SCHEMA_VERSION", "Bundle", "Reference", "check_graph", "io_description"]
FOLDER = FolderKind(
    "an export bundle",
    "manifest.json",
    lambda m: "graphs" in m and "kind" not in m,  # an engine manifest has a kind
    ("manifest.json", "*.onnx", "*.onnx.data", "reference.npz", "engines", "precision"),
)


@dataclass(frozen=True)
class Reference:
    """PyTorch's answers on the bundle's validation images, for machines without PyTorch."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]; segmentation: label maps [N, H, W], unlabelled pixels ``dense.IGNORED``
    logits: np.ndarray  # float32 [N, K]; segmentation: per fine cell [N, K, G, G] (``dense.upsample``: pixels)
    counts: np.ndarray  # int64 [N]
    probs: np.ndarray  # float32 [N, R]

    @property
    def dense(self) -> bool:
        """Whether these are a segmentation bundle's answers."""
        return self.logits.ndim == 4

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **self.__dict__)

    @classmethod
    def load(cls, path: Path) -> Reference:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__})


class Bundle:
    """A read-only view of an export bundle folder, checked when opened: the manifest (read once, into ``record``),
    and that its graphs are the files beside it (by sha256 where the manifest records one, else by their inputs and
    outputs).

    Args:
        path: The bundle folder.
        document: Its manifest.json, when the caller read it already (``engine_folder.open_source``).
    """

    def __init__(self, path: str | Path, document: JsonFile | None = None):
        self.path = Path(path)
        document = document or load_json(self.path / "manifest.json", MISSING)
        if isinstance(document.content, dict) and document.content.get("kind") == ENGINE_KIND:
            source = EngineManifest.from_dict(document.content, document.path).bundle.path
            raise MsvitEdgeError(
                f"this is an engine folder; pass its bundle ({os.path.normpath(self.path / source)}) or use it as a "
                "bench source",
                self.path,
            )
        self.record = BundleManifest.from_dict(document.content, document.path)
        self.id = document.sha256  # the bundle's identity: the sha256 of its manifest, as read
        missing = [f for name in self.record.graphs for f in self.graph_files(name)]
        missing = [f.name for f in missing if not f.is_file()]
        if missing:
            raise MsvitEdgeError(f"bundle is missing {', '.join(missing)}", self.path)
        for name, entry in self.record.graphs.items():
            check_graph(self.graph(name), entry)

    @cached_property
    def manifest(self) -> dict:
        """The manifest as a dict (``record.to_dict()``), for code that does not read the typed ``record`` yet."""
        return self.record.to_dict()

    def graph(self, name: str) -> Path:
        return self.path / f"{name}.onnx"

    def graph_files(self, name: str) -> list[Path]:
        """The graph's file and, for a model over 2 GB, its weights beside it."""
        data = self.record.graphs[name].data
        return [self.graph(name), *([self.path / data] if data else [])]

    @property
    def plan(self) -> BucketPlan:
        return self.record.buckets

    @property
    def threshold(self) -> float:
        return self.record.threshold

    @property
    def task(self) -> str:
        """``classification`` or ``segmentation`` (the model's config; bundles before segmentation are classifiers)."""
        return self.record.model.get("task", "classification")

    @property
    def dense(self) -> bool:
        return self.task == "segmentation"

    @property
    def ignore_index(self) -> int:
        """A segmentation bundle's masks' unlabelled value, as its export was told (default 255)."""
        value = (self.record.export or {}).get("ignore_index")
        return 255 if value is None else int(value)

    @property
    def resize(self) -> dict:
        """How inputs reach the model's size (see ``msvit_edge.bundle.preprocess.resize_rule``)."""
        return self.record.preprocessing.resize

    def reference(self) -> Reference:
        path = self.path / "reference.npz"
        if not path.is_file():
            raise MsvitEdgeError("bundle has no reference.npz (PyTorch's answers on the validation images)", self.path)
        return Reference.load(path)

    def load_images(self, paths: list[str | Path]) -> np.ndarray:
        """Image files of any size and mode -> uint8 [N, S, S, 3], resized as training loaded them; no PyTorch."""
        return load_images(paths, self.resize)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images [B, S, S, C] -> the tokenizer's normalised float32 input [B, C, S, S]; other sizes, dtypes
        or channel counts are refused (``load_images`` brings photos to the model's size)."""
        pre = self.record.preprocessing
        check_images(images, pre.size, len(pre.mean))
        return preprocess(images, pre.mean, pre.std)


def check_graph(path: Path, entry: Graph) -> None:
    """``path`` must be the graph ``entry`` (its manifest record) describes: same sha256, or if the manifest
    records none (schema 1 bundles before it did), the same inputs and outputs."""
    if entry.sha256 is not None:
        if sha256(path) != entry.sha256:
            raise MsvitEdgeError(
                "is not the graph the manifest describes (sha256 differs): replaced, damaged, or the manifest "
                "comes from another export",
                path,
            )
        return
    found, expected = io_description(path), entry.io()
    if found != expected:
        raise MsvitEdgeError(
            f"does not match the manifest (graph {_signature(found)}; manifest {_signature(expected)}): the "
            "manifest comes from another model",
            path,
        )


def io_description(path: Path) -> dict:
    """A graph's inputs and outputs (name, numpy dtype, shape with symbolic dims as names), as manifests record."""
    import onnx  # lazy: onnx is heavy (a bundle of schema 2 opens without it)
    from google.protobuf.message import DecodeError  # lazy: comes with onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except (DecodeError, OSError, ValueError) as e:
        raise MsvitEdgeError(f"not a readable ONNX graph ({e})", path) from None

    def describe(values) -> list[dict]:
        return [
            {
                "name": v.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def _signature(io: dict) -> str:
    def one(values: list) -> str:
        return ", ".join(
            f"{v.get('name')} [{', '.join(map(str, v.get('shape', [])))}]" if isinstance(v, dict) else repr(v)
            for v in values
        )

    return f"{one(io['inputs'])} -> {one(io['outputs'])}"
