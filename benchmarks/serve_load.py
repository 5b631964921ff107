"""Triton serving against the in-process pipeline, measured in one run on one machine.

    python benchmarks/serve_load.py ENGINE_FOLDER [--requests 2000]

Starts a real tritonserver on the engine folder's repository (msvit_edge.serve), runs closed-loop gRPC clients at
concurrency 1, 8 and 32 over the bundle's reference images, and times the in-process pipeline at batch 1 (latency)
and batch 32 (throughput) in the same run; prints the table and the ratios docs/serving.md records.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from msvit_edge.engines import open_pipeline
from msvit_edge.serve import TritonServer, triton_repo
from msvit_edge.serve.loadtest import loadtest


def in_process(engine: str, images: np.ndarray, repeats: int = 200) -> tuple[float, float]:
    """(batch-1 median latency in ms, batch-32 images per second) of the in-process pipeline."""
    with open_pipeline(engine) as pipe:
        x = pipe.source.preprocess(images)
        one = []
        for i in range(repeats):
            start = time.perf_counter()
            pipe(x[i % len(x)][None], pipe.source.threshold)
            one.append(time.perf_counter() - start)
        batch = np.resize(x, (32, *x.shape[1:]))
        pipe(batch, pipe.source.threshold)
        start = time.perf_counter()
        for _ in range(repeats // 10):
            pipe(batch, pipe.source.threshold)
        per_second = 32 * (repeats // 10) / (time.perf_counter() - start)
    return float(np.median(one) * 1e3), per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        repo = triton_repo(args.engine, Path(work) / "repo")
        with open_pipeline(args.engine) as pipe:
            reference = pipe.source.reference()
            want = pipe.run_batched(reference.images, pipe.source.threshold, prepare=pipe.source.preprocess)
        with TritonServer(repo.path, work, exit_timeout=5) as server:
            results = loadtest(server.grpc_url, reference.images, requests=args.requests,
                               reference=want.logits.argmax(1))  # fmt: skip
        latency, throughput = in_process(args.engine, reference.images)
    print("| concurrency | req/s | p50 ms | p90 ms | p99 ms | errors | batches formed | top-1 agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.concurrency} | {r.per_second:.0f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | "
              f"{r.errors}/{r.requests} | {r.batches} | {r.top1_agreement:.2%} |")  # fmt: skip
    print(f"in-process: batch 1 p50 {latency:.2f} ms, batch 32 {throughput:.0f} images/s")
    print(f"ratios: c=1 p50 - batch-1 latency = {results[0].p50_ms - latency:+.2f} ms; "
          f"c=32 req/s / batch-32 throughput = {results[-1].per_second / throughput:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
