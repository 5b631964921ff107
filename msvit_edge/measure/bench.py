"""``msvit-edge bench``: does an engine still classify like PyTorch, how fast is it, how much did mixed-scale tokens
buy over the plain ViT on this hardware, and at what power.

Each source (an engine directory, or a bundle: its FP32 graphs in ONNX Runtime) is measured on its own; one that
fails is reported as failed and the others still run. Per source:
- accuracy: top-1 against the labels, for the engine and for PyTorch, top-1 agreement, logit error, token-count
  agreement, per bucket. The reference is the bundle's stored PyTorch answers on its validation images, or, with
  ``data`` and PyTorch installed, the PyTorch model run on those images now;
- latency per batch size: MSViT end to end (tokenizer, selection and encoder split out) timed interleaved with the
  plain ViT of the same weights on the same backend and precision, so that machine noise hits both alike; the
  measured speedup beside the ideal one from MACs, and their ratio, the efficiency;
- the encoder alone at each bucket's maximum and at all-fine (the latency-vs-tokens curve);
- per gate threshold: accuracy and batch-1 latency (the deploy-time knob);
- memory, and on a Jetson the power of every rail during the timed run.
The report (``msvit_edge.measure.report``) is JSON with a versioned schema, CSV, Markdown and plots.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle, Reference, validation
from msvit_edge.bundle.engine_folder import EngineDir, open_source
from msvit_edge.bundle.selection import BATCHING, Selection
from msvit_edge.errors import MsvitEdgeError, require
from msvit_edge.machine.environment import has_nvidia_gpu
from msvit_edge.measure.timing import interleaved
from msvit_edge.model.config import MSViTConfig
from msvit_edge.model.flops import encoder_macs, msvit_macs, vit_macs

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "jetson")
HIGH_CV = 0.05  # trtexec warns when timings vary more than a few percent: the numbers are then not repeatable


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


@dataclass
class Images:
    """What every source is measured on: preprocessed images, labels and (when known) PyTorch's answers."""

    x: np.ndarray  # float32 [N, C, H, W], normalised for the tokenizer
    labels: np.ndarray  # int64 [N]
    reference: Reference | None  # PyTorch's logits, counts and probs on ``x`` at the bundle's threshold
    origin: str  # where the images and the reference came from, for the report


@dataclass
class Result:
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


def bench(cfg: BenchConfig) -> dict:
    """Measure every source in ``cfg``; write the reports; return the report dict."""
    from msvit_edge.measure import report as reports

    device = resolve_device(cfg.device)
    opened = {source: _open(source, cfg.ckpt) for source in cfg.sources}  # inputs first: their errors are the real ones
    images = {source: load_images(s, cfg) for source, s in opened.items()}
    reports.check_out(cfg.out, cfg.force)
    results = []
    for source, s in opened.items():
        log.info(f"bench: {source} on {device}")
        results.append(bench_source(source, s, images[source], cfg, device))
        log.info(reports.result_line(results[-1]))
    report = reports.assemble(cfg, device, results)
    reports.write(report, results, cfg.out, cfg.force)
    log.info(reports.table(report))
    log.info(f"reports: {cfg.out}")
    reports.check_gates(report, cfg.min_accuracy, cfg.min_agreement)
    return report


def resolve_device(device: str) -> str:
    """``auto``: jetson on a Jetson, cuda with an NVIDIA GPU, else cpu; a named device must be present."""
    from msvit_edge.machine import jetson

    if device == "jetson" or (device == "auto" and jetson.detect() is not None):
        jetson.require_jetson()
        return "jetson"
    has_gpu = has_nvidia_gpu()
    if device == "cuda" and not has_gpu:
        raise MsvitEdgeError("--device cuda: no NVIDIA GPU found (nvidia-smi lists none, no /dev/nvidia0)")
    return "cuda" if device == "cuda" or (device == "auto" and has_gpu) else "cpu"


def bench_source(
    source: str, opened: Bundle | EngineDir | TorchSource, images: Images, cfg: BenchConfig, device: str
) -> Result:
    """Everything for one opened source; any failure becomes the result's status and error, never an exception."""
    result = Result(source)
    try:
        result.info = describe_source(opened)
        _check_built_here(opened, device)
        result.accuracy["images"] = images.origin
        with open_source_pipeline(opened, cfg, device) as pipe:
            measure(pipe, opened, images, cfg, device, result)
    except MsvitEdgeError as e:
        result.status, result.error = "failed", str(e)
    except Exception as e:  # a backend's own error (ORT, TensorRT, CUDA) fails this source, never the whole run
        result.status, result.error = "failed", f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    return result


TORCH_BACKENDS = ("torch", "torch-cudagraphs")  # written BACKEND:BUNDLE: the bundle's own PyTorch model


@dataclass
class TorchSource:
    """A bundle run by its PyTorch model (``msvit_edge.engines.pytorch.bundle_model``), loaded on first use.

    It answers what ``measure`` and ``load_images`` ask of a source (``bundle``, ``plan``, ``threshold``).
    """

    bundle: Bundle
    backend: str  # torch (eager) or torch-cudagraphs
    ckpt: str | None = None  # the bundle's checkpoint (found by sha256; the demo's is found without it)

    @property
    def plan(self):
        return self.bundle.plan

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    @cached_property
    def model(self):
        from msvit_edge.engines.pytorch import bundle_model

        return bundle_model(self.bundle, self.ckpt)


def _open(source: str, ckpt: str | None = None) -> Bundle | EngineDir | TorchSource:
    """An engine directory, a bundle, or ``torch:BUNDLE`` / ``torch-cudagraphs:BUNDLE``."""
    backend, sep, path = source.partition(":")
    if not sep or backend not in TORCH_BACKENDS:
        return open_source(source)
    opened = open_source(path)
    if not isinstance(opened, Bundle):
        raise MsvitEdgeError(f"{backend}: runs a bundle's PyTorch model, not an engine directory", path)
    return TorchSource(opened, backend, ckpt)


def describe_source(source: Bundle | EngineDir | TorchSource) -> dict:
    bundle = source if isinstance(source, Bundle) else source.bundle
    if isinstance(source, TorchSource):
        size = sum(p.numel() * p.element_size() for p in source.model.parameters())
        backend, precision = source.backend, "fp32"
    else:
        size = sum(source.graph(n).stat().st_size for n in ("tokenizer", "encoder", "encoder_masked"))
        backend = source.backend if isinstance(source, EngineDir) else "onnxruntime"
        precision = source.precision if isinstance(source, EngineDir) else "fp32"
    return {
        "backend": backend,
        "precision": precision,
        "bundle": str(bundle.path),
        "latency_only": bool(bundle.manifest.get("latency_only")),
        "size_mb": size / 1e6,  # a torch source: its parameters' bytes
        "threshold": bundle.threshold,
    }


def _check_built_here(source: Bundle | EngineDir | TorchSource, device: str) -> None:
    """Torch sources need the device they run on; engine folders are checked by ``open_pipeline``."""
    if isinstance(source, TorchSource):
        _check_torch_device(source.backend, device)


def _check_torch_device(backend: str, device: str) -> None:
    """A torch source on cpu, or on a GPU (cuda, jetson) through a CUDA build of PyTorch; CUDA graphs need one."""
    if backend == "torch-cudagraphs" and device == "cpu":
        raise MsvitEdgeError(
            "torch-cudagraphs: CUDA graphs need a CUDA GPU and this bench runs on the CPU: bench torch:BUNDLE "
            "here, or this source with --device cuda on a GPU machine"
        )
    if device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise MsvitEdgeError(
                f"{backend}: this PyTorch {torch.__version__} cannot use CUDA (torch.cuda.is_available() is False): "
                "install a CUDA build of torch, or bench with --device cpu"
            )


def open_source_pipeline(source: Bundle | EngineDir | TorchSource, cfg: BenchConfig, device: str):
    from msvit_edge.engines import open_pipeline

    options = {"batching": cfg.batching}
    if isinstance(source, TorchSource):
        options |= {"model": source.model, "device": "cpu" if device == "cpu" else "cuda"}
        return open_pipeline(source.bundle, source.backend, **options)
    backend = source.backend if isinstance(source, EngineDir) else "onnxruntime"
    if backend == "onnxruntime":
        options |= {"threads": cfg.threads, "device": "cuda" if device == "cuda" else "cpu"}
    return open_pipeline(source, **options)


# ---- images and accuracy ---------------------------------------------------------------------------------------


def load_images(source: Bundle | EngineDir, cfg: BenchConfig) -> Images:
    """The bundle's validation images with their stored reference, or ``cfg.data`` with PyTorch's answers now."""
    bundle = source if isinstance(source, Bundle) else source.bundle
    if cfg.data is None:
        ref = bundle.reference()
        return Images(bundle.preprocess(ref.images), ref.labels, ref, f"{len(ref.labels)} bundle validation images")
    return _data_images(str(bundle.path.resolve()), cfg.data, cfg.limit, cfg.ckpt)


@cache
def _data_images(bundle_path: str, data: str, limit: int, ckpt: str | None) -> Images:
    """Read once per bundle: every engine of a run is measured on the same images and reference."""
    from msvit_edge.measure.reference import reference_on

    bundle = Bundle(bundle_path)
    x, labels = _read_data(bundle, data, limit)
    ref, why = reference_on(bundle, x, labels, ckpt)
    origin = f"{len(x)} images of {data} (test split); reference: {why}"
    return Images(x, labels, ref, origin)


def _read_data(bundle: Bundle, data: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed images and labels of ``data``'s test split, ``limit`` drawn at random (as ``eval --limit``)."""
    try:
        import torch
    except ImportError:
        return _read_folder(bundle, Path(data), limit)
    from torch.utils.data import DataLoader

    from msvit_edge.data import open_dataset, random_subset

    vit = MSViTConfig.from_dict(bundle.manifest["model"]).vit
    dataset = random_subset(open_dataset(data, "test", vit.img_size, vit.mean, vit.std), limit)  # never empty
    batches = list(DataLoader(dataset, batch_size=256))
    return torch.cat([x for x, _ in batches]).numpy(), torch.cat([y for _, y in batches]).numpy().astype(np.int64)


def _read_folder(bundle: Bundle, root: Path, limit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Without PyTorch (a Jetson): an ImageFolder tree, loaded and resized as training did (``Bundle.load_images``)."""
    from msvit_edge.bundle.preprocess import folder_samples

    if not root.is_dir():
        raise MsvitEdgeError("without PyTorch, --data takes an ImageFolder tree (root/<class>/<images>)", root)
    samples, _ = folder_samples(root / "test" if (root / "test").is_dir() else root)
    keep = np.sort(np.random.default_rng(seed).permutation(len(samples))[:limit])
    paths, labels = zip(*(samples[i] for i in keep), strict=True)
    return bundle.preprocess(bundle.load_images(list(paths))), np.asarray(labels, np.int64)


def measure(pipe, source, images: Images, cfg: BenchConfig, device: str, result: Result) -> None:
    """Accuracy, then latency, the token curve and the threshold sweep, into ``result``."""
    threshold = source.threshold
    outs = [pipe(images.x[i : i + 32], threshold) for i in range(0, len(images.x), 32)]
    logits, counts = np.concatenate([o.logits for o in outs]), np.concatenate([o.counts for o in outs])
    result.counts = counts.tolist()
    result.accuracy |= accuracy(logits, counts, images, source.plan)
    result.error = verdict(result.accuracy, result.info, cfg)
    result.status = "passed" if result.error is None else "validation failed"
    acc = result.accuracy
    log.info(f"  accuracy: top-1 {_pct(acc['top1'])} (PyTorch {_pct(acc.get('reference_top1'))})")
    vit = _plain_vit(pipe)
    for b in cfg.batch:
        result.latency[str(b)] = time_batch(pipe, vit, images.x, counts, b, threshold, cfg, source)
        log.info(_latency_line(b, result.latency[str(b)]))
    result.curve = token_curve(pipe, vit, images.x, source, cfg)
    result.thresholds = [sweep_point(pipe, images, t, cfg) for t in cfg.thresholds]
    result.info |= memory() | pipe.device_memory()
    if device == "jetson":
        result.power = power(pipe, images.x, threshold, cfg)


def accuracy(logits: np.ndarray, counts: np.ndarray, images: Images, plan) -> dict:
    """Top-1 against labels; with a reference, agreement, logit error and count agreement overall and per bucket."""
    out = {"top1": float((logits.argmax(1) == images.labels).mean()), "n": len(logits)}
    ref = images.reference
    if ref is None:
        return out | {"reference": None}
    buckets = np.array([plan.index(int(c)) for c in ref.counts])
    out |= {
        "reference_top1": float((ref.logits.argmax(1) == images.labels).mean()),
        "agreement": float((logits.argmax(1) == ref.logits.argmax(1)).mean()),
        "counts_agreement": float((counts == ref.counts).mean()),
        "counts_differ": int((counts != ref.counts).sum()),
        "logits": validation.compare(logits, ref.logits),
        "per_bucket": [
            _bucket_accuracy(logits, counts, ref, images.labels, buckets == k) for k in range(len(plan.buckets))
        ],
    }
    return out


def _bucket_accuracy(logits, counts, ref: Reference, labels, where: np.ndarray) -> dict:
    if not where.any():
        return {"images": 0}
    return {
        "images": int(where.sum()),
        "top1": float((logits[where].argmax(1) == labels[where]).mean()),
        "agreement": float((logits[where].argmax(1) == ref.logits[where].argmax(1)).mean()),
        "counts_agreement": float((counts[where] == ref.counts[where]).mean()),
        "max_abs": float(np.abs(logits[where] - ref.logits[where]).max()),
    }


def verdict(acc: dict, info: dict, cfg: BenchConfig) -> str | None:
    """Why the source fails: its precision's tolerance against PyTorch (``validation.verdict``, as build applies
    it) or a CI gate; None when it passes or there is no PyTorch reference to hold it to."""
    reason = None
    if "logits" in acc:  # compared with PyTorch's answers on the same images
        tolerance, top1 = validation.TOLERANCES[info["precision"]], (acc["top1"], acc["reference_top1"])
        reason = validation.verdict(
            acc["logits"], acc["counts_differ"], acc["n"], tolerance, info["latency_only"], top1
        )
    if reason is None and cfg.min_accuracy is not None and not acc["top1"] >= cfg.min_accuracy:
        reason = f"top-1 {100 * acc['top1']:.2f}% is below --min-accuracy {100 * cfg.min_accuracy:.2f}%"
    if reason is None and cfg.min_agreement is not None and not acc.get("agreement", 0.0) >= cfg.min_agreement:
        reason = f"top-1 agreement with PyTorch is below --min-agreement {100 * cfg.min_agreement:.2f}%"
    return reason


# ---- latency ---------------------------------------------------------------------------------------------------


def _plain_vit(pipe) -> Callable[[np.ndarray], np.ndarray] | None:
    """The plain ViT of the same weights on the pipeline's backend and precision, when the source has one."""
    try:
        return pipe.plain_vit()
    except MsvitEdgeError:
        return None


def time_batch(pipe, vit, x: np.ndarray, counts: np.ndarray, batch: int, threshold: float, cfg, source) -> dict:
    """MSViT end to end at ``batch``, interleaved with the plain ViT; stage split; speedup and efficiency."""
    from msvit_edge.engines.pipeline import StageTimes

    batches = _batches(x, batch)
    candidates = {"msvit": lambda i: pipe(batches[i % len(batches)], threshold)}
    if vit is not None:
        candidates["vit"] = lambda i: vit(batches[i % len(batches)])
    repeats = _repeats(candidates, cfg, pipe.synchronize)
    pipe.timer = StageTimes()
    times = interleaved(candidates, repeats, warmup=0, sync=pipe.synchronize)
    stages = {k: 1e3 * statistics.median(v) for k, v in pipe.timer.seconds.items()}
    pipe.timer = None
    out = _stats(times["msvit"], batch) | {"stages_ms": stages}
    mean_tokens = float(np.mean([counts[i % len(counts)] for i in range(len(batches) * batch)]))
    vit_cfg = MSViTConfig.from_dict(_bundle(source).manifest["model"])
    ideal = vit_macs(vit_cfg.vit) / msvit_macs(vit_cfg.vit, vit_cfg.gate, mean_tokens)
    out |= {"mean_tokens": mean_tokens, "ideal_speedup": ideal}
    if vit is not None:
        out["vit"] = _stats(times["vit"], batch)
        out["speedup"] = out["vit"]["p50_ms"] / out["p50_ms"]
        out["efficiency"] = out["speedup"] / ideal
    return out


def _batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Batches of ``batch`` real images, cycling through them (at least one batch)."""
    n = max(1, len(x) // batch)
    index = np.arange(n * batch) % len(x)
    return [np.ascontiguousarray(x[index[i * batch : (i + 1) * batch]]) for i in range(n)]


def _repeats(candidates: dict, cfg, sync) -> int:
    """Warm up for ``cfg.warmup`` seconds; then as many rounds as fill ``cfg.min_seconds`` (or ``cfg.iters``)."""
    start, rounds = time.perf_counter(), 0
    while rounds < 2 or time.perf_counter() - start < cfg.warmup:
        for fn in candidates.values():
            fn(rounds)
        sync()
        rounds += 1
    if cfg.iters is not None:
        return cfg.iters
    per_round = (time.perf_counter() - start) / rounds
    return max(10, math.ceil(cfg.min_seconds * len(candidates) / max(per_round, 1e-9)))


def _stats(seconds: list[float], batch: int) -> dict:
    ms = np.asarray(seconds) * 1e3
    mean = float(ms.mean())
    return {
        "iters": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": mean,
        "std_ms": float(ms.std()),
        "cv": float(ms.std() / mean),
        "images_per_s": batch * 1e3 / mean,
    }


def token_curve(pipe, vit, x: np.ndarray, source, cfg) -> list[dict]:
    """The encoder alone at batch 1 at each bucket's maximum and all-fine, on real all-fine tokens of one image."""
    plan = source.plan
    counts = sorted({b.max for b in plan.buckets})
    tokens = pipe.tokenize(x[:1], 0.0).tokens  # every region fine: the first n rows are real tokens for any n
    calls = {n: Selection(np.array([0]), np.array([n]), n, plan.index(n)) for n in counts}
    inputs = {n: pipe.cut(tokens, call) for n, call in calls.items()}
    candidates: dict = {n: (lambda i, n=n: pipe.encode(inputs[n], calls[n])) for n in counts}
    if vit is not None:  # in the same interleaved run, so that the plot's lines are comparable
        candidates["vit"] = lambda i: vit(x[:1])
    short = BenchConfig(warmup=min(cfg.warmup, 0.5), min_seconds=cfg.min_seconds / 2, iters=cfg.iters)
    times = interleaved(candidates, _repeats(candidates, short, pipe.synchronize), warmup=0, sync=pipe.synchronize)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    vit_cfg = MSViTConfig.from_dict(_bundle(source).manifest["model"]).vit
    return [
        {
            "tokens": n,
            "encoder_ms": ms[n],
            "ideal_ms": ms[counts[-1]] * encoder_macs(vit_cfg, n) / encoder_macs(vit_cfg, counts[-1]),
            "vit_ms": ms.get("vit"),
        }
        for n in counts
    ]


def sweep_point(pipe, images: Images, threshold: float, cfg: BenchConfig) -> dict:
    """Accuracy, mean tokens and batch-1 latency at one gate threshold."""
    outs = [pipe(images.x[i : i + 32], threshold) for i in range(0, len(images.x), 32)]
    logits, counts = np.concatenate([o.logits for o in outs]), np.concatenate([o.counts for o in outs])
    batches = _batches(images.x, 1)
    candidates = {"msvit": lambda i: pipe(batches[i % len(batches)], threshold)}
    short = BenchConfig(warmup=min(cfg.warmup, 0.5), min_seconds=cfg.min_seconds / 2, iters=cfg.iters)
    times = interleaved(candidates, _repeats(candidates, short, pipe.synchronize), warmup=0, sync=pipe.synchronize)
    return {
        "threshold": threshold,
        "top1": float((logits.argmax(1) == images.labels).mean()),
        "mean_tokens": float(counts.mean()),
        "p50_ms": 1e3 * statistics.median(times["msvit"]),
    }


def _bundle(source: Bundle | EngineDir) -> Bundle:
    return source if isinstance(source, Bundle) else source.bundle


# ---- memory and power ------------------------------------------------------------------------------------------


def memory() -> dict:
    """Host resident memory now and at its peak (the process's, since it started), MB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kb = {k: float(status[k].split()[0]) for k in ("VmRSS", "VmHWM") if k in status}
    return {"rss_mb": kb.get("VmRSS", math.nan) / 1e3, "peak_rss_mb": kb.get("VmHWM", math.nan) / 1e3}


def power(pipe, x: np.ndarray, threshold: float, cfg: BenchConfig, idle_s: float = 2.0) -> dict:
    """Jetson rail power: idle for ``idle_s``, then batch-1 inference for ``cfg.min_seconds``."""
    from msvit_edge.machine import jetson

    info = jetson.detect()
    batches = _batches(x, 1)
    with jetson.open_power_sampler(100) as sampler:
        t0 = time.monotonic()
        time.sleep(idle_s)
        t1, n = time.monotonic(), 0
        while time.monotonic() - t1 < max(cfg.min_seconds, 2.0):
            pipe(batches[n % len(batches)], threshold)
            n += 1
        pipe.synchronize()
        t2 = time.monotonic()
    summary = sampler.summary((t1, t2), n, (t0, t1), info, jetson.passive_trips())
    return summary.to_dict()


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _latency_line(batch: int, lat: dict) -> str:
    line = f"  batch {batch}: p50 {lat['p50_ms']:.3f} ms, {lat['images_per_s']:.1f} img/s"
    if "speedup" in lat:
        line += f"; plain ViT {lat['vit']['p50_ms']:.3f} ms: speedup {lat['speedup']:.2f}x of ideal "
        line += f"{lat['ideal_speedup']:.2f}x (efficiency {lat['efficiency']:.2f})"
    if lat["cv"] > HIGH_CV:
        line += f"; WARNING: timings vary (CV {100 * lat['cv']:.0f}%), the machine is busy or throttling"
    return line
