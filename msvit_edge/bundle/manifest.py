"""The bundle manifest (``BUNDLE/manifest.json``) as a typed record. Torch-free.

``BundleManifest.from_dict`` is its one reader (``from_file`` reads the file first): it checks everything a reader
could trip on, refusing with the file named, and converts older schemas. ``to_dict`` is its one writer's form, and
``write`` writes it atomically. Keys it does not model (records for people, a newer writer's additions) are kept.

Schema versions:
  1  the first.
  2  every graph records its file and sha256, ``preprocessing.resize`` is the resize rule as data, and
     ``latency_only`` is always written. A version 1 manifest is converted on read: a graph without a sha256 is
     checked by its inputs and outputs, prose about resizing becomes the rule every msvit-edge resized by, and no
     ``latency_only`` means a trained model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.fields import is_int, is_number, json_type, numbers, optional
from msvit_edge.bundle.preprocess import resize_rule
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import load_json, write_json

SCHEMA_VERSION = 2
READABLE = (1, 2)
GRAPHS = ("tokenizer", "encoder", "encoder_masked")
MISSING = "not an export bundle (no manifest.json)"
# What every reader needs, and its JSON type; the optional records, when present.
_REQUIRED = {"model": dict, "graphs": dict, "buckets": dict, "threshold": (int, float), "preprocessing": dict}
_OPTIONAL = {"source": dict, "tokens": dict, "export": dict, "versions": dict, "validation": dict, "opset": int}


@dataclass(frozen=True)
class Tensor:
    """A graph input or output: name, numpy dtype, shape with symbolic dims as names."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, d: dict) -> Tensor:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Graph:
    """One graph's entry: its inputs and outputs, its file and the digests that make it this graph."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    file: str
    sha256: str | None = None  # None only in a schema 1 bundle: checked by inputs and outputs instead
    nodes: int | None = None
    data: str | None = None  # the weights' file beside the graph (a model over 2 GB)
    data_sha256: str | None = None

    @classmethod
    def from_dict(cls, name: str, d: dict) -> Graph:
        inputs, outputs = (tuple(Tensor.from_dict(t) for t in d[k]) for k in ("inputs", "outputs"))
        return cls(inputs, outputs, d.get("file", f"{name}.onnx"), d.get("sha256"), d.get("nodes"), d.get("data"),
                   d.get("data_sha256"))  # fmt: skip

    def io(self) -> dict:
        """Inputs and outputs as ``reader.io_description`` describes a graph file."""
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    def to_dict(self) -> dict:
        d = self.io() | {"file": self.file, "nodes": self.nodes, "sha256": self.sha256}
        return _present(d | {"data": self.data, "data_sha256": self.data_sha256})


@dataclass(frozen=True)
class Preprocessing:
    """What the tokenizer's input is made of: size, normalisation, and the resize rule as data."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: dict  # see ``msvit_edge.bundle.preprocess.resize_rule``
    extra: dict = field(default_factory=dict)  # input, scale, layout: for people

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        # manifests of schema 1 could say the rule in prose; every msvit-edge version resized by this rule
        resize = d["resize"] if isinstance(d.get("resize"), dict) else resize_rule(d["size"])
        extra = {k: v for k, v in d.items() if k not in ("size", "mean", "std", "resize")}
        return cls(d["size"], tuple(d["mean"]), tuple(d["std"]), resize, extra)

    def to_dict(self) -> dict:
        return self.extra | {"size": self.size, "mean": list(self.mean), "std": list(self.std), "resize": self.resize}


@dataclass(frozen=True)
class BundleManifest:
    """Everything a bundle says about its graphs and how to feed them."""

    model: dict  # MSViTConfig.to_dict(): msvit_edge.model reads it, the bundle layer does not
    graphs: dict[str, Graph]
    buckets: BucketPlan
    threshold: float
    preprocessing: Preprocessing
    latency_only: bool = False  # random weights: accuracy means nothing, latency is real
    source: dict | None = None  # the checkpoint's name and sha256, or the random-weights preset
    opset: int | None = None
    tokens: dict | None = None  # the token range and candidates
    export: dict | None = None  # the export's settings
    versions: dict | None = None  # tool versions
    validation: dict | None = None  # ONNX Runtime against PyTorch (``msvit_edge.bundle.validation``)
    extra: dict = field(default_factory=dict)  # keys this version does not model

    @property
    def planned_on(self) -> str | None:
        """The name of the data the buckets were planned on (its training split)."""
        return None if self.export is None or self.export.get("calib") is None else str(self.export["calib"])

    @classmethod
    def from_file(cls, file: Path) -> BundleManifest:
        return cls.from_dict(load_json(file, MISSING).content, file)

    @classmethod
    def from_dict(cls, d: object, file: Path | None = None) -> BundleManifest:
        """The record of a parsed manifest, refused (naming ``file``) with the reason if a reader could trip on it."""
        problem = manifest_problem(d)
        if problem:
            raise MsvitEdgeError(f"not a usable bundle manifest: {problem}", file)
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(
            model=d["model"],
            graphs={name: Graph.from_dict(name, g) for name, g in d["graphs"].items()},
            buckets=BucketPlan.from_dict(d["buckets"]),
            threshold=float(d["threshold"]),
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            latency_only=bool(d.get("latency_only", False)),
            **{k: d.get(k) for k in _OPTIONAL},
            extra={k: v for k, v in d.items() if k not in known and k != "schema_version"},
        )

    def to_dict(self) -> dict:
        head = {"schema_version": SCHEMA_VERSION, "model": self.model, "source": self.source}
        body = {
            "latency_only": self.latency_only,
            "opset": self.opset,
            "graphs": {name: g.to_dict() for name, g in self.graphs.items()},
            "buckets": self.buckets.to_dict(),
            "threshold": self.threshold,
            "tokens": self.tokens,
            "preprocessing": self.preprocessing.to_dict(),
            "export": self.export,
            "versions": self.versions,
            "validation": self.validation,
        }
        return _present(head | body) | self.extra

    def write(self, file: Path) -> None:
        """Write the manifest to ``file``, atomically."""
        write_json(file, self.to_dict())


def manifest_problem(m: object) -> str | None:
    """What is wrong with a parsed manifest (schema version, required keys and their types), or None."""
    if not isinstance(m, dict):
        return f"it is {json_type(m)}, not an object"
    version = m.get("schema_version")
    if not is_int(version) or version not in READABLE:
        return f"schema_version is {version!r}, this msvit-edge reads {' or '.join(map(str, READABLE))}"
    for key, kind in _REQUIRED.items():
        if key not in m:
            return f"no {key!r}"
        if not isinstance(m[key], kind) or isinstance(m[key], bool):
            return f"{key!r} is {json_type(m[key])}, not {'a number' if kind == (int, float) else json_type(kind())}"
    for key, kind in _OPTIONAL.items():
        if not optional(m.get(key), kind) or isinstance(m.get(key), bool):
            return f"{key!r} is {json_type(m[key])}, not {json_type(kind())}"
    if not isinstance(m.get("latency_only", False), bool):
        return f"'latency_only' is {json_type(m['latency_only'])}, not a boolean"
    if not 0 <= m["threshold"] <= 1:
        return f"threshold {m['threshold']} is not in [0, 1]"
    return (
        _graphs_problem(m["graphs"], version)
        or _preprocessing_problem(m["preprocessing"], version)
        or buckets_problem(m["buckets"])
    )


def _graphs_problem(graphs: dict, version: int) -> str | None:
    missing = [g for g in GRAPHS if g not in graphs]
    if missing:
        return f"'graphs' lacks {', '.join(missing)}"
    for name, g in graphs.items():
        if not isinstance(g, dict) or not all(isinstance(g.get(k), list) for k in ("inputs", "outputs")):
            return f"graphs.{name} needs 'inputs' and 'outputs' arrays"
        if not all(_tensor(t) for t in (*g["inputs"], *g["outputs"])):
            return f"graphs.{name}: every input and output needs a name, a dtype and a shape"
        if version >= 2 and not all(isinstance(g.get(k), str) for k in ("file", "sha256")):
            return f"graphs.{name} needs its 'file' and 'sha256' (schema {version})"
        strings = ("file", "sha256", "data", "data_sha256")
        if not all(optional(g.get(k), str) for k in strings) or not optional(g.get("nodes"), int):
            return f"graphs.{name}: 'file', 'sha256', 'data' and 'data_sha256' must be strings, 'nodes' a number"
    return None


def _tensor(t: object) -> bool:
    return (
        isinstance(t, dict)
        and isinstance(t.get("name"), str)
        and isinstance(t.get("dtype"), str)
        and isinstance(t.get("shape"), list)
        and all(is_int(d) or isinstance(d, str) for d in t["shape"])
    )


def _preprocessing_problem(p: dict, version: int) -> str | None:
    size, mean, std, resize = p.get("size"), p.get("mean"), p.get("std"), p.get("resize")
    if not is_int(size) or size < 1:
        return f"preprocessing.size must be a positive integer, got {size!r}"
    if not (numbers(mean) and numbers(std) and len(mean) == len(std) > 0 and min(std) > 0):
        return f"preprocessing.mean and .std must be equal-length arrays of numbers, std > 0; got {mean!r}, {std!r}"
    if version >= 2 and not isinstance(resize, dict):
        return f"preprocessing.resize must be the resize rule (an object) in schema {version}, got {resize!r}"
    if isinstance(resize, dict) and resize.get("size") != size:
        return f"preprocessing.resize.size {resize.get('size')!r} is not preprocessing.size {size}"
    return None


def buckets_problem(buckets: dict) -> str | None:
    try:
        plan = BucketPlan.from_dict(buckets)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"'buckets' is not a bucket plan ({type(e).__name__}: {e})"
    ranges = [x for b in plan.buckets for x in (b.min, b.opt, b.max)]
    numbers = (plan.expected_overhead, *plan.histogram.values())
    if not all(map(is_number, numbers)) or not all(map(is_int, ranges)):
        return "'buckets' is not a bucket plan (its ranges must be integers, its histogram and overhead numbers)"
    return None if plan.buckets else "'buckets' has no buckets"


def _present(d: dict) -> dict:
    """``d`` without the keys whose value is None (records that were not made)."""
    return {k: v for k, v in d.items() if v is not None}
