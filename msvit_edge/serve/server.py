"""A real ``tritonserver`` on a repository: the one ``nvidia-pytriton`` ships (2.51, python backend only, CPU), or any
other binary (an NGC container's, JetPack's) with ``tritonserver=PATH``.

The python backend's stub embeds the interpreter that runs this code: its backend folder links the wheel's
``libtriton_python.so``, ``triton_python_backend_utils.py`` and the stub built for this Python, and the server runs
with ``LD_LIBRARY_PATH`` at this Python's ``LIBDIR`` (otherwise the stub loads another libpython of the same version,
e.g. the system's, and fails late: a 95 s hang or an RLock ``_recursion_count`` error). The server dies with the
process that started it (``PR_SET_PDEATHSIG``), even when that one is SIGKILLed; its python-backend shared memory
gets a prefix of its own, removed when it stops.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.machine import environment as environment_facts
from msvit_edge.machine.doctor import NO_SHARED_LIBPYTHON
from msvit_edge.serve.repository import triton_repo

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def free_ports(host: str = "127.0.0.1") -> Ports:
    """Three ports free on ``host`` now (the kernel's choice), for tests and side-by-side servers."""
    sockets = [socket.socket() for _ in range(3)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return Ports(*(s.getsockname()[1] for s in sockets))
    finally:
        for s in sockets:
            s.close()


def pytriton_server() -> Path:
    """The ``tritonserver`` folder inside the installed nvidia-pytriton wheel (not imported: it pins numpy<2)."""
    folder = environment_facts.pytriton_server()
    if folder is None:
        raise MsvitEdgeError(
            "serve needs a tritonserver: pip install --no-deps nvidia-pytriton==0.7.0 (it ships one; --no-deps keeps "
            "numpy 2), or pass --tritonserver PATH"
        )
    return folder


def check_python() -> Path:
    """This Python's LIBDIR, refusing an interpreter the python backend's stub cannot embed."""
    libdir = environment_facts.shared_libpython()
    if libdir is None:
        raise MsvitEdgeError(NO_SHARED_LIBPYTHON.format(python=sys.executable))
    return libdir


def backend_folder(into: Path, wheel: Path) -> Path:
    """``into/python`` with the wheel's python backend and the stub for this Python, linked (the stub finds its
    libraries relative to its real path)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = [wheel / "backends/python/libtriton_python.so", wheel / "backends/python/triton_python_backend_utils.py",
             wheel / "python_backend_stubs" / version / "triton_python_backend_stub"]  # fmt: skip
    if not files[-1].is_file():
        raise MsvitEdgeError(f"nvidia-pytriton ships no python backend stub for Python {version}", files[-1].parent)
    (into / "python").mkdir(parents=True, exist_ok=True)
    for file in files:
        (into / "python" / file.name).symlink_to(file)
    return into


def environment(libdir: Path) -> dict[str, str]:
    """The server's environment: this Python's libpython first, and its site folders for the models' imports."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libdir), env.get("LD_LIBRARY_PATH")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*site.getsitepackages(), env.get("PYTHONPATH")]))
    return env


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class TritonServer:
    """A running ``tritonserver`` on ``repo``: a context manager that starts it, returns once every model is ready,
    and stops it (SIGTERM: Triton answers the requests in flight, then exits).

    Args:
        repo: The model repository.
        work: A folder for the backend links and, by default, the log.
        ports: HTTP, gRPC and metrics ports (default: free ones).
        host: The address every endpoint binds.
        binary: Another ``tritonserver`` (an NGC container's, JetPack's): it uses its own backends.
        log: The server's log file (default ``work/tritonserver.log``).
        exit_timeout: Seconds Triton waits for requests in flight when stopping.
    """

    def __init__(self, repo: str | Path, work: str | Path, ports: Ports | None = None, host: str = "127.0.0.1",
                 binary: str | Path | None = None, log: str | Path | None = None, exit_timeout: int = 30):  # fmt: skip
        self.repo, self.work, self.host = Path(repo).resolve(), Path(work), host
        self.ports = ports or free_ports(host)
        self.binary, self.exit_timeout = binary, exit_timeout
        self.log = Path(log) if log else self.work / "tritonserver.log"
        self.shm_prefix = f"msvit_{uuid.uuid4().hex[:12]}_"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    def __enter__(self) -> TritonServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def command(self) -> list[str]:
        p, h = self.ports, self.host
        head = [str(self.binary)] if self.binary else self._bundled()
        return [*head, f"--model-repository={self.repo}", f"--http-address={h}", f"--http-port={p.http}",
                f"--grpc-address={h}", f"--grpc-port={p.grpc}", f"--metrics-address={h}", f"--metrics-port={p.metrics}",
                "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0",
                f"--exit-timeout-secs={self.exit_timeout}",
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]  # fmt: skip

    def _bundled(self) -> list[str]:
        wheel = pytriton_server()
        backends = self.work / "backends"
        if not backends.exists():
            backend_folder(backends, wheel)
        return [str(wheel / "bin" / "tritonserver"), f"--backend-directory={backends}"]

    def start(self, timeout: float = 180) -> None:
        """Start the server and wait until it is ready; a one-line error with the log's reason if it exits first."""
        env = environment(check_python())
        self.work.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise MsvitEdgeError(f"tritonserver exited ({self.process.returncode}) before it was ready: "
                                     f"{last_error(self.log)}", self.log)  # fmt: skip
            if time.monotonic() > deadline:
                raise MsvitEdgeError(
                    f"tritonserver was not ready after {timeout:.0f} s: {last_error(self.log)}", self.log
                )
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as r:
                return r.status == 200 and self.process.poll() is None  # not another server on a clashing port
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> int | None:
        """SIGTERM, wait for Triton to drain and exit (SIGKILL past the exit timeout); its exit status."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.exit_timeout + 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for segment in Path("/dev/shm").glob(f"{self.shm_prefix}*"):  # left by stubs that were killed
            segment.unlink(missing_ok=True)
        return None if self.process is None else self.process.returncode


def last_error(log: Path) -> str:
    """The last error line of a Triton log (``E...`` lines), or its last line."""
    lines = (
        [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    )
    errors = [line for line in lines if line[:1] == "E" and line[1:5].isdigit()]
    return (errors or lines or ["no log"])[-1][-300:]


def serve(source: str | Path, work: str | Path | None = None, ports: Ports | None = None, host: str = "127.0.0.1",
          tritonserver: str | Path | None = None, log: str | Path | None = None,
          on_ready: Callable[[TritonServer], None] | None = None, stages: str | None = None) -> int:  # fmt: skip
    """Write the repository of an engine folder or bundle into a work folder and serve it until SIGTERM or Ctrl-C;
    returns Triton's exit status (0 after a clean drain).

    Args:
        source: The engine folder or bundle.
        work: The work folder (repository, backend links, log); default a temporary one, removed afterwards.
        ports: HTTP, gRPC and metrics ports (default Triton's 8000-8002).
        host: The address every endpoint binds (127.0.0.1 unless told otherwise).
        tritonserver: Another tritonserver binary (an NGC container's, JetPack's).
        log: The server's log (default ``WORK/tritonserver.log``).
        on_ready: Called once the server is ready (the CLI prints its endpoints).
        stages: The repository's stages (``triton_repo``'s: ``inline`` for ONNX Runtime by default, or ``bls``).
    """
    folder = Path(work) if work else Path(tempfile.mkdtemp(prefix="msvit-serve-"))
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        repo = triton_repo(source, folder / "repository", force=True, stages=stages)
        with TritonServer(repo.path, folder, ports or Ports(), host, tritonserver, log) as server:
            if on_ready:
                on_ready(server)
            while not stop.wait(0.5) and server.process.poll() is None:
                pass
        return server.process.returncode
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if not work:
            shutil.rmtree(folder, ignore_errors=True)
