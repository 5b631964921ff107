"""Serving through a real tritonserver (the one nvidia-pytriton ships) with real tritonclient calls over HTTP and
gRPC, on an ONNX Runtime engine folder of the tiny bundle. Skipped, saying why, only where tritonserver or
tritonclient is absent (.ci/setup installs both)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from msvit_edge.errors import MsvitEdgeError

MISSING = [m for m in ("pytriton", "tritonclient") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {' and '.join(MISSING)} (bash .ci/setup installs them)")


@pytest.fixture(scope="module")
def engine(bundle, tmp_path_factory):
    from msvit_edge.build import BuildConfig, build

    return build(BuildConfig(str(bundle.path), "fp32", "onnxruntime", out=str(tmp_path_factory.mktemp("e") / "ort")))


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    """The default repository: for ONNX Runtime, the router runs the pipeline itself (stages inline)."""
    from msvit_edge.serve import TritonServer, triton_repo

    work = tmp_path_factory.mktemp("serve")
    repo = triton_repo(engine, work / "repo")
    with TritonServer(repo.path, work, exit_timeout=5) as running:
        yield running


@pytest.fixture(scope="module")
def bls_server(engine, tmp_path_factory):
    """The TensorRT repositories' layout on ONNX Runtime: the router calls a tokenizer and per-bucket encoder models."""
    from msvit_edge.serve import TritonServer, triton_repo

    work = tmp_path_factory.mktemp("serve-bls")
    repo = triton_repo(engine, work / "repo", stages="bls")
    with TritonServer(repo.path, work, exit_timeout=5) as running:
        yield running


@pytest.fixture(scope="module")
def images(bundle):
    """96 real scenes: the bundle's validation images and their mirror images (other token counts)."""
    scenes = bundle.reference().images
    return np.concatenate([scenes, scenes[:, :, ::-1]])


def reference(engine, images):
    from msvit_edge.engines import open_pipeline

    with open_pipeline(engine) as pipe:
        return pipe(engine.preprocess(images), engine.threshold)


def infer(client_module, url, images, name="images", model="msvit"):
    client = client_module.InferenceServerClient(url)
    try:
        data = client_module.InferInput(name, list(images.shape), {np.uint8: "UINT8"}.get(images.dtype.type, "FP32"))
        data.set_data_from_numpy(images)
        result = client.infer(model, [data])
        return {k: result.as_numpy(k) for k in ("logits", "top_class", "tokens")}
    finally:
        client.close()


def encoded(files: list[bytes]) -> np.ndarray:
    """Image files as the router's ``image_bytes``: one per row, zero-padded to the longest."""
    rows = np.zeros((len(files), max(map(len, files))), np.uint8)
    for row, file in zip(rows, files, strict=True):
        row[: len(file)] = np.frombuffer(file, np.uint8)
    return rows


def image_file(pixels: np.ndarray, fmt: str, size: tuple[int, int] | None = None) -> bytes:
    from PIL import Image

    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    (image.resize(size, Image.Resampling.BILINEAR) if size else image).save(buffer, format=fmt)
    return buffer.getvalue()


def statistics(server) -> dict[str, int]:
    import tritonclient.http as http

    client = http.InferenceServerClient(server.url)
    try:
        return {m["name"]: m["execution_count"] for m in client.get_inference_statistics()["model_stats"]}
    finally:
        client.close()


def metrics(port: int, name: str) -> dict[str, float]:
    """{labels: value} of one metric on Triton's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return {line[len(name) :].rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines
            if line.startswith(name + "{")}  # fmt: skip


def test_the_inline_repository_is_the_router_with_the_engine_folder_inside(engine, tmp_path):
    from msvit_edge.bundle.engine_folder import EngineDir
    from msvit_edge.serve import triton_repo
    from msvit_edge.serve.config import parse

    repo = triton_repo(engine, tmp_path / "repo")
    assert repo.models == ("msvit",) and repo.runs_here
    router = parse((repo.path / "msvit" / "config.pbtxt").read_text(), "msvit")
    assert router.max_batch_size == engine.plan.batch[2] and router.HasField("dynamic_batching")
    assert [(i.name, i.optional) for i in router.input] == [("images", True), ("image_bytes", True)]
    copy = EngineDir(repo.path / "msvit" / "1" / "source" / router.parameters["source"].string_value)
    assert copy.record == engine.record  # it opens as the engine folder, every file's sha256 checked
    for stage in ("tokenizer", "encoder", "encoder_masked"):
        assert copy.graph(stage).stat().st_ino == engine.graph(stage).stat().st_ino  # hard links, not copies
    assert (repo.path / "msvit" / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    with pytest.raises(MsvitEdgeError, match="pass --force"):
        triton_repo(engine, tmp_path / "repo")


def test_the_bls_repository_has_the_tokenizer_and_each_buckets_encoder_models(engine, tmp_path):
    from msvit_edge.serve import triton_repo
    from msvit_edge.serve.config import parse

    repo = triton_repo(engine, tmp_path / "repo", stages="bls")
    buckets = len(engine.plan.buckets)
    assert len(repo.models) == 2 + 2 * buckets and repo.runs_here
    for model in repo.models:
        assert parse((repo.path / model / "config.pbtxt").read_text(), model).name == model
    with pytest.raises(MsvitEdgeError, match="inline for ONNX Runtime"):
        triton_repo(engine, tmp_path / "other", stages="nearby")


def test_a_misspelt_config_is_refused_before_it_is_written():
    from msvit_edge.serve.config import parse

    with pytest.raises(MsvitEdgeError, match="does not parse as Triton's ModelConfig"):
        parse('name: "x"\nmax_batch_sise: 4\n', "x/config.pbtxt")


@pytest.mark.parametrize(("stages", "protocol"), [("inline", "http"), ("inline", "grpc"), ("bls", "grpc")])
def test_served_answers_equal_the_in_process_pipeline(request, engine, images, stages, protocol):
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    server = request.getfixturevalue("server" if stages == "inline" else "bls_server")
    module, url = (http, server.url) if protocol == "http" else (grpc, server.grpc_url)
    want = reference(engine, images)
    got = [infer(module, url, part) for part in np.split(images, [27, 28, 55, 82])]  # batches of 27, 1, 27, 27, 14
    assert np.array_equal(np.concatenate([g["tokens"] for g in got])[:, 0], want.counts)
    np.testing.assert_allclose(np.concatenate([g["logits"] for g in got]), want.logits, rtol=1e-4, atol=1e-4)
    assert np.array_equal(np.concatenate([g["top_class"] for g in got])[:, 0], want.logits.argmax(1))


def one_per_bucket(engine, images) -> tuple[np.ndarray, np.ndarray]:
    """Images of every bucket (indices into ``images``) and their buckets."""
    counts = reference(engine, images).counts
    buckets = np.array([engine.plan.index(int(c)) for c in counts])
    pick = np.array([np.flatnonzero(buckets == b)[0] for b in np.unique(buckets)])
    assert len(pick) >= 2  # the tiny bundle's images span its buckets
    return pick, buckets[pick]


def test_one_batch_spanning_buckets_reaches_each_buckets_encoder_model(bls_server, engine, images):
    import tritonclient.http as http

    pick, buckets = one_per_bucket(engine, images)
    before = statistics(bls_server)
    infer(http, bls_server.url, images[pick])
    after = statistics(bls_server)
    ran = {name for name in after if after[name] > before.get(name, 0) and "encoder" in name}
    assert {name.rsplit("_b", 1)[1] for name in ran} == {str(b) for b in buckets}
    assert after["msvit"] == before["msvit"] + 1 and after["msvit_tokenizer"] == before["msvit_tokenizer"] + 1


def test_inline_the_router_counts_each_buckets_images_on_the_metrics_port(server, engine, images):
    import tritonclient.http as http

    pick, buckets = one_per_bucket(engine, images)
    batch = np.concatenate([images[pick], images[pick[:1]]])  # bucket buckets[0] twice
    before = metrics(server.ports.metrics, "msvit_bucket_images_total")
    infer(http, server.url, batch)
    after = metrics(server.ports.metrics, "msvit_bucket_images_total")
    grew = {labels: after[labels] - before.get(labels, 0) for labels in after if after[labels] > before.get(labels, 0)}
    assert grew == {f'{{bucket="{b}"}}': 1 + (b == buckets[0]) for b in buckets}


def test_encoded_images_are_decoded_and_resized_as_training_loaded_files(server, engine, images, tmp_path):
    import tritonclient.grpc as grpc

    from msvit_edge.bundle.preprocess import load_image

    png = [image_file(x, "PNG") for x in images[:6]]  # lossless, at the model's size: the same pixels
    want = infer(grpc, server.grpc_url, images[:6])
    got = infer(grpc, server.grpc_url, encoded(png), "image_bytes")
    assert all(np.array_equal(got[k], want[k]) for k in want)
    files = [image_file(images[6], "JPEG"), image_file(images[7], "PNG", (57, 41))]  # lossy; larger, not square
    for i, file in enumerate(files):
        (tmp_path / f"{i}.img").write_bytes(file)
    pixels = np.stack([load_image(tmp_path / f"{i}.img", images.shape[1]) for i in range(len(files))])
    want, got = reference(engine, pixels), infer(grpc, server.grpc_url, encoded(files), "image_bytes")
    assert np.array_equal(got["tokens"][:, 0], want.counts)
    np.testing.assert_allclose(got["logits"], want.logits, rtol=1e-4, atol=1e-4)


def bad_requests(images) -> list:
    """(input, name, what the error must say): each one a problem the router's client makes."""
    good = image_file(images[0], "PNG")
    return [
        (np.zeros((2, 32, 32, 3), np.float32), "images", "FP32"),  # wrong dtype
        (np.zeros((2, 16, 16, 3), np.uint8), "images", "shape"),  # wrong image size
        (np.zeros((2, 32, 32, 3), np.uint8), "pixels", "pixels"),  # unknown input
        (np.zeros((65, 32, 32, 3), np.uint8), "images", "batch"),  # over the maximum batch
        (encoded([good, b"GIF89a, or so it says"]), "image_bytes", r"image_bytes\[1\]: not a readable image"),
        (encoded([good[: len(good) // 2]]), "image_bytes", r"image_bytes\[0\]: corrupt image"),  # cut short
    ]


@pytest.mark.parametrize("case", range(6), ids=["dtype", "size", "input", "batch", "garbage", "truncated"])
def test_a_bad_request_gets_a_triton_error_naming_it_and_the_next_one_is_answered(server, images, case):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    bad, name, message = bad_requests(images)[case]
    with pytest.raises(InferenceServerException, match=message):
        infer(http, server.url, bad, name)
    assert infer(http, server.url, images[:3])["logits"].shape == (3, 10)


def test_the_tensorrt_repository_selects_each_buckets_profile_by_the_engines_own_record(engine, tmp_path):
    from msvit_edge.serve import triton_repo
    from msvit_edge.serve.config import parse

    stand_in = tensorrt_stand_in(engine, tmp_path / "trt")
    repo = triton_repo(stand_in, tmp_path / "repo")
    assert repo.backend == "tensorrt" and not repo.runs_here
    graphs = engine.bundle.record.graphs
    for i in range(len(engine.plan.buckets)):
        for masked, graph in ((False, "encoder"), (True, "encoder_masked")):
            model = f"msvit_encoder{'_masked' if masked else ''}_b{i}"
            config = parse((repo.path / model / "config.pbtxt").read_text(), model)
            assert config.platform == "tensorrt_plan" and list(config.instance_group[0].profile) == [str(i)]
            assert [t.name for t in config.input] == [t.name for t in graphs[graph].inputs]
            assert [t.name for t in config.output] == [t.name for t in graphs[graph].outputs]
            assert (repo.path / model / "1" / "model.plan").read_bytes() == (stand_in / f"{graph}.plan").read_bytes()
    tokenizer = parse((repo.path / "msvit_tokenizer" / "config.pbtxt").read_text(), "msvit_tokenizer")
    assert [t.name for t in tokenizer.input] == [t.name for t in graphs["tokenizer"].inputs]
    facts = json.loads((stand_in / "tensorrt.json").read_text())
    facts["engines"]["encoder"]["profiles"].reverse()  # engines whose profiles are not the buckets in order
    (stand_in / "tensorrt.json").write_text(json.dumps(facts))
    with pytest.raises(MsvitEdgeError, match=r"encoder.plan's profile 0 .* is not bucket 0's tokens"):
        triton_repo(stand_in, tmp_path / "refused")


def tensorrt_stand_in(engine, folder: Path) -> Path:
    """A TensorRT engine folder as ``build`` writes one, without TensorRT: the ONNX Runtime folder's manifest with
    placeholder plans, and a ``tensorrt.json`` whose profiles are the ones the build gives each engine."""
    from msvit_edge.bundle.engine_folder import relative_to
    from msvit_edge.engines.trt_shapes import EngineShapes
    from msvit_edge.io import sha256

    folder.mkdir()
    manifest = json.loads((engine.path / "manifest.json").read_text())
    stages = ("tokenizer", "encoder", "encoder_masked")
    for stage in stages:
        (folder / f"{stage}.plan").write_bytes(f"placeholder {stage} engine".encode())
    shapes = EngineShapes.from_bundle(engine.bundle)
    profiles = {s: [{n: [list(r) for r in ranges] for n, ranges in p.items()} for p in shapes.profiles(s)]
                for s in stages}  # fmt: skip
    (folder / "tensorrt.json").write_text(json.dumps({"engines": {s: {"profiles": p} for s, p in profiles.items()}}))
    manifest |= {"backend": "tensorrt", "backend_version": "10.3.0", "graphs": {s: f"{s}.plan" for s in stages},
                 "files": {f"{s}.plan": sha256(folder / f"{s}.plan") for s in stages}}  # fmt: skip
    manifest["bundle"]["path"] = relative_to(engine.bundle.path, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _start_serve(engine, tmp_path) -> tuple[subprocess.Popen, int, dict]:
    """``serve`` in a child process, once it is ready: (that process, its tritonserver's pid, its ports)."""
    ready = tmp_path / "ready.json"
    code = (
        "import json, os, sys; from msvit_edge.serve import serve\n"
        f"sys.exit(serve({str(engine.path)!r}, work={str(tmp_path / 'work')!r}, ports=__import__("
        "'msvit_edge.serve.server', fromlist=['free_ports']).free_ports(), on_ready=lambda s: open("
        f"{str(ready)!r}, 'w').write(json.dumps([s.process.pid, s.ports.__dict__]))))"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    while not ready.is_file() or not ready.read_text():
        assert process.poll() is None and time.monotonic() < deadline, "serve exited or was never ready"
        time.sleep(0.2)
    return process, *json.loads(ready.read_text())


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":  # exited, not reaped yet
            return True
        time.sleep(0.2)
    return False


def _closed_loop(url: str, batch: np.ndarray, signalled: threading.Event, outcomes: list) -> None:
    """One client sending ``batch`` until the server refuses: (signalled when it was answered?, error or None)."""
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    client = grpc.InferenceServerClient(url)
    data = grpc.InferInput("images", list(batch.shape), "UINT8")
    data.set_data_from_numpy(batch)
    try:
        while True:
            try:
                client.infer("msvit", [data])
                outcomes.append((signalled.is_set(), None))
            except InferenceServerException as e:
                outcomes.append((signalled.is_set(), str(e)))
                return
    finally:
        client.close()


def test_sigterm_under_load_answers_what_was_queued_and_exits_0_with_nothing_left(engine, images, tmp_path):
    shm = set(Path("/dev/shm").glob("msvit_*"))
    process, server_pid, ports = _start_serve(engine, tmp_path)
    assert server_pid in _children(process.pid)
    assert set(Path("/dev/shm").glob("msvit_*")) - shm  # its python backend's segments, under its own prefix
    signalled, outcomes = threading.Event(), []
    batch, url = np.resize(images, (64, *images.shape[1:])), f"127.0.0.1:{ports['grpc']}"
    clients = [threading.Thread(target=_closed_loop, args=(url, batch, signalled, outcomes)) for _ in range(6)]
    for client in clients:
        client.start()
    router = '{model="msvit",version="1"}'
    while not metrics(ports["metrics"], "nv_inference_pending_request_count").get(router):
        assert process.poll() is None  # until requests wait in Triton's queue, as its metrics show
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    signalled.set()
    assert process.wait(60) == 0
    for client in clients:
        client.join(30)
    refusals = [e for _, e in outcomes if e is not None]
    assert len(refusals) == len(clients)  # each client stopped at its first refusal, none hung
    # Triton's two shutdown refusals, by when a request lands: "Server is stopping" while it drains, then "has no
    # available versions" once the model is unloaded; which one a client meets is timing, neither is a failure
    stopping = ("StatusCode.UNAVAILABLE", "has no available versions")
    assert all(any(s in e for s in stopping) for e in refusals), refusals
    assert any(after and e is None for after, e in outcomes)  # queued at the signal, answered after it
    assert _gone(server_pid, 5)
    assert set(Path("/dev/shm").glob("msvit_*")) <= shm, "shared memory left"


def test_sigkill_of_serve_takes_its_server_down_too(engine, tmp_path):
    process, server_pid, _ = _start_serve(engine, tmp_path)
    process.kill()
    process.wait(10)
    assert _gone(server_pid, 45)  # PR_SET_PDEATHSIG: the server is told, and drains


def test_the_triton_repo_command_writes_the_repository_and_keeps_a_users_folder(engine, tmp_path):
    cli = [sys.executable, "-m", "msvit_edge", "triton-repo", str(engine.path), "--out"]
    made = subprocess.run([*cli, str(tmp_path / "repo")], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "repo" / "msvit" / "config.pbtxt").is_file() and "repository:" in made.stdout
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = subprocess.run([*cli, str(tmp_path / "mine"), "--force"], capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_the_loadtest_command_answers_every_request_and_writes_the_report(server, bundle, tmp_path):
    cli = [sys.executable, "-m", "msvit_edge", "loadtest", server.grpc_url, "--bundle", str(bundle.path)]
    ran = subprocess.run([*cli, "--concurrency", "1,4", "--requests", "24", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    levels = report["levels"]
    assert [(r["concurrency"], r["answered"], r["errors"]) for r in levels] == [(1, 24, 0), (4, 24, 0)]
    assert all(r["top1_agreement"] == 1.0 for r in levels)  # FP32 engine: PyTorch's stored top-1 on every image
    assert sum(int(size) * n for size, n in levels[0]["batches"].items()) == 24  # concurrency 1: batches of 1
    assert (tmp_path / "r" / "report.csv").read_text().count("\n") == 3 and "| 4 | 24 | 24 | 0 |" in (
        tmp_path / "r" / "report.md"
    ).read_text()
