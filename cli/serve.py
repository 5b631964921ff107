"""``msvit-edge triton-repo``, ``serve`` and ``loadtest``: an engine folder on NVIDIA Triton Inference Server."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from msvit_edge.cli.options import numbers

STAGES = typer.Option(
    None,
    case_sensitive=False,
    help="inline: the router runs the ONNX Runtime pipeline itself (ONNX Runtime's default); bls: it calls a "
    "tokenizer model and per-bucket encoder models (TensorRT's only layout).",
)


def triton_repo(
    source: Path = typer.Argument(..., help="Engine folder (from `build`) or bundle (its FP32 graphs)."),
    out: Path = typer.Option(..., "--out", help="The Triton model repository to write."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if msvit-edge wrote it."),
    stages: Literal["inline", "bls"] | None = STAGES,
    queue_delay_us: int = typer.Option(500, min=0, help="How long Triton's dynamic batcher waits to fill a batch."),
) -> None:
    """Write a Triton model repository: a router with dynamic batching that routes each image to its bucket."""
    from msvit_edge.serve import triton_repo as write  # lazy: imports onnxruntime and tritonclient

    repo = write(source, out, force, queue_delay_us=queue_delay_us, stages=stages)
    where = "runs on this machine's tritonserver" if repo.runs_here else "needs a GPU Triton server"
    typer.echo(f"repository: {repo.path} ({repo.backend}, stages {repo.stages}: {', '.join(repo.models)}; {where})")


def serve(
    source: Path = typer.Argument(..., help="Engine folder (from `build`) or bundle (its FP32 graphs)."),
    host: str = typer.Option("127.0.0.1", help="Address every endpoint binds."),
    http_port: int = typer.Option(8000, help="HTTP/REST port."),
    grpc_port: int = typer.Option(8001, help="gRPC port."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port."),
    work: Path | None = typer.Option(None, help="Work folder for the repository and log (default: a temporary one)."),
    tritonserver: Path | None = typer.Option(None, help="Another tritonserver binary (an NGC container's, JetPack's)."),
    log: Path | None = typer.Option(None, help="Server log file (default: WORK/tritonserver.log)."),
    stages: Literal["inline", "bls"] | None = STAGES,
) -> None:
    """Serve an engine folder on a real Triton server until Ctrl-C or SIGTERM (in-flight requests are answered)."""
    from msvit_edge.serve import Ports  # lazy: imports onnxruntime and tritonclient
    from msvit_edge.serve import serve as run  # lazy: imports onnxruntime and tritonclient

    def ready(server) -> None:
        ports = f"http {server.url}, grpc {server.grpc_url}, metrics :{server.ports.metrics}"
        typer.echo(f"ready: {ports}, log {server.log}")

    ports = Ports(http_port, grpc_port, metrics_port)
    raise typer.Exit(run(source, work, ports, host, tritonserver, log, ready, stages))


def loadtest(
    url: str = typer.Argument(..., help="The server's gRPC endpoint, host:port."),
    bundle: Path = typer.Option(..., help="Bundle whose reference images are sent and whose answers are the truth."),
    concurrency: str = typer.Option("1,8,32", help="Concurrent closed-loop clients, comma-separated levels."),
    requests: int = typer.Option(1000, min=1, help="Requests per concurrency level."),
    out: Path | None = typer.Option(None, help="Also write report.json/.csv/.md to this folder."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it is a load-test report."),
) -> None:
    """Closed-loop load test of a running server: req/s, latency percentiles, errors, batches formed, top-1."""
    from msvit_edge.bundle import Bundle
    from msvit_edge.io import check_output
    from msvit_edge.serve.loadtest import loadtest as run  # lazy: imports tritonclient
    from msvit_edge.serve.loadtest_report import FOLDER, write_report

    if out is not None:
        check_output(out, FOLDER, force)  # before the load, not after it
    reference = Bundle(bundle).reference()
    levels = numbers(concurrency, int, "--concurrency")
    results = run(url, reference.images, levels, requests, reference.logits)
    for r in results:
        agreement = "-" if r.top1_agreement is None else f"{r.top1_agreement:.2%}"
        typer.echo(
            f"concurrency {r.concurrency}: {r.per_second:.0f} req/s, p50/p90/p99 {r.p50_ms:.2f}/{r.p90_ms:.2f}/"
            f"{r.p99_ms:.2f} ms, answered {r.answered}/{r.requests}, errors {r.errors}, batches {r.batches}, "
            f"top-1 vs reference {agreement}"
        )
    if out is not None:
        settings = {"url": url, "bundle": Path(bundle).name, "concurrency": list(levels), "requests": requests}
        typer.echo(f"report: {write_report(results, out, settings, force)}")
