"""``loadtest``: closed-loop tritonclient async (gRPC) clients against a running server, one image per request.

Each of ``concurrency`` clients sends its next request as soon as its last one is answered. Reported per level:
requests per second, latency percentiles, errors, the batch sizes Triton's dynamic batcher formed (from the router's
statistics, before and after), every answer (``Answers``: which image, logits, token count) and, against reference
answers where given, the top-1 agreement.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from msvit_edge.errors import MsvitEdgeError


@dataclass
class Answers:
    """The served answers of one level, in the order they came back."""

    index: np.ndarray  # int64 [n]: the image each answered request sent (request i sends image i % N)
    logits: np.ndarray  # float32 [n, K]
    tokens: np.ndarray  # int64 [n]

    def against(self, logits: np.ndarray, counts: np.ndarray | None = None) -> Agreement:
        """How these answers agree with reference answers on the same images (``logits`` [N, K], ``counts`` [N])."""
        want = logits[self.index]
        same = None if counts is None else float(np.mean(self.tokens == counts[self.index]))
        diff = float(np.abs(self.logits - want).max()) if len(self.index) else float("nan")
        return Agreement(float(np.mean(self.logits.argmax(1) == want.argmax(1))), same, diff)


@dataclass
class Agreement:
    top1: float  # share of answers whose top class is the reference's
    tokens: float | None  # share of answers with the reference's token count (None: no reference counts)
    max_abs_logits: float  # the largest |served - reference| logit


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    batches: dict[int, int]  # batch size the router ran -> times
    top1_agreement: float | None  # served top class == reference, over the answered requests
    answers: Answers

    @property
    def answered(self) -> int:
        return len(self.answers.index)

    @property
    def per_second(self) -> float:
        return self.answered / self.seconds


def loadtest(url: str, images: np.ndarray, concurrencies: tuple[int, ...] = (1, 8, 32), requests: int = 1000,
             reference: np.ndarray | None = None, model: str = "msvit") -> list[LoadResult]:  # fmt: skip
    """Measure a server at ``url`` (gRPC, host:port) with ``requests`` requests per concurrency level.

    Args:
        url: The server's gRPC endpoint.
        images: uint8 images [N, S, S, C], sent in turn.
        concurrencies: Clients in flight, one level after another.
        requests: Requests per level.
        reference: Logits [N, K] to compare the served answers with (the bundle's reference answers).
        model: The router model's name.
    """
    try:  # lazy: tritonclient is the serve extra's
        import tritonclient.grpc.aio as grpc
    except ImportError:
        raise MsvitEdgeError("loadtest needs tritonclient: pip install 'tritonclient[grpc]'") from None
    return [asyncio.run(_level(grpc, url, model, images, c, requests, reference)) for c in concurrencies]


async def _level(grpc, url, model, images, concurrency, requests, reference) -> LoadResult:
    client = grpc.InferenceServerClient(url)
    try:
        before = await _batches(client, model)
        latencies, answers, errors = [], [], [0]
        queue = iter(range(requests))
        start = time.perf_counter()
        await asyncio.gather(*(_client(grpc, client, model, images, queue, latencies, answers, errors)
                               for _ in range(concurrency)))  # fmt: skip
        seconds = time.perf_counter() - start
        after = await _batches(client, model)
    finally:
        await client.close()
    ms = np.percentile(np.array(latencies) * 1e3, [50, 90, 99]) if latencies else [float("nan")] * 3
    batches = {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}
    got = _collect(answers, 0 if reference is None else reference.shape[1])
    agree = None if reference is None or not answers else got.against(reference).top1
    return LoadResult(concurrency, requests, errors[0], seconds, *map(float, ms), dict(sorted(batches.items())), agree,
                      got)  # fmt: skip


async def _client(grpc, client, model, images, queue, latencies, answers, errors) -> None:
    from tritonclient.utils import InferenceServerException  # lazy: as above

    for i in queue:  # the clients share one iterator: each request is sent once
        data = grpc.InferInput("images", [1, *images.shape[1:]], "UINT8")
        data.set_data_from_numpy(images[i % len(images)][None])
        start = time.perf_counter()
        try:
            result = await client.infer(model, [data])
        except InferenceServerException:
            errors[0] += 1
            continue
        latencies.append(time.perf_counter() - start)
        answers.append((i % len(images), result.as_numpy("logits")[0], int(result.as_numpy("tokens")[0, 0])))


def _collect(answers: list, classes: int) -> Answers:
    if not answers:
        return Answers(np.zeros(0, np.int64), np.zeros((0, classes), np.float32), np.zeros(0, np.int64))
    index, logits, tokens = zip(*answers, strict=True)
    return Answers(np.array(index, np.int64), np.stack(logits), np.array(tokens, np.int64))


async def _batches(client, model) -> dict[int, int]:
    stats = await client.get_inference_statistics(model_name=model, as_json=True)
    batch_stats = stats["model_stats"][0].get("batch_stats", [])
    return {int(b["batch_size"]): int(b["compute_infer"].get("count", 0)) for b in batch_stats}
