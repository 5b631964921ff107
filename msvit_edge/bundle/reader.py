"""The export bundle: what ``msvit-edge export`` writes and every backend reads. No PyTorch needed to read it.

DIR/manifest.json        schema version, model config, source checkpoint sha256, graphs (I/O, sha256), bucket
                         plan, gate threshold, preprocessing (with a machine-readable resize rule), tool versions,
                         export-time validation; checked against the graph files whenever a bundle is opened
DIR/tokenizer.onnx       images [B, C, H, W] (+ threshold []) -> tokens [B, M, D], counts [B], probs [B, R],
                         order [B, M]; static shapes but B; the selected tokens come first
DIR/encoder.onnx         tokens [B, N, D] -> logits [B, K]; for batch 1 or equal counts (no mask)
DIR/encoder_masked.onnx  tokens [B, N, D], mask [B, N] (True = real token) -> logits; mixed counts
DIR/vit.onnx             images [B, C, H, W] -> logits: the same weights as a plain ViT (all fine), for comparison
DIR/reference.npz        validation images (uint8 NHWC), labels, and PyTorch's logits, counts and probs on them
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.preprocess import check_images, load_images, preprocess, resize_rule
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, read_json, sha256

SCHEMA_VERSION = 1
GRAPHS = ("tokenizer", "encoder", "encoder_masked")
# What every reader needs, and its JSON type. Everything else in a manifest is a record for people.
_REQUIRED = {"model": dict, "graphs": dict, "buckets": dict, "threshold": (int, float), "preprocessing": dict}
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
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
    """A read-only view of an export bundle folder, checked when opened: the manifest's schema, and that its graphs
    are the files beside it (by sha256 where the manifest records one, else by their inputs and outputs)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        missing = [f for name, entry in self.manifest["graphs"].items() for f in self._files(name, entry)]
        missing = [f.name for f in missing if not f.is_file()]
        if missing:
            raise MsvitEdgeError(f"bundle is missing {', '.join(missing)}", self.path)
        for name, entry in self.manifest["graphs"].items():
            check_graph(self.graph(name), entry)

    def graph(self, name: str) -> Path:
        return self.path / f"{name}.onnx"

    def _files(self, name: str, entry: dict) -> list[Path]:
        return [self.graph(name), *([self.path / entry["data"]] if entry.get("data") else [])]

    @property
    def plan(self) -> BucketPlan:
        return BucketPlan.from_dict(self.manifest["buckets"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def resize(self) -> dict:
        """How inputs reach the model's size (see ``msvit_edge.bundle.preprocess.resize_rule``)."""
        pre = self.manifest["preprocessing"]
        # manifests before the rule was data said it in prose; every msvit-edge version resized by this rule
        return pre["resize"] if isinstance(pre.get("resize"), dict) else resize_rule(pre["size"])

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
        pre = self.manifest["preprocessing"]
        check_images(images, pre["size"], len(pre["mean"]))
        return preprocess(images, pre["mean"], pre["std"])


def read_manifest(folder: Path) -> dict:
    """The bundle manifest in ``folder``, refused with the reason if a reader could trip on it."""
    file = folder / "manifest.json"
    manifest = read_json(file, "not an export bundle (no manifest.json)")
    problem = manifest_problem(manifest)
    if problem:
        raise MsvitEdgeError(f"not a usable bundle manifest: {problem}", file)
    return manifest


def manifest_problem(m: object) -> str | None:
    """What is wrong with a parsed manifest (schema version, required keys and their types), or None."""
    if not isinstance(m, dict):
        return f"it is {_json_type(m)}, not an object"
    if m.get("schema_version") != SCHEMA_VERSION:
        return f"schema_version is {m.get('schema_version')!r}, this msvit-edge reads {SCHEMA_VERSION}"
    for key, kind in _REQUIRED.items():
        if key not in m:
            return f"no {key!r}"
        if not isinstance(m[key], kind) or isinstance(m[key], bool):
            return f"{key!r} is {_json_type(m[key])}, not {'a number' if kind == (int, float) else _JSON_TYPES[kind]}"
    missing = [g for g in GRAPHS if g not in m["graphs"]]
    if missing:
        return f"'graphs' lacks {', '.join(missing)}"
    for name, g in m["graphs"].items():
        if not isinstance(g, dict) or not all(isinstance(g.get(k), list) for k in ("inputs", "outputs")):
            return f"graphs.{name} needs 'inputs' and 'outputs' arrays"
    if not 0 <= m["threshold"] <= 1:
        return f"threshold {m['threshold']} is not in [0, 1]"
    return _preprocessing_problem(m["preprocessing"]) or _buckets_problem(m["buckets"])


def _preprocessing_problem(p: dict) -> str | None:
    size, mean, std, resize = p.get("size"), p.get("mean"), p.get("std"), p.get("resize")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return f"preprocessing.size must be a positive integer, got {size!r}"
    if not (_numbers(mean) and _numbers(std) and len(mean) == len(std) > 0 and min(std) > 0):
        return f"preprocessing.mean and .std must be equal-length arrays of numbers, std > 0; got {mean!r}, {std!r}"
    if isinstance(resize, dict) and resize.get("size") != size:
        return f"preprocessing.resize.size {resize.get('size')!r} is not preprocessing.size {size}"
    return None


def _buckets_problem(buckets: dict) -> str | None:
    try:
        plan = BucketPlan.from_dict(buckets)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"'buckets' is not a bucket plan ({type(e).__name__}: {e})"
    return None if plan.buckets else "'buckets' has no buckets"


def check_graph(path: Path, entry: dict) -> None:
    """``path`` must be the graph ``entry`` (its manifest record) describes: same sha256, or if the manifest
    records none (bundles before it did), the same inputs and outputs."""
    if "sha256" in entry:
        if sha256(path) != entry["sha256"]:
            raise MsvitEdgeError(
                "is not the graph the manifest describes (sha256 differs): replaced, damaged, or the manifest "
                "comes from another export",
                path,
            )
        return
    found, expected = io_description(path), {k: entry[k] for k in ("inputs", "outputs")}
    if found != expected:
        raise MsvitEdgeError(
            f"does not match the manifest (graph {_signature(found)}; manifest {_signature(expected)}): the "
            "manifest comes from another model",
            path,
        )


def io_description(path: Path) -> dict:
    """A graph's inputs and outputs (name, numpy dtype, shape with symbolic dims as names), as manifests record."""
    import onnx
    from google.protobuf.message import DecodeError

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


def _numbers(values: object) -> bool:
    return isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _json_type(value: object) -> str:
    return "a number" if isinstance(value, (int, float)) and not isinstance(value, bool) else _JSON_TYPES[type(value)]
