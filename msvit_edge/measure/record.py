"""The bench report as a typed record: ``BenchReport`` (the run) of ``SourceResult``s (one per source), with its one
writer (``BenchReport.write``: report.json) and its one reader (``BenchReport.read``, which checks what it reads
and names the file in any error). The fields are documented in docs/bench-report.md.

Schema versions: 1 wrote the same keys, unchecked; 2 is the typed record; 3 adds ``n`` to the row and each batch
size's ``speedup_interval`` and ``efficiency_interval``, and measures ``size_mb`` and ``ideal_speedup`` as
docs/bench-report.md says. All three are read.

A segmentation source (``accuracy["metric"]`` is ``DENSE_METRIC``; schema 3 as well: keys added, none changed) has
mIoU, pixel accuracy, per-class IoU and boundary recall in ``accuracy`` instead of top-1 (PyTorch's as
``reference_<key>``; ``agreement`` is per pixel), and its row ``miou``, ``pixel_accuracy`` and ``boundary_recall``
where a classifier's has ``top1``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from msvit_edge.bundle.validation import is_dense
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import write_json
from msvit_edge.machine.environment import this_machine
from msvit_edge.measure.config import BenchConfig

SCHEMA_VERSION = 3
READABLE = (1, 2, 3)
HIGH_CV = 0.05  # trtexec warns when timings vary more than a few percent: the numbers are then not repeatable
STATUSES = ("passed", "validation failed", "failed")
DENSE_SCORES = ("miou", "pixel_accuracy", "boundary_recall")  # what its row shows where a classifier's has top1
_TYPES = {  # JSON type of each field of a source's result, for the reader's checks
    "source": str,
    "status": str,
    "error": (str, type(None)),
    "info": dict,
    "accuracy": dict,
    "latency": dict,
    "curve": list,
    "thresholds": list,
    "power": (dict, type(None)),
    "counts": list,
}


@dataclass
class SourceResult:
    """One source's measurements; ``status`` is passed, validation failed, or failed (with ``error``)."""

    source: str
    status: str = "failed"
    error: str | None = None
    info: dict = field(default_factory=dict)  # backend, precision, size, device memory, ...
    accuracy: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)  # per batch size
    curve: list[dict] = field(default_factory=list)  # encoder latency per token count
    thresholds: list[dict] = field(default_factory=list)
    power: dict | None = None
    counts: list[int] = field(default_factory=list)  # token count per image, for the histogram

    @property
    def dense(self) -> bool:
        """Whether this is a segmentation source's result (scored by mIoU)."""
        return is_dense(self.accuracy)

    @property
    def row(self) -> dict:
        """The status-table row (None where not measured); a segmentation source's has ``DENSE_SCORES`` for top1."""
        lat, acc, info = self.latency, self.accuracy, self.info
        smallest, largest = (lat[min(lat, key=int)], lat[max(lat, key=int)]) if lat else ({}, {})
        scores = DENSE_SCORES if self.dense else ("top1",)
        return {
            "source": self.source,
            "status": self.status,
            "backend": info.get("backend"),
            "precision": info.get("precision"),
            "size_mb": info.get("size_mb"),
            "n": acc.get("n"),
            **{k: None if info.get("latency_only") else acc.get(k) for k in scores},
            "agreement": acc.get("agreement"),
            "p50_ms": smallest.get("p50_ms"),
            "images_per_s": largest.get("images_per_s"),
            "speedup": smallest.get("speedup"),
            "efficiency": smallest.get("efficiency"),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: object, where: str) -> SourceResult:
        """One entry of ``engines``, checked (``row`` is derived, so it is not read); ``where`` names it in errors."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not an object")
        for name, kind in _TYPES.items():
            if name not in data:
                raise ValueError(f"{where} has no {name!r}")
            if not isinstance(data[name], kind):
                raise ValueError(f"{where}.{name} is {type(data[name]).__name__}, not {_names(kind)}")
        if data["status"] not in STATUSES:
            raise ValueError(f"{where}.status is {data['status']!r}, not one of {', '.join(STATUSES)}")
        return cls(**{name: data[name] for name in _TYPES})


@dataclass
class BenchReport:
    """A bench run: when, where, with which settings, on which machine, and each source's result in order."""

    settings: BenchConfig
    device: str  # cpu, cuda or jetson: what --device resolved to
    engines: list[SourceResult]
    environment: dict = field(default_factory=this_machine)  # msvit_edge.machine.environment.environment()
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    schema_version: int = SCHEMA_VERSION  # the version this report was written with (older ones stay as read)

    def to_dict(self) -> dict:
        """The JSON object, keys in the documented order; each engine with its status-table ``row``."""
        return {
            "schema_version": self.schema_version,
            "created": self.created,
            "device": self.device,
            "settings": asdict(self.settings),
            "environment": self.environment,
            "engines": [asdict(r) | {"row": r.row} for r in self.engines],
        }

    def write(self, path: str | Path) -> None:
        """The one writer of report.json (atomically)."""
        write_json(Path(path), self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> BenchReport:
        """The one reader: a report.json (or the report folder holding it) of any readable schema, checked.

        Raises ``MsvitEdgeError`` "PATH: problem" for a file that is missing, not JSON, or not a bench report.
        """
        path = Path(path)
        path = path / "report.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise MsvitEdgeError(f"cannot read the bench report ({e.strerror or e})", path) from None
        except ValueError as e:
            raise MsvitEdgeError(f"not a JSON file ({e})", path) from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError, MsvitEdgeError) as e:
            raise MsvitEdgeError(f"not a bench report msvit-edge can read: {e}", path) from None

    @classmethod
    def from_dict(cls, data: object) -> BenchReport:
        """The record from its JSON object; ``ValueError`` (or the settings' own error) says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("the file holds no JSON object")
        if data.get("schema_version") not in READABLE:
            raise ValueError(f"schema_version is {data.get('schema_version')!r}, this msvit-edge reads {READABLE}")
        for name, kind in (("created", str), ("device", str), ("settings", dict), ("environment", dict)):
            if not isinstance(data.get(name), kind):
                raise ValueError(f"{name!r} is missing or not {_names(kind)}")
        if not isinstance(data.get("engines"), list):
            raise ValueError("'engines' is missing or not a list")
        engines = [SourceResult.from_dict(e, f"engines[{i}]") for i, e in enumerate(data["engines"])]
        settings = BenchConfig.from_dict(data["settings"])
        return cls(settings, data["device"], engines, data["environment"], data["created"], data["schema_version"])


def spread(latency: dict) -> float:
    """The larger coefficient of variation of one batch size's timings: MSViT's, or the plain ViT's."""
    return max(latency["cv"], latency.get("vit", {}).get("cv", 0.0))


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
