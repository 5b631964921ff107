"""How fast a source is: MSViT end to end per batch size (stages split out), timed interleaved with the plain ViT
of the same weights on the same backend and precision so that machine noise hits both alike, with the measured
speedup beside the ideal one from MACs (each model's head included: a segmenter's decoder on both sides); the encoder
alone per token count; batch-1 latency per gate threshold."""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from msvit_edge.bundle import dense
from msvit_edge.bundle.selection import Selection
from msvit_edge.engines.pipeline import StageTimes
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.measure.accuracy import scores
from msvit_edge.measure.config import Timing
from msvit_edge.measure.images import Images
from msvit_edge.measure.record import DENSE_SCORES, HIGH_CV, spread
from msvit_edge.measure.sources import Source
from msvit_edge.measure.timing import interleaved
from msvit_edge.model.config import MSViTConfig
from msvit_edge.model.flops import encoder_macs, msvit_macs, vit_macs

SWEEP_BATCH = 32  # images per call when a threshold sweep point measures accuracy


def plain_vit(pipe) -> Callable[[np.ndarray], np.ndarray] | None:
    """The baseline: the pipeline's plain ViT (``Pipeline.plain_vit``), or None where the source has none."""
    try:
        return pipe.plain_vit()
    except MsvitEdgeError:
        return None


def time_batch(pipe, vit, source: Source, x: np.ndarray, counts: np.ndarray, batch: int, timing: Timing) -> dict:
    """MSViT end to end at ``batch``, interleaved with the plain ViT; stage split; speedup and efficiency, each with
    its 95% interval over the timed rounds."""
    threshold, calls = source.threshold, batches(x, batch)
    candidates = {"msvit": lambda i: pipe(calls[i % len(calls)], threshold)}
    if vit is not None:
        candidates["vit"] = lambda i: vit(calls[i % len(calls)])
    repeats = _repeats(candidates, timing, pipe.synchronize)
    pipe.timer = StageTimes()
    times = interleaved(candidates, repeats, warmup=0, sync=pipe.synchronize)
    stages = {k: 1e3 * statistics.median(v) for k, v in pipe.timer.seconds.items()}
    pipe.timer = None
    out = _stats(times["msvit"], batch) | {"stages_ms": stages}
    timed = [int(counts[i % len(counts)]) for i in range(len(calls) * batch)]  # the images the calls cycle through
    ideal = ideal_speedup(source.config, timed)
    out |= {"mean_tokens": float(np.mean(timed)), "ideal_speedup": ideal}
    if vit is not None:
        out["vit"] = _stats(times["vit"], batch)
        out["speedup"] = out["vit"]["p50_ms"] / out["p50_ms"]
        out["efficiency"] = out["speedup"] / ideal
        out["speedup_interval"] = interval(times["vit"], times["msvit"])
        out["efficiency_interval"] = [s / ideal for s in out["speedup_interval"]]
    return out


def ideal_speedup(model: MSViTConfig, counts: list[int]) -> float:
    """The plain ViT's MACs over MSViT's, per image, on images with these token counts: the speedup if time were
    MACs. MSViT's are the mean of each image's (attention's N^2 term makes the MACs at the mean count a little
    less), tokenizer and gate included, padding not (what the token counts allow, not what a batch runs). Both
    sides count the model's head (a segmenter's decoder: per fine cell, as large for MSViT as for the plain ViT)."""
    msvit = np.mean([msvit_macs(model.vit, model.gate, n, model.task) for n in counts])
    return float(vit_macs(model.vit, task=model.task) / msvit)


def interval(vit: list[float], msvit: list[float], draws: int = 1000) -> list[float]:
    """The 95% interval of p50(vit) / p50(msvit), by resampling the timed rounds (a round's two calls together, as
    they were timed side by side): how far the machine's noise could move the speedup within this run."""
    rng = np.random.default_rng(0)
    rounds = rng.integers(0, len(msvit), (draws, len(msvit)))
    ratios = np.median(np.asarray(vit)[rounds], axis=1) / np.median(np.asarray(msvit)[rounds], axis=1)
    return [float(r) for r in np.percentile(ratios, [2.5, 97.5])]


def batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Batches of ``batch`` real images, cycling through them (at least one batch)."""
    n = max(1, len(x) // batch)
    index = np.arange(n * batch) % len(x)
    return [np.ascontiguousarray(x[index[i * batch : (i + 1) * batch]]) for i in range(n)]


def _repeats(candidates: dict, timing: Timing, sync) -> int:
    """Warm up for ``timing.warmup`` seconds; then as many rounds as fill ``timing.min_seconds`` (or ``iters``)."""
    start, rounds = time.perf_counter(), 0
    while rounds < 2 or time.perf_counter() - start < timing.warmup:
        for fn in candidates.values():
            fn(rounds)
        sync()
        rounds += 1
    if timing.iters is not None:
        return timing.iters
    per_round = (time.perf_counter() - start) / rounds
    return max(10, math.ceil(timing.min_seconds * len(candidates) / max(per_round, 1e-9)))


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


def token_curve(pipe, vit, source: Source, x: np.ndarray, timing: Timing) -> list[dict]:
    """The encoder alone at batch 1 at each bucket's maximum and all-fine, on real all-fine tokens of one image.

    A segmenter's encoder also gathers each fine cell's row (``cells``); all-fine, cell c is row c + 1, past the first
    n rows for most n, so each call's cells are clipped to its rows: the same gather, timed alike."""
    plan = source.plan
    counts = sorted({b.max for b in plan.buckets})
    tok = pipe.tokenize(x[:1], 0.0)  # every region fine: the first n rows are real tokens for any n
    calls = {n: Selection(np.array([0]), np.array([n]), n, plan.index(n)) for n in counts}
    inputs = {n: pipe.cut(tok.tokens, call) for n, call in calls.items()}
    cells = {n: None if tok.cells is None else np.minimum(tok.cells, n - 1) for n in counts}
    candidates: dict = {n: (lambda i, n=n: pipe.encode(inputs[n], calls[n], cells[n])) for n in counts}
    if vit is not None:  # in the same interleaved run, so that the plot's lines are comparable
        candidates["vit"] = lambda i: vit(x[:1])
    repeats = _repeats(candidates, timing.short(), pipe.synchronize)
    times = interleaved(candidates, repeats, warmup=0, sync=pipe.synchronize)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    macs = functools.partial(encoder_macs, source.config.vit, task=source.config.task)
    return [
        {
            "tokens": n,
            "encoder_ms": ms[n],
            "ideal_ms": ms[counts[-1]] * macs(n) / macs(counts[-1]),
            "vit_ms": ms.get("vit"),
        }
        for n in counts
    ]


def sweep_point(pipe, images: Images, threshold: float, timing: Timing) -> dict:
    """Accuracy (top-1; a segmenter's mIoU, pixel accuracy and boundary recall), mean tokens and batch-1 latency at
    one gate threshold."""
    out = pipe.run_batched(images.x, threshold, SWEEP_BATCH)
    calls = batches(images.x, 1)
    candidates = {"msvit": lambda i: pipe(calls[i % len(calls)], threshold)}
    repeats = _repeats(candidates, timing.short(), pipe.synchronize)
    times = interleaved(candidates, repeats, warmup=0, sync=pipe.synchronize)
    if images.dense:
        pixels = dense.pixel_labels(out.logits, images.labels.shape[-1])
        s = scores(pixels, out.logits.shape[1], images, dense.fine_regions(out.probs, threshold))
        accuracy = {k: s[k] for k in DENSE_SCORES}
    else:
        accuracy = {"top1": float((out.logits.argmax(1) == images.labels).mean())}
    return {
        "threshold": threshold,
        **accuracy,
        "mean_tokens": float(out.counts.mean()),
        "p50_ms": 1e3 * statistics.median(times["msvit"]),
    }


def latency_line(batch: int, lat: dict) -> str:
    """The console line of one batch size: p50, throughput, the plain ViT and speedup, a warning when noisy."""
    line = f"  batch {batch}: p50 {lat['p50_ms']:.3f} ms, {lat['images_per_s']:.1f} img/s"
    if "speedup" in lat:
        line += f"; plain ViT (same precision) {lat['vit']['p50_ms']:.3f} ms: speedup {lat['speedup']:.2f}x"
        line += f"{_range(lat.get('speedup_interval'))} of ideal {lat['ideal_speedup']:.2f}x, efficiency "
        line += f"{lat['efficiency']:.2f}{_range(lat.get('efficiency_interval'))}"
    cv = spread(lat)
    if cv > HIGH_CV:
        line += f"; WARNING: timings vary (CV {100 * cv:.0f}%, over {100 * HIGH_CV:.0f}%): the machine is busy or "
        line += "throttling, trust the ratios only as far as their intervals"
    return line


def _range(bounds: list[float] | None) -> str:
    return "" if bounds is None else f" ({bounds[0]:.2f}-{bounds[1]:.2f})"
