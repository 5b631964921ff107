"""``msvit-edge bench``: does an engine still classify like PyTorch, how fast is it, how much did mixed-scale tokens
buy over the plain ViT on this hardware, and at what power.

Each source (an engine directory, or a bundle: its FP32 graphs in ONNX Runtime) is measured on its own; one that
fails is reported as failed and the others still run. Per source:
- accuracy: top-1 against the labels, for the engine and for PyTorch, top-1 agreement, logit error, token-count
  agreement, per bucket. The reference is the bundle's stored PyTorch answers on its validation images, or, with
  ``data`` and PyTorch installed, the PyTorch model run on those images now. A segmentation bundle's sources: mIoU,
  pixel accuracy, per-class IoU and the gate's boundary recall instead of top-1, per-pixel agreement instead of
  top-1 agreement (``segmentation``), and overlays of the gate's decisions beside the predicted and true masks;
- latency per batch size: MSViT end to end (tokenizer, selection and encoder split out) timed interleaved with the
  plain ViT of the same weights on the same backend and precision, so that machine noise hits both alike; the
  measured speedup beside the ideal one from MACs, and their ratio, the efficiency;
- the encoder alone at each bucket's maximum and at all-fine (the latency-vs-tokens curve);
- per gate threshold: accuracy and batch-1 latency (the deploy-time knob);
- memory, and on a Jetson the power of every rail during the timed run.

The run, top to bottom: the settings (``config.BenchConfig``) -> every source opened once (``sources``) and the
images it is measured on (``images``) -> per source, ``accuracy``, ``latency`` and ``power`` into a
``record.SourceResult`` -> one ``record.BenchReport`` -> the files (``report``: JSON with a versioned schema, CSV,
Markdown and plots).
"""

from __future__ import annotations

import logging

from msvit_edge.bundle.validation import DENSE_METRIC
from msvit_edge.errors import MsvitEdgeError, first_line
from msvit_edge.machine import jetson
from msvit_edge.machine.environment import has_nvidia_gpu
from msvit_edge.measure import report as reports
from msvit_edge.measure.accuracy import accuracy, accuracy_line, verdict
from msvit_edge.measure.config import DEVICES, BenchConfig
from msvit_edge.measure.images import Images, images_per_source
from msvit_edge.measure.latency import batches as _batches  # noqa: F401 - benchmarks/batching.py imports it here
from msvit_edge.measure.latency import latency_line, plain_vit, sweep_point, time_batch, token_curve
from msvit_edge.measure.overlay import OverlaySample, overlay_sample
from msvit_edge.measure.power import memory, power
from msvit_edge.measure.record import BenchReport, SourceResult
from msvit_edge.measure.sources import Source, check_device, describe, open_bench_source, pipeline

__all__ = ["DEVICES", "BenchConfig", "BenchReport", "SourceResult", "bench", "resolve_device"]

log = logging.getLogger(__name__)


def bench(cfg: BenchConfig) -> BenchReport:
    """Measure every source in ``cfg``; write the reports; return the report."""
    device = resolve_device(cfg.device)
    sources = [open_bench_source(name, cfg.ckpt) for name in cfg.sources]  # inputs first: their errors are real
    images = images_per_source(sources, cfg)
    reports.check_out(cfg.out, cfg.force)
    results, overlays = [], {}
    for source, on in zip(sources, images, strict=True):
        log.info(f"bench: {source.name} on {device}")
        result, sample = bench_source(source, on, cfg, device)
        results.append(result)
        overlays |= {} if sample is None else {len(results) - 1: sample}
        log.info(reports.result_line(results[-1]))
    report = BenchReport(cfg, device, results)
    reports.write(report, cfg.out, cfg.force, overlays)
    log.info(reports.table(report))
    log.info(f"reports: {cfg.out}")
    reports.check_gates(report, cfg.min_accuracy, cfg.min_agreement)
    return report


def resolve_device(device: str) -> str:
    """``auto``: jetson on a Jetson, cuda with an NVIDIA GPU, else cpu; a named device must be present."""
    if device == "jetson" or (device == "auto" and jetson.detect() is not None):
        jetson.require_jetson()
        return "jetson"
    has_gpu = has_nvidia_gpu()
    if device == "cuda" and not has_gpu:
        raise MsvitEdgeError("--device cuda: no NVIDIA GPU found (nvidia-smi lists none, no /dev/nvidia0)")
    return "cuda" if device == "cuda" or (device == "auto" and has_gpu) else "cpu"


def bench_source(
    source: Source, images: Images, cfg: BenchConfig, device: str
) -> tuple[SourceResult, OverlaySample | None]:
    """Everything for one opened source, and a segmentation source's overlay images (None for a classifier or where
    it failed first); any failure becomes the result's status and error, never an exception."""
    result, sample = SourceResult(source.name, accuracy={"metric": DENSE_METRIC} if images.dense else {}), None
    try:
        result.info = describe(source)
        check_device(source, device)
        result.accuracy["images"] = images.origin
        with pipeline(source, cfg, device) as pipe:
            sample = measure(pipe, source, images, cfg, device, result)
    except MsvitEdgeError as e:
        result.status, result.error = "failed", str(e)
    except Exception as e:  # a backend's own error (ORT, TensorRT, CUDA) fails this source, never the whole run
        result.status, result.error = "failed", first_line(e)
    return result, sample


def measure(
    pipe, source: Source, images: Images, cfg: BenchConfig, device: str, result: SourceResult
) -> OverlaySample | None:
    """Accuracy, then latency, the token curve and the threshold sweep, into ``result``; a segmentation source's
    overlay images."""
    out = pipe.run_batched(images.x, source.threshold)
    result.counts = out.counts.tolist()
    result.accuracy |= accuracy(out, images, source.plan, source.threshold)
    sample = None
    if images.dense:
        pre, region = source.bundle.record.preprocessing, 2 * source.config.vit.patch_size
        sample = overlay_sample(out, images, source.threshold, pre.mean, pre.std, region)
    result.error = verdict(result.accuracy, result.info, cfg)
    result.status = "passed" if result.error is None else "validation failed"
    log.info(accuracy_line(result.accuracy, result.info))
    vit = plain_vit(pipe)
    for b in cfg.batch:
        result.latency[str(b)] = time_batch(pipe, vit, source, images.x, out.counts, b, cfg.timing)
        log.info(latency_line(b, result.latency[str(b)]))
    result.curve = token_curve(pipe, vit, source, images.x, cfg.timing)
    result.thresholds = [sweep_point(pipe, images, t, cfg.timing) for t in cfg.thresholds]
    result.info |= memory() | pipe.device_memory()
    if device == "jetson":
        result.power = power(pipe, images.x, source.threshold, cfg.min_seconds)
    return sample
