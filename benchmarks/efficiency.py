"""Why bench's efficiency (measured speedup over the plain ViT / MACs-ideal speedup) can exceed 1: the causes
separated, from one interleaved run per batch size.

    python benchmarks/efficiency.py SOURCE [--batch 1 32] [--repeats R] [--threads N] [--load P]

SOURCE is a bundle (its FP32 graphs) or an ONNX Runtime engine folder. Timed in turn (A B C ... A B C) on the
bundle's validation images: MSViT end to end, the plain ViT, MSViT again (an A/A control: any ratio but 1 is the
measurement's own noise or bias), MSViT with every region fine, and the encoder alone at the mean and at the all-fine
token count (no padding, no tokenizer). ``--load P`` runs P busy processes alongside, the contention of a shared
machine.

Measurement: each candidate's time by three estimators (the median of every call, bench's p50; the mean, bench's
images/s; the mean over the distinct batches of each batch's median), the speedup and the A/A control by each, and
bench's 95% interval (``measure.latency.interval``). Ideal: three ways (MACs at the mean token count, what bench
used up to report schema 2; the mean of each image's MACs, bench's since; the MACs the encoder runs, padding in).
Cost model: efficiency = (ViT ms per ViT MAC) / (MSViT ms per ideal MAC), by p50, splits exactly into

- baseline: the plain ViT's ms per MAC over the MSViT encoder's at the same (all-fine) token count. Above 1: the
  baseline graph is slower per MAC than MSViT's own encoder (its patch embedding, its graph);
- tokens: the encoder's ms per MAC at all-fine over at the mean count. Above 1: cost grows faster than MACs with
  the token count. Attention's N^2 costs (softmax) are per image, the same at any batch size; activations that
  outgrow the caches are not: the factor at batch 1 beside the one at a large batch tells the two apart;
- pipeline: the encoder at the mean count over MSViT end to end, both per MAC: what the tokenizer, the selection
  and padding to buckets cost (below 1 unless the ideal is wrong).

Results and what they mean: docs/benchmarks.md ("Efficiency above 1").
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
from pathlib import Path

import numpy as np

from msvit_edge.bundle.selection import Selection, select
from msvit_edge.engines import open_pipeline
from msvit_edge.measure.latency import batches, interval
from msvit_edge.measure.sources import open_bench_source
from msvit_edge.measure.timing import interleaved
from msvit_edge.model.flops import encoder_macs, msvit_macs, vit_macs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="a bundle or an ONNX Runtime engine folder")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument(
        "--repeats", type=int, default=None, help="timed rounds per batch size (default: 640 / batch, >= 20)"
    )
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--load", type=int, default=0, help="busy processes running alongside (a shared machine)")
    args = p.parse_args()
    source = open_bench_source(args.source)
    x = source.bundle.preprocess(source.bundle.reference().images)
    with open_pipeline(source.opened, threads=args.threads, batching="split") as pipe, busy(args.load):
        vit = pipe.plain_vit()
        print(f"{args.source}: {source.backend} {source.precision}, {len(x)} images, {args.load} busy processes")
        for b in args.batch:
            times, m = measure(pipe, vit, source, x, b, args.repeats or max(20, 640 // b))
            print_batch(b, times, m)
            working_set(source, b, (round(m["mean_tokens"]), source.config.vit.token_range.max))


@contextlib.contextmanager
def busy(processes: int):
    """``processes`` processes spinning on the CPU while the block runs: the contention of a shared machine."""
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for process in spinners:
        process.start()
    try:
        yield
    finally:
        for process in spinners:
            process.terminate()
            process.join()


def _spin() -> None:
    while True:
        pass


def measure(pipe, vit, source, x: np.ndarray, batch: int, repeats: int) -> tuple[dict, dict]:
    """Interleaved times of every candidate (seconds per call, listed by round) and the MACs per image."""
    calls, t, plan = batches(x, batch), source.threshold, source.plan
    counts = [pipe(c, t).counts for c in calls]
    n_mean, n_full = round(float(np.mean(counts))), source.config.vit.token_range.max
    fine = [pipe.tokenize(c, 0.0).tokens for c in calls]  # every region fine: the first n rows are real tokens

    def encoder_at(n: int):  # every image of each batch at n tokens
        selection = Selection(np.arange(batch), np.full(batch, n), n, plan.index(n))
        inputs = [pipe.cut(tokens, selection) for tokens in fine]
        return lambda i: pipe.encode(inputs[i % len(calls)], selection)

    candidates = {
        "msvit": lambda i: pipe(calls[i % len(calls)], t),
        "plain ViT": lambda i: vit(calls[i % len(calls)]),
        # after another model, as "msvit" is: right after an identical call it finds warm caches (15-35% faster)
        "msvit (A/A control)": lambda i: pipe(calls[i % len(calls)], t),
        "msvit all-fine": lambda i: pipe(calls[i % len(calls)], 0.0),
        f"encoder at {n_mean}": encoder_at(n_mean),
        f"encoder at {n_full}": encoder_at(n_full),
    }
    times = interleaved(candidates, repeats, warmup=2, sync=pipe.synchronize)
    return times, macs(source, counts, n_mean, n_full, pipe.pad_to_bucket) | {"calls": len(calls)}


def macs(source, counts: list[np.ndarray], n_mean: int, n_full: int, pad_to_bucket: bool) -> dict:
    """MACs per image: the plain ViT, MSViT's ideal three ways, and the encoder alone at the two counts."""
    vit_cfg, gate, plan = source.config.vit, source.config.gate, source.plan
    every = np.concatenate(counts)
    tokenizer = msvit_macs(vit_cfg, gate, 0) - encoder_macs(vit_cfg, 0)
    run = [s for c in counts for s in select(c, plan, pad_to_bucket, "split")]
    executed = tokenizer + sum(len(s.index) * encoder_macs(vit_cfg, s.rows) for s in run) / len(every)
    return {
        "vit": vit_macs(vit_cfg),
        "mean_tokens": float(every.mean()),
        "ideal at mean tokens": msvit_macs(vit_cfg, gate, float(every.mean())),
        "ideal per image": float(np.mean([msvit_macs(vit_cfg, gate, int(n)) for n in every])),
        "executed (padding in)": executed,
        "all-fine": msvit_macs(vit_cfg, gate, n_full),
        "mean": encoder_macs(vit_cfg, n_mean),
        "full": encoder_macs(vit_cfg, n_full),
    }


def per_batch(seconds: list[float], calls: int) -> float:
    """The mean over the distinct batches of each one's median (call i ran batch i % calls)."""
    return statistics.mean(statistics.median(seconds[k::calls]) for k in range(min(calls, len(seconds))))


def estimates(times: dict, calls: int) -> dict[str, dict[str, float]]:
    """Each candidate's seconds per call by three estimators: the median of every call (bench's p50), the mean
    (bench's images/s), and the mean over the distinct batches of each one's median."""
    return {
        "p50": {k: statistics.median(v) for k, v in times.items()},
        "mean": {k: statistics.mean(v) for k, v in times.items()},
        "per-batch p50": {k: per_batch(v, calls) for k, v in times.items()},
    }


def print_batch(batch: int, times: dict, m: dict) -> None:
    est, names = estimates(times, m["calls"]), list(times)
    rounds = len(times["msvit"])
    print(f"\nbatch {batch}: mean tokens {m['mean_tokens']:.2f}, {m['calls']} distinct batches, {rounds} rounds")
    for k in names:
        cells = "  ".join(f"{e} {1e3 * t[k]:8.3f}" for e, t in est.items())
        print(f"  {k:<20} ms: {cells}  CV {100 * np.std(times[k]) / np.mean(times[k]):3.0f}%")
    for ideal in ("ideal at mean tokens", "ideal per image", "executed (padding in)"):
        print(f"  ideal speedup, {ideal:<22} {m['vit'] / m[ideal]:.3f}x")
    for e, t in est.items():
        speedup = t["plain ViT"] / t["msvit"]
        efficiency = speedup * m["ideal per image"] / m["vit"]
        control = t["msvit"] / t["msvit (A/A control)"]
        print(f"  by {e:<14} speedup {speedup:.3f}x  efficiency {efficiency:.3f}  A/A control {control:.3f}")
    low, high = (s * m["ideal per image"] / m["vit"] for s in interval(times["plain ViT"], times["msvit"]))
    print(f"  bench's 95% interval of the efficiency by p50: {low:.3f}-{high:.3f}")
    factors(est["p50"], names, m)


def factors(t: dict, names: list[str], m: dict) -> None:
    """Efficiency (by p50, against the ideal per image: bench's) as baseline x tokens x pipeline."""
    vit, mean_enc, full_enc = t["plain ViT"] / m["vit"], t[names[4]] / m["mean"], t[names[5]] / m["full"]
    msvit, fine = t["msvit"] / m["ideal per image"], t["msvit all-fine"] / m["all-fine"]
    baseline, tokens, pipeline = vit / full_enc, full_enc / mean_enc, mean_enc / msvit
    print(f"  efficiency {vit / msvit:.3f} = baseline {baseline:.3f} x tokens {tokens:.3f} x pipeline {pipeline:.3f}")
    print(f"  all-fine MSViT vs plain ViT, per MAC: {vit / fine:.3f} (1 = the same model runs as fast either way)")


def working_set(source, batch: int, counts: tuple[int, ...]) -> None:
    """The largest activations of one layer (attention scores, MLP hidden; FP32) beside this CPU's caches."""
    vit = source.config.vit
    for n in counts:
        scores, hidden = batch * vit.num_heads * n * n * 4, batch * n * vit.mlp_ratio * vit.embed_dim * 4
        print(f"  activations at {n} tokens: attention scores {scores / 2**20:.2f} MiB, MLP {hidden / 2**20:.2f} MiB")
    caches = sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"))
    sizes = [f"L{(c / 'level').read_text().strip()} {(c / 'size').read_text().strip()}" for c in caches]
    print(f"  caches per core (sysfs): {', '.join(sizes) or 'unknown'}")


if __name__ == "__main__":
    main()
