"""Serving through a real tritonserver (the one nvidia-pytriton ships) with real tritonclient calls over HTTP and
gRPC, on an ONNX Runtime engine folder of the tiny bundle. Skipped, saying why, only where tritonserver or
tritonclient is absent (.ci/setup installs both)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
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
    from msvit_edge.serve import TritonServer, triton_repo

    work = tmp_path_factory.mktemp("serve")
    repo = triton_repo(engine, work / "repo")
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


def statistics(server) -> dict[str, int]:
    import tritonclient.http as http

    client = http.InferenceServerClient(server.url)
    try:
        return {m["name"]: m["execution_count"] for m in client.get_inference_statistics()["model_stats"]}
    finally:
        client.close()


def test_every_config_parses_and_each_bucket_has_its_encoder_models(engine, tmp_path):
    from msvit_edge.serve import triton_repo
    from msvit_edge.serve.config import parse

    repo = triton_repo(engine, tmp_path / "repo")
    buckets = len(engine.plan.buckets)
    assert len(repo.models) == 2 + 2 * buckets and repo.runs_here
    for model in repo.models:
        config = parse((repo.path / model / "config.pbtxt").read_text(), model)
        assert config.name == model
    router = parse((repo.path / "msvit" / "config.pbtxt").read_text(), "msvit")
    assert router.max_batch_size == engine.plan.batch[2] and router.HasField("dynamic_batching")
    assert (repo.path / "msvit" / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    with pytest.raises(MsvitEdgeError, match="pass --force"):
        triton_repo(engine, tmp_path / "repo")


def test_a_misspelt_config_is_refused_before_it_is_written():
    from msvit_edge.serve.config import parse

    with pytest.raises(MsvitEdgeError, match="does not parse as Triton's ModelConfig"):
        parse('name: "x"\nmax_batch_sise: 4\n', "x/config.pbtxt")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_answers_equal_the_in_process_pipeline(server, engine, images, protocol):
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    module, url = (http, server.url) if protocol == "http" else (grpc, server.grpc_url)
    want = reference(engine, images)
    got = [infer(module, url, part) for part in np.split(images, [27, 28, 55, 82])]  # batches of 27, 1, 27, 27, 14
    assert np.array_equal(np.concatenate([g["tokens"] for g in got])[:, 0], want.counts)
    np.testing.assert_allclose(np.concatenate([g["logits"] for g in got]), want.logits, rtol=1e-4, atol=1e-4)
    assert np.array_equal(np.concatenate([g["top_class"] for g in got])[:, 0], want.logits.argmax(1))


def test_one_batch_spanning_buckets_reaches_each_buckets_encoder(server, engine, images):
    import tritonclient.http as http

    counts = reference(engine, images).counts
    buckets = np.array([engine.plan.index(int(c)) for c in counts])
    pick = np.array([np.flatnonzero(buckets == b)[0] for b in np.unique(buckets)])
    assert len(pick) >= 2  # the tiny bundle's images span its buckets
    before = statistics(server)
    got = infer(http, server.url, images[pick])
    after = statistics(server)
    assert np.array_equal(got["tokens"][:, 0], counts[pick])
    ran = {name for name in after if after[name] > before.get(name, 0) and "encoder" in name}
    assert {name.rsplit("_b", 1)[1] for name in ran} == {str(b) for b in np.unique(buckets)}
    assert after["msvit"] == before["msvit"] + 1 and after["msvit_tokenizer"] == before["msvit_tokenizer"] + 1


@pytest.mark.parametrize(
    ("bad", "name", "message"),
    [
        (np.zeros((2, 32, 32, 3), np.float32), "images", "FP32"),  # wrong dtype
        (np.zeros((2, 16, 16, 3), np.uint8), "images", "shape"),  # wrong image size
        (np.zeros((2, 32, 32, 3), np.uint8), "pixels", "pixels"),  # unknown input
        (np.zeros((65, 32, 32, 3), np.uint8), "images", "batch"),  # over the maximum batch
    ],
)
def test_a_bad_request_gets_a_triton_error_naming_it_and_the_next_one_is_answered(server, images, bad, name, message):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match=message):
        infer(http, server.url, bad, name)
    assert infer(http, server.url, images[:3])["logits"].shape == (3, 10)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _start_serve(engine, tmp_path) -> tuple[subprocess.Popen, int]:
    """``serve`` in a child process, once it is ready: (that process, its tritonserver's pid)."""
    ready = tmp_path / "ready.json"
    code = (
        "import json, os, sys; from msvit_edge.serve import serve\n"
        f"sys.exit(serve({str(engine.path)!r}, work={str(tmp_path / 'work')!r}, ports=__import__("
        "'msvit_edge.serve.server', fromlist=['free_ports']).free_ports(), on_ready=lambda s: open("
        f"{str(ready)!r}, 'w').write(json.dumps(s.process.pid))))"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    while not ready.is_file() or not ready.read_text():
        assert process.poll() is None and time.monotonic() < deadline, "serve exited or was never ready"
        time.sleep(0.2)
    return process, json.loads(ready.read_text())


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


def test_sigterm_stops_serve_with_exit_0_and_no_server_left(engine, tmp_path):
    shm = set(Path("/dev/shm").glob("msvit_*"))
    process, server_pid = _start_serve(engine, tmp_path)
    assert server_pid in _children(process.pid)
    assert set(Path("/dev/shm").glob("msvit_*")) - shm  # its python backend's segments, under its own prefix
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert _gone(server_pid, 5)
    assert set(Path("/dev/shm").glob("msvit_*")) <= shm, "shared memory left"


def test_sigkill_of_serve_takes_its_server_down_too(engine, tmp_path):
    process, server_pid = _start_serve(engine, tmp_path)
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
