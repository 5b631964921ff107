"""The facts of a precision graph set as a typed record: ``facts.json`` beside its graphs (``BUNDLE/precision/...``)
and in each calibration cache entry, and what an engine manifest records of it (``calibration``).

``PrecisionFacts.from_dict`` is its one reader (``from_file`` reads the file first): checked, with the file named,
older versions converted. ``to_dict`` is its one writer's form, ``write`` writes it atomically. Keys it does not model
are kept as they were.

Versions (``schema_version``):
  0  (no ``schema_version``) the first; sets delivered before graph digests record no ``files``.
  1  ``schema_version`` is written; the same keys otherwise. Version 0 facts convert on read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from msvit_edge.bundle.fields import is_int, json_type, optional, text_map
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import load_json, write_json

SCHEMA_VERSION = 1
READABLE = (0, 1)
MISSING = "not a precision graph folder (no facts.json)"
PRECISIONS = ("fp32", "fp16", "int8")
# How the graphs were made: what ``precision.settings_for`` returns (part of the cache key).
SETTINGS = ("precision", "quantizer", "method", "tokenizer", "high_precision", "keep_fp32", "qdq")


@dataclass(frozen=True)
class BucketCoverage:
    """How many calibration images fell into one bucket's token range."""

    min: int
    max: int
    images: int


@dataclass(frozen=True)
class CalibrationImages:
    """The INT8 calibration images: how many, their digest, and how they cover the buckets."""

    images: int
    images_sha256: str
    coverage: tuple[BucketCoverage, ...]
    missed_buckets: tuple[int, ...]  # buckets no image fell into

    @classmethod
    def from_dict(cls, d: dict) -> CalibrationImages:
        coverage = tuple(BucketCoverage(c["min"], c["max"], c["images"]) for c in d["coverage"])
        return cls(d["images"], d["images_sha256"], coverage, tuple(d["missed_buckets"]))

    def to_dict(self) -> dict:
        coverage = [{"min": c.min, "max": c.max, "images": c.images} for c in self.coverage]
        d = {"images": self.images, "images_sha256": self.images_sha256, "coverage": coverage}
        return d | {"missed_buckets": list(self.missed_buckets)}


@dataclass(frozen=True)
class PrecisionFacts:
    """What made a precision graph set, and the digests of its graphs."""

    settings: dict  # ``SETTINGS``: the precision and how the graphs were made
    cache_key: str | None = None  # names the set and its cache entry (``precision.cache_key``)
    versions: dict | None = None  # the tools that made the graphs
    calibration: CalibrationImages | None = None  # INT8 only
    files: dict[str, str] | None = None  # graph file -> sha256, in a delivered set (not in a cache entry)
    cache: str | None = None  # "hit" or "miss": how this build got the graphs (engine manifests only)
    extra: dict = field(default_factory=dict)  # keys this version does not model

    @property
    def precision(self) -> str:
        return self.settings["precision"]

    @classmethod
    def from_file(cls, file: Path) -> PrecisionFacts:
        return cls.from_dict(load_json(file, MISSING).content, file)

    @classmethod
    def from_dict(cls, d: object, file: Path | None = None) -> PrecisionFacts:
        """The record of parsed facts, refused (naming ``file``) if a reader could trip on them."""
        problem = facts_problem(d)
        if problem:
            raise MsvitEdgeError(problem, file)
        known = {*SETTINGS, *cls.__dataclass_fields__, "schema_version"}
        return cls(
            settings={k: d[k] for k in SETTINGS if k in d},
            cache_key=d.get("cache_key"),
            versions=d.get("versions"),
            calibration=None if d.get("calibration") is None else CalibrationImages.from_dict(d["calibration"]),
            files=d.get("files"),
            cache=d.get("cache"),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict:
        d = {"calibration": None if self.calibration is None else self.calibration.to_dict()}
        d |= {"cache_key": self.cache_key, "versions": self.versions, "files": self.files, "cache": self.cache}
        present = {k: v for k, v in d.items() if v is not None}
        return {"schema_version": SCHEMA_VERSION} | self.settings | present | self.extra

    def write(self, file: Path) -> None:
        """Write the facts to ``file``, atomically."""
        write_json(file, self.to_dict())

    def engine_entry(self) -> dict:
        """What an engine manifest records of these facts (its own ``files`` record the graphs' digests)."""
        return {k: v for k, v in self.to_dict().items() if k != "files"}

    def key_entry(self) -> dict:
        """What of these facts decides an engine (part of its cache key): neither how this build got the graphs
        (a cache hit is the same graphs) nor the version of the facts' format."""
        return {k: v for k, v in self.to_dict().items() if k not in ("cache", "schema_version")}


def facts_problem(d: object) -> str | None:
    """What is wrong with parsed facts, as the one-line error says it, or None."""
    problem = _problem(d)
    return None if problem is None else f"not the facts of a precision graph set{problem}"


def _problem(d: object) -> str | None:
    if not isinstance(d, dict) or d.get("precision") not in PRECISIONS:
        return ""
    version = d.get("schema_version", 0)
    if not is_int(version) or version not in READABLE:
        return f": schema_version is {version!r}, this msvit-edge reads {' or '.join(map(str, READABLE))}"
    kinds = {"cache_key": str, "versions": dict, "calibration": dict, "files": dict, "cache": str}
    for key, kind in kinds.items():
        if not optional(d.get(key), kind):
            return f": {key!r} is {json_type(d[key])}"
    if d.get("files") is not None and not text_map(d["files"]):
        return ": 'files' must map graph files to their sha256"
    calibration = d.get("calibration")
    if calibration is not None and not _calibration_ok(calibration):
        return ": 'calibration' needs images, images_sha256, coverage [{min, max, images}] and missed_buckets"
    return None


def _calibration_ok(c: dict) -> bool:
    coverage, missed = c.get("coverage"), c.get("missed_buckets")
    return (
        is_int(c.get("images"))
        and isinstance(c.get("images_sha256"), str)
        and isinstance(coverage, list)
        and all(isinstance(b, dict) and all(is_int(b.get(k)) for k in ("min", "max", "images")) for b in coverage)
        and isinstance(missed, list)
        and all(map(is_int, missed))
    )
