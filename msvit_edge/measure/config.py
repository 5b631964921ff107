"""What ``bench`` is asked to do: the command line's options as one checked record, and the timing part of it that
every latency measurement takes. It travels unchanged from the CLI into the report's ``settings``."""

from __future__ import annotations

from dataclasses import dataclass

from msvit_edge.bundle.selection import BATCHING
from msvit_edge.errors import require

DEVICES = ("auto", "cpu", "cuda", "jetson")


@dataclass(frozen=True)
class Timing:
    """How long to time one candidate set: untimed warm-up seconds, then timed seconds or a fixed number of calls."""

    warmup: float
    min_seconds: float
    iters: int | None

    def short(self) -> Timing:
        """Half the time, at most half a second of warm-up: the token curve and each threshold of a sweep."""
        return Timing(min(self.warmup, 0.5), self.min_seconds / 2, self.iters)


@dataclass
class BenchConfig:
    sources: tuple[str, ...] = ("bundle",)  # engine directories or bundles
    device: str = "auto"
    data: str | None = None  # labelled images (test split); default: the bundle's validation images
    ckpt: str | None = None  # the bundle's checkpoint, for PyTorch's answers on ``data`` and torch: sources
    limit: int = 500  # images from ``data`` (drawn at random, seeded, as ``eval --limit`` does)
    batch: tuple[int, ...] = (1, 32)
    thresholds: tuple[float, ...] = ()  # gate thresholds to sweep (accuracy and batch-1 latency at each)
    batching: str = "split"  # how a batch with mixed token counts reaches the encoder: see msvit_edge.bundle.selection
    warmup: float = 1.0  # seconds of untimed calls before timing
    min_seconds: float = 3.0  # timed seconds per batch size (each of MSViT and the plain ViT)
    iters: int | None = None  # timed calls per batch size instead of ``min_seconds``
    threads: int | None = None  # ONNX Runtime intra-op threads
    out: str = "runs/bench"
    force: bool = False
    min_accuracy: float | None = None  # CI gate: fail when an engine's top-1 is below (0..1)
    min_agreement: float | None = None  # CI gate: fail when top-1 agreement with PyTorch is below (0..1)
    ignore_index: int | None = None  # segmentation --data: the masks' unlabelled value (None: the bundle's export's)

    def __post_init__(self) -> None:
        require(
            {
                f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}": self.device in DEVICES,
                f"--batching must be one of {', '.join(BATCHING)}, got {self.batching!r}": self.batching in BATCHING,
                f"--batch sizes must be >= 1, got {list(self.batch)}": bool(self.batch) and min(self.batch) >= 1,
                f"--thresholds must be in [0, 1], got {list(self.thresholds)}": all(
                    0 <= t <= 1 for t in self.thresholds
                ),
                f"--limit must be >= 1, got {self.limit}": self.limit >= 1,
                "--warmup and --min-seconds must be >= 0": min(self.warmup, self.min_seconds) >= 0,
                f"--iters must be >= 1, got {self.iters}": self.iters is None or self.iters >= 1,
                "no engine directory or bundle to bench": bool(self.sources),
            }
        )

    @property
    def timing(self) -> Timing:
        return Timing(self.warmup, self.min_seconds, self.iters)

    @classmethod
    def from_dict(cls, settings: dict) -> BenchConfig:
        """The inverse of ``dataclasses.asdict`` after a JSON round trip (lists back to tuples); checked again."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
