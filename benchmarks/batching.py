"""Mixed token counts in one batch: padding every image to the batch's largest count against splitting the batch by
bucket (each sub-batch padded only within its bucket), timed interleaved with the plain ViT in one run.

    python benchmarks/batching.py BUNDLE [--batch 32] [--repeats 10]

Prints each mode's median latency, its speedup over the plain ViT and its efficiency (speedup / MACs-ideal); the
faster mode is what ``Pipeline(batching=...)`` and ``bench --batching`` default to.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from msvit_edge.engines.ort import OnnxRuntimePipeline
from msvit_edge.measure.bench import _batches
from msvit_edge.measure.timing import interleaved
from msvit_edge.model.config import MSViTConfig
from msvit_edge.model.flops import msvit_macs, vit_macs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    pad, split = OnnxRuntimePipeline(args.bundle, batching="pad"), OnnxRuntimePipeline(args.bundle, batching="split")
    with pad, split:
        bundle, ref = pad.bundle, pad.bundle.reference()
        batches = _batches(bundle.preprocess(ref.images), args.batch)
        vit = pad.plain_vit()
        t = bundle.threshold
        candidates = {
            "pad": lambda i: pad(batches[i % len(batches)], t),
            "split": lambda i: split(batches[i % len(batches)], t),
            "plain ViT": lambda i: vit(batches[i % len(batches)]),
        }
        times = interleaved(candidates, args.repeats, warmup=2)
        counts = np.concatenate([pad(b, t).counts for b in batches])
    cfg = MSViTConfig.from_dict(bundle.record.model)
    ideal = vit_macs(cfg.vit) / msvit_macs(cfg.vit, cfg.gate, float(counts.mean()))
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(f"{bundle.path}: batch {args.batch}, {args.repeats} interleaved repeats, mean tokens {counts.mean():.1f}")
    for mode in ("pad", "split"):
        speedup = ms["plain ViT"] / ms[mode]
        print(f"  {mode:<6} {ms[mode]:9.1f} ms  speedup {speedup:.3f}x  efficiency {speedup / ideal:.3f}")
    print(f"  plain ViT {ms['plain ViT']:6.1f} ms  (ideal speedup {ideal:.3f}x)")


if __name__ == "__main__":
    main()
