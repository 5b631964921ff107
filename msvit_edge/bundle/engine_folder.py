"""Engine directories: what ``msvit-edge build`` writes, one per (bundle, backend, precision, device). Torch-free.

DIR/manifest.json   kind, schema version, backend and its version, precision, device, the source bundle (relative
                    path and sha256 of its manifest), graph or engine file per stage and the sha256 of every file
                    the engine runs, bucket plan with the batch range, build options, calibration facts, the cache
                    key, and the post-build validation
DIR/*.plan          serialized engines (TensorRT); ONNX Runtime runs ONNX graphs directly, so its engine directory
                    holds only the manifest

Every file is recorded as a path relative to the engine directory: the bundle's own FP32 graphs
(``../../tokenizer.onnx``) and the precision graphs, which live in the bundle (``BUNDLE/precision/<backend>-
<precision>-<key>/``, named by everything that made them) because they do not depend on the device: made once on a
workstation with ModelOpt, they are what a Jetson builds from. Opening an engine directory checks every file it runs
against the sha256 its manifest recorded, so a folder runs what was validated or nothing.

By default an engine directory lives inside its bundle (``BUNDLE/engines/<backend>-<precision>-<device>``), so a
bundle copied to a Jetson carries its engines and precision graphs with it. An engine directory answers the same
questions as a ``Bundle`` (``graph``, ``plan``, ``threshold``, ``preprocess``, ``reference``), so every pipeline
takes either.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle, Reference
from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, read_json, sha256

KIND = "msvit-edge-engine"
SCHEMA_VERSION = 2  # 2: the sha256 of every file the engine runs ("files")
READABLE = (1, 2)  # schema 1 folders open with a warning: they recorded no digests to check
REQUIRED = {"backend": str, "precision": str, "device": dict, "bundle": dict, "graphs": dict, "buckets": dict}
FOLDER = FolderKind(
    "an engine folder",
    "manifest.json",
    lambda m: m.get("kind") == KIND,
    ("manifest.json", "*.plan", "*.layers.json", "tensorrt.json", "trtexec-trt*.sh", "*.cache", "*.cache.lock"),
)


class EngineDir:
    """A read-only view of an engine directory; its bundle is opened (and its identity checked) with it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_engine_manifest(self.path)
        self.bundle = Bundle(self.path / self.manifest["bundle"]["path"])
        if bundle_id(self.bundle) != self.manifest["bundle"]["sha256"]:
            raise MsvitEdgeError(
                f"built for another bundle than {self.bundle.path} (its manifest changed since the build); "
                "rebuild with msvit-edge build --force",
                self.path,
            )
        check_files(self.path, self.manifest)

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    def graph(self, name: str) -> Path:
        """The file this engine runs for stage ``name`` (tokenizer, encoder, encoder_masked)."""
        entry = self.manifest["graphs"].get(name)
        if entry is None:
            raise MsvitEdgeError(f"engine manifest has no {name!r} graph", self.path)
        path = self.path / entry
        if not path.is_file():
            raise MsvitEdgeError(f"engine file {entry} is missing", self.path)
        return path

    @property
    def plan(self) -> BucketPlan:
        return BucketPlan.from_dict(self.manifest["buckets"])

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        return self.bundle.preprocess(images)

    def reference(self) -> Reference:
        return self.bundle.reference()

    def check_runs_here(self, backend_version: str | None, device: str) -> None:
        """Refuse an engine built for another device or backend version, with the reason."""
        built = self.manifest
        if built["device"].get("slug") != device:
            raise MsvitEdgeError(
                f"built for device {built['device'].get('slug')}, this is {device}; rebuild it here", self.path
            )
        if backend_version is not None and built.get("backend_version") != backend_version:
            raise MsvitEdgeError(
                f"built with {built['backend']} {built.get('backend_version')}, this is {backend_version}; rebuild "
                "it here",
                self.path,
            )


def check_files(path: Path, manifest: dict) -> None:
    """Every file the engine runs must be the one its manifest recorded (by sha256), or the folder is refused."""
    if manifest["schema_version"] == 1:
        warnings.warn(
            f"{path}: built by an msvit-edge that recorded no file digests, so its files cannot be checked; "
            "rebuild it with msvit-edge build --force",
            stacklevel=3,
        )
        return
    unrecorded = sorted(set(manifest["graphs"].values()) - manifest["files"].keys())
    if unrecorded:
        raise MsvitEdgeError(f"the engine manifest records no sha256 for {', '.join(unrecorded)}", path)
    for file, digest in manifest["files"].items():
        if not (path / file).is_file():
            raise MsvitEdgeError(f"engine file {file} is missing", path)
        if sha256(path / file) != digest:
            raise MsvitEdgeError(
                f"is not the file this engine folder was built and validated with (sha256 differs from its "
                f"manifest's): changed since the build; rebuild with msvit-edge build --force --out {path}",
                (path / file).resolve(),
            )


def file_digests(path: Path, graphs: dict[str, str]) -> dict[str, str]:
    """{file relative to ``path``: sha256} for the files an engine runs (``graphs``: stage -> relative file)."""
    return {file: sha256(path / file) for file in sorted(set(graphs.values()))}


def read_engine_manifest(path: Path) -> dict:
    """The engine manifest at ``path``, checked for kind, schema and the keys every reader needs."""
    file = path / "manifest.json"
    manifest = read_json(file, "not an engine directory (no manifest.json)")
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise MsvitEdgeError("not an engine manifest (kind is not msvit-edge-engine)", file)
    if manifest.get("schema_version") not in READABLE:
        raise MsvitEdgeError(f"engine schema {manifest.get('schema_version')} is not one of {READABLE}", file)
    required = REQUIRED | ({"files": dict} if manifest["schema_version"] >= 2 else {})
    for key, kind in required.items():
        if not isinstance(manifest.get(key), kind):
            raise MsvitEdgeError(f"engine manifest needs {key!r} ({kind.__name__})", file)
    return manifest


def is_engine_dir(path: str | Path) -> bool:
    """Whether ``path`` holds an engine manifest (a bundle's manifest has no ``kind``)."""
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def open_source(source: Bundle | EngineDir | str | Path) -> Bundle | EngineDir:
    """A bundle or an engine directory, from either or from its path."""
    if isinstance(source, Bundle | EngineDir):
        return source
    return EngineDir(source) if is_engine_dir(source) else Bundle(source)


def bundle_id(bundle: Bundle) -> str:
    """The bundle's identity: the sha256 of its manifest, which records every graph's I/O (and sha256)."""
    return sha256(bundle.path / "manifest.json")


def default_engine_dir(bundle: Bundle, backend: str, precision: str, device: str) -> Path:
    return bundle.path / "engines" / f"{backend}-{precision}-{device}"


def relative_to(target: Path, start: Path) -> str:
    """``target`` as a path relative to folder ``start`` (recorded in manifests so folders can move together)."""
    return os.path.relpath(target.resolve(), start.resolve())
