"""Engine directories: what ``msvit-edge build`` writes, one per (bundle, backend, precision, device). Torch-free.

DIR/manifest.json   kind, schema version, backend and its version, precision, device, the source bundle (relative
                    path and sha256 of its manifest), graph or engine file per stage and the sha256 of every file
                    the engine runs, bucket plan with the batch range, build options, calibration facts, the cache
                    key, and the post-build validation (``msvit_edge.bundle.engine_manifest.EngineManifest``)
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

import os
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.engine_manifest import KIND, MISSING, READABLE, SCHEMA_VERSION, EngineManifest
from msvit_edge.bundle.manifest import MISSING as BUNDLE_MISSING
from msvit_edge.bundle.reader import Bundle, Reference
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, JsonFile, load_json, sha256

__all__ = ["FOLDER", "KIND", "READABLE", "SCHEMA_VERSION", "EngineDir", "EngineManifest", "open_source"]
FOLDER = FolderKind(
    "an engine folder",
    "manifest.json",
    lambda m: m.get("kind") == KIND,
    ("manifest.json", "*.plan", "*.layers.json", "tensorrt.json", "trtexec-trt*.sh", "*.cache", "*.cache.lock"),
)


class EngineDir:
    """A read-only view of an engine directory: its manifest is read once (into ``record``), and the bundle it was
    built from is opened with it (``bundle``) and its identity checked, as is every file the engine runs.

    Args:
        path: The engine folder.
        document: Its manifest.json, when the caller read it already (``open_source``).
    """

    def __init__(self, path: str | Path, document: JsonFile | None = None):
        self.path = Path(path)
        document = document or load_json(self.path / "manifest.json", MISSING)
        self.record = EngineManifest.from_dict(document.content, document.path)
        self.bundle = Bundle(self.path / self.record.bundle.path)
        if self.bundle.id != self.record.bundle.sha256:
            raise MsvitEdgeError(
                f"built for another bundle than {self.bundle.path} (its manifest changed since the build); "
                "rebuild with msvit-edge build --force",
                self.path,
            )
        check_files(self.path, self.record)

    @cached_property
    def manifest(self) -> dict:
        """The manifest as a dict (``record.to_dict()``), for code that does not read the typed ``record`` yet."""
        return self.record.to_dict()

    @property
    def backend(self) -> str:
        return self.record.backend

    @property
    def precision(self) -> str:
        return self.record.precision

    def graph(self, name: str) -> Path:
        """The file this engine runs for stage ``name`` (tokenizer, encoder, encoder_masked)."""
        entry = self.record.graphs.get(name)
        if entry is None:
            raise MsvitEdgeError(f"engine manifest has no {name!r} graph", self.path)
        path = self.path / entry
        if not path.is_file():
            raise MsvitEdgeError(f"engine file {entry} is missing", self.path)
        return path

    @property
    def plan(self) -> BucketPlan:
        return self.record.buckets

    @property
    def build_facts(self) -> dict:
        """What a TensorRT build recorded (``tensorrt.json``: engines, profiles, skipped graphs); {} without it
        (engines built by hand with trtexec, or another backend)."""
        path = self.path / "tensorrt.json"
        return load_json(path, "no tensorrt.json").content if path.is_file() else {}

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        return self.bundle.preprocess(images)

    def reference(self) -> Reference:
        return self.bundle.reference()

    def check_runs_here(self, backend_version: str | None, device: str) -> None:
        """Refuse an engine built for another device or backend version, with the reason."""
        built = self.record
        if built.device.slug != device:
            raise MsvitEdgeError(f"built for device {built.device.slug}, this is {device}; rebuild it here", self.path)
        if backend_version is not None and built.backend_version != backend_version:
            raise MsvitEdgeError(
                f"built with {built.backend} {built.backend_version}, this is {backend_version}; rebuild it here",
                self.path,
            )


def check_files(path: Path, record: EngineManifest) -> None:
    """Every file the engine runs must be the one its manifest recorded (by sha256), or the folder is refused."""
    if record.files is None:
        warnings.warn(
            f"{path}: built by an msvit-edge that recorded no file digests, so its files cannot be checked; "
            "rebuild it with msvit-edge build --force",
            stacklevel=3,
        )
        return
    unrecorded = sorted(set(record.graphs.values()) - record.files.keys())
    if unrecorded:
        raise MsvitEdgeError(f"the engine manifest records no sha256 for {', '.join(unrecorded)}", path)
    for file, digest in record.files.items():
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


def open_source(source: Bundle | EngineDir | str | Path) -> Bundle | EngineDir:
    """A bundle or an engine directory, from either or from its path; the manifest is read once, and handed to the
    one that it is."""
    if isinstance(source, Bundle | EngineDir):
        return source
    document = load_json(Path(source) / "manifest.json", BUNDLE_MISSING)
    is_engine = isinstance(document.content, dict) and document.content.get("kind") == KIND
    return EngineDir(source, document) if is_engine else Bundle(source, document)


def bundle_id(bundle: Bundle) -> str:
    """The bundle's identity: the sha256 of its manifest, which records every graph's I/O (and sha256)."""
    return bundle.id


def default_engine_dir(bundle: Bundle, backend: str, precision: str, device: str) -> Path:
    return bundle.path / "engines" / f"{backend}-{precision}-{device}"


def relative_to(target: Path, start: Path) -> str:
    """``target`` as a path relative to folder ``start`` (recorded in manifests so folders can move together)."""
    return os.path.relpath(target.resolve(), start.resolve())
