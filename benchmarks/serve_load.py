"""Triton serving against the in-process pipeline, measured in one run on one machine.

    python benchmarks/serve_load.py ENGINE_FOLDER [--requests 2000] [--rounds 5]
    python benchmarks/serve_load.py ENGINE_FOLDER --scenes 10000 --answers 20000

Starts a real tritonserver on the engine folder's repository (msvit_edge.serve) and runs closed-loop gRPC clients at
concurrency 1, 8 and 32 over the bundle's reference images: the table docs/serving.md records. Then the ratios, in
``--rounds`` pairs taken back to back (on a shared machine the load of other work drifts between minutes, so each
served number is divided by the in-process number measured just before it): served p50 at concurrency 1 minus the
in-process batch-1 p50, and served req/s at concurrency 32 over the in-process batch-32 images/s; median and range.
``--ceiling`` serves, side by side, the same router with a pipeline that costs nothing: the most any model could be
served at here, with this client on the same cores.

``--scenes N --answers M``: M requests at concurrency 32 over N test scenes of fashion-mnist-scenes (uint8, as the
bundle's reference stores them), every answer compared with the in-process pipeline's on the same scenes (token
counts, logits, top-1) and with PyTorch's (the bundle's reference model; top-1, token counts), accuracy against the
labels, and answers == requests.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.engine_folder import EngineDir
from msvit_edge.engines import open_pipeline
from msvit_edge.serve import TritonServer, triton_repo
from msvit_edge.serve.loadtest import LoadResult, loadtest


def batch1_p50(pipe, x: np.ndarray, n: int = 200) -> float:
    """The in-process pipeline's median batch-1 latency, ms."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        pipe(x[i % len(x)][None], pipe.source.threshold)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def batch32_rate(pipe, x: np.ndarray, calls: int = 20) -> float:
    """The in-process pipeline's images per second at batch 32."""
    batch = np.resize(x, (32, *x.shape[1:]))
    pipe(batch, pipe.source.threshold)
    start = time.perf_counter()
    for _ in range(calls):
        pipe(batch, pipe.source.threshold)
    return 32 * calls / (time.perf_counter() - start)


def table(results: list[LoadResult]) -> None:
    columns = ["concurrency", "req/s", "p50 ms", "p90 ms", "p99 ms", "answered", "errors", "batches formed",
               "top-1 vs in-process"]  # fmt: skip
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for r in results:
        print(f"| {r.concurrency} | {r.per_second:.0f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | "
              f"{r.answered}/{r.requests} | {r.errors} | {r.batches} | {r.top1_agreement:.2%} |")  # fmt: skip


CEILING = '''"""The router with a pipeline that answers zeros at no cost (written by benchmarks/serve_load.py)."""

import os
import site

for _entry in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    site.addsitedir(_entry)

import json  # noqa: E402

import numpy as np  # noqa: E402

from msvit_edge.engines.pipeline import PipelineOutput  # noqa: E402
from msvit_edge.serve.models import Router  # noqa: E402


class TritonPythonModel(Router):
    def initialize(self, args):
        super().initialize(args)
        k = int(json.loads(args["model_config"])["output"][0]["dims"][0])
        self.pipeline = lambda x, _: PipelineOutput(np.zeros((len(x), k), np.float32), np.ones(len(x), np.int64),
                                                    np.zeros((len(x), 1), np.float32), [])
'''


def ceiling_repo(repo: Path, out: Path) -> Path:
    """A copy of ``repo`` whose router runs nothing: what Triton, the python backend, the router's glue and the
    client cost per request here, the most any model can be served at."""
    shutil.copytree(repo, out)
    (out / "msvit" / "1" / "model.py").write_text(CEILING)
    return out


def ratios(servers: dict[str, TritonServer], pipe, images: np.ndarray, rounds: int, requests: int) -> None:
    """Served against in-process, pair by pair; ``servers``: the repository and, optionally, its ceiling."""
    x = pipe.source.preprocess(images)
    latency, throughput = [], {name: [] for name in servers}
    for _ in range(rounds):
        one = batch1_p50(pipe, x)
        latency.append(loadtest(servers["served"].grpc_url, images, (1,), requests // 4)[0].p50_ms - one)
        rate = batch32_rate(pipe, x)
        for name, server in servers.items():
            throughput[name].append(loadtest(server.grpc_url, images, (32,), requests)[0].per_second / rate)
        served = ", ".join(f"{name} c=32 {r[-1] * rate:.0f} req/s" for name, r in throughput.items())
        print(f"  round: in-process batch 1 p50 {one:.2f} ms, batch 32 {rate:.0f} images/s; served c=1 p50 "
              f"{latency[-1] + one:.2f} ms; {served}")  # fmt: skip
    print(f"c=1 p50 - in-process batch-1 p50: median {np.median(latency):+.2f} ms "
          f"(range {min(latency):+.2f} .. {max(latency):+.2f}) over {rounds} pairs")  # fmt: skip
    for name, r in throughput.items():
        print(f"{name} c=32 req/s / in-process batch-32 images/s: median {np.median(r):.2f}x "
              f"(range {min(r):.2f} .. {max(r):.2f}) over {rounds} pairs")  # fmt: skip


def bundle_of(pipe) -> Bundle:
    return pipe.source.bundle if isinstance(pipe.source, EngineDir) else pipe.source


def scenes(pipe, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` test scenes of fashion-mnist-scenes as uint8 [n, S, S, 3] and their labels, as export stores them."""
    from torch.utils.data import DataLoader  # lazy: torch, only for --scenes

    from msvit_edge.bundle.preprocess import to_uint8
    from msvit_edge.data import open_dataset, random_subset

    pre = bundle_of(pipe).record.preprocessing
    dataset = random_subset(open_dataset("fashion-mnist-scenes", "test", pre.size, pre.mean, pre.std), n)
    batches = [(to_uint8(x.numpy(), pre.mean, pre.std), y.numpy()) for x, y in DataLoader(dataset, 500)]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches]).astype(np.int64)


def answers(server: TritonServer, pipe, n_scenes: int, requests: int) -> None:
    """Every served answer on the test scenes against the in-process pipeline's and PyTorch's."""
    from msvit_edge.measure.reference import reference_on  # lazy: imports torch

    images, labels = scenes(pipe, n_scenes)
    want = pipe.run_batched(images, pipe.source.threshold, prepare=pipe.source.preprocess)
    bundle = bundle_of(pipe)
    torch_ref, why = reference_on(bundle, bundle.preprocess(images), labels)
    [r] = loadtest(server.grpc_url, images, (32,), requests, want.logits)
    got = r.answers
    print(f"{requests} requests at concurrency 32 over {len(images)} test scenes: {r.answered} answered, "
          f"{r.errors} errors, {r.per_second:.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms")  # fmt: skip
    print(f"  scenes answered: {len(np.unique(got.index))}/{len(images)}")
    a = got.against(want.logits, want.counts)
    print(f"  vs in-process: tokens identical {a.tokens:.4%}, top-1 agreement {a.top1:.4%}, "
          f"max |logits diff| {a.max_abs_logits:.3g}")  # fmt: skip
    if torch_ref is not None:
        t = got.against(torch_ref.logits, torch_ref.counts)
        print(f"  vs PyTorch ({why}): top-1 agreement {t.top1:.4%}, tokens identical {t.tokens:.4%}")
    served_acc = float(np.mean(got.logits.argmax(1) == labels[got.index]))
    print(f"  accuracy vs labels: served {served_acc:.2%}, in-process {np.mean(want.logits.argmax(1) == labels):.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--rounds", type=int, default=5, help="back-to-back served/in-process pairs")
    parser.add_argument("--scenes", type=int, default=0, help="test scenes whose served answers are checked")
    parser.add_argument("--answers", type=int, default=20000, help="requests over the --scenes")
    parser.add_argument("--stages", default=None, help="inline or bls (default: triton_repo's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--queue-delay-us", type=int, default=500)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--ceiling", action="store_true", help="also serve a router that runs nothing, side by side")
    args = parser.parse_args()
    options = dict(stages=args.stages, threads=args.threads, queue_delay_us=args.queue_delay_us,
                   instances=args.instances)  # fmt: skip
    with tempfile.TemporaryDirectory() as work, open_pipeline(args.engine) as pipe:
        repo = triton_repo(args.engine, Path(work) / "repo", **options)
        reference = pipe.source.reference()
        want = pipe.run_batched(reference.images, pipe.source.threshold, prepare=pipe.source.preprocess)
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(TritonServer(repo.path, work, exit_timeout=5))
            servers = {"served": server}
            if args.ceiling:
                empty = ceiling_repo(repo.path, Path(work) / "ceiling")
                servers["ceiling"] = stack.enter_context(TritonServer(empty, Path(work) / "c", exit_timeout=5))
            for running in servers.values():
                loadtest(running.grpc_url, reference.images, (32,), 200)  # warm-up: sessions, connections
            table(loadtest(server.grpc_url, reference.images, requests=args.requests, reference=want.logits))
            ratios(servers, pipe, reference.images, args.rounds, args.requests)
            if args.scenes:
                answers(server, pipe, args.scenes, args.answers)


if __name__ == "__main__":
    main()
