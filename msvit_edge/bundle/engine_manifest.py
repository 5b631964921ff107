"""The engine manifest (``ENGINE_DIR/manifest.json``, see ``engine_folder``) as a typed record. Torch-free.

``EngineManifest.from_dict`` is its one reader (``from_file`` reads the file first): it checks every key a reader
needs, refusing with the file named, and converts older schemas. ``to_dict`` is its one writer's form, and ``write``
writes it atomically. Keys it does not model are kept as they were.

Schema versions:
  1  the first; recorded no file digests (such a folder opens with a warning: nothing to check its files against).
  2  ``files``: the sha256 of every file the engine runs.
  3  the same keys, written from this record; on read every modelled key's type is checked (the device's slug, the
     bundle's path and sha256, graphs and files as strings, buckets as a plan). Versions 1 and 2 convert on read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.fields import is_int, optional, text_map
from msvit_edge.bundle.manifest import buckets_problem
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import load_json, write_json

KIND = "msvit-edge-engine"
SCHEMA_VERSION = 3
READABLE = (1, 2, 3)  # schema 1 folders open with a warning: they recorded no digests to check
MISSING = "not an engine directory (no manifest.json)"
REQUIRED = {"backend": str, "precision": str, "device": dict, "bundle": dict, "graphs": dict, "buckets": dict}
# The records for people and for the cache key, when present.
OPTIONAL = {"backend_version": str, "build": dict, "calibration": dict, "tolerance": dict, "key": str,
            "msvit_edge": str, "validation": dict}  # fmt: skip


@dataclass(frozen=True)
class Device:
    """The device an engine was built on, and for."""

    slug: str  # what ``msvit_edge.machine.environment.this_device`` says of it
    description: str | None = None
    cpu_int8: dict | None = None  # the kernels ONNX Runtime's INT8 graphs run on there
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> Device:
        extra = {k: v for k, v in d.items() if k not in ("slug", "description", "cpu_int8")}
        return cls(d["slug"], d.get("description"), d.get("cpu_int8"), extra)

    def to_dict(self) -> dict:
        return {"slug": self.slug, "description": self.description, "cpu_int8": self.cpu_int8} | self.extra


@dataclass(frozen=True)
class SourceBundle:
    """The bundle an engine was built from."""

    path: str  # relative to the engine folder, so that the two can move together
    sha256: str  # of the bundle's manifest.json: its identity

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class EngineManifest:
    """What an engine folder runs, what it was built from and for, and how it validated."""

    backend: str
    precision: str
    device: Device
    bundle: SourceBundle
    graphs: dict[str, str]  # stage -> the file it runs, relative to the engine folder
    buckets: BucketPlan
    files: dict[str, str] | None  # file -> sha256 of every file in ``graphs``; None: schema 1 recorded none
    backend_version: str | None = None
    build: dict | None = None  # the build options
    calibration: dict | None = None  # the precision graphs' facts (``msvit_edge.calibration.facts``); {} at FP32
    tolerance: dict | None = None
    key: str | None = None  # the cache key: a second build with the same inputs reuses the folder
    msvit_edge: str | None = None  # the version that built it
    validation: dict | None = None  # the post-build validation (``msvit_edge.bundle.validation``)
    extra: dict = field(default_factory=dict)  # keys this version does not model

    @classmethod
    def from_file(cls, file: Path) -> EngineManifest:
        return cls.from_dict(load_json(file, MISSING).content, file)

    @classmethod
    def from_dict(cls, d: object, file: Path | None = None) -> EngineManifest:
        """The record of a parsed engine manifest, refused (naming ``file``) if a reader could trip on it."""
        problem = manifest_problem(d)
        if problem:
            raise MsvitEdgeError(problem, file)
        known = {*cls.__dataclass_fields__, "kind", "schema_version"}
        return cls(
            backend=d["backend"],
            precision=d["precision"],
            device=Device.from_dict(d["device"]),
            bundle=SourceBundle(d["bundle"]["path"], d["bundle"]["sha256"]),
            graphs=d["graphs"],
            buckets=BucketPlan.from_dict(d["buckets"]),
            files=d.get("files"),
            **{k: d.get(k) for k in OPTIONAL},
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict:
        head = {"kind": KIND, "schema_version": SCHEMA_VERSION, "backend": self.backend}
        head |= {"backend_version": self.backend_version, "precision": self.precision, "device": self.device.to_dict()}
        body = {
            "bundle": self.bundle.to_dict(),
            "buckets": self.buckets.to_dict(),
            "build": self.build,
            "calibration": self.calibration,
            "tolerance": self.tolerance,
            "key": self.key,
            "msvit_edge": self.msvit_edge,
            "graphs": self.graphs,
            "files": self.files,
            "validation": self.validation,
        }
        return head | {k: v for k, v in body.items() if v is not None} | self.extra

    def write(self, file: Path) -> None:
        """Write the manifest to ``file``, atomically."""
        write_json(file, self.to_dict())


def manifest_problem(m: object) -> str | None:
    """What is wrong with a parsed engine manifest, as the one-line error says it, or None."""
    if not isinstance(m, dict) or m.get("kind") != KIND:
        return "not an engine manifest (kind is not msvit-edge-engine)"
    version = m.get("schema_version")
    if not is_int(version) or version not in READABLE:
        return f"engine schema {version} is not one of {READABLE}"
    required = REQUIRED | ({"files": dict} if version >= 2 else {})
    for key, kind in required.items():
        if not isinstance(m.get(key), kind):
            return f"engine manifest needs {key!r} ({kind.__name__})"
    for key, kind in OPTIONAL.items():
        if not optional(m.get(key), kind):
            return f"engine manifest's {key!r} must be a {kind.__name__} or absent"
    device, bundle = m["device"], m["bundle"]
    if not isinstance(device.get("slug"), str) or not optional(device.get("description"), str):
        return "engine manifest needs 'device.slug' (str)"
    if not all(isinstance(bundle.get(k), str) for k in ("path", "sha256")):
        return "engine manifest needs 'bundle.path' and 'bundle.sha256' (str)"
    if not text_map(m["graphs"]) or not optional(m.get("files"), dict) or not text_map(m.get("files") or {}):
        return "engine manifest's 'graphs' and 'files' must map names to strings"
    problem = buckets_problem(m["buckets"])
    return f"engine manifest: {problem}" if problem else None
