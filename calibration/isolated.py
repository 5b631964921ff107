"""Each precision pass runs in a process of its own.

ModelOpt's ``quantize`` patches ONNX Runtime's calibrators in place, which breaks
``onnxruntime.quantization.quantize_static`` for the rest of the process; two quantizers in one process would give
whichever ran second a damaged calibrator. Importing ModelOpt also reconfigures logging to print to stdout. So the
parent writes the graph (and the feeds) to a private folder, runs ``python -m msvit_edge.calibration.<pass>`` there
(the quantizers also write side files next to their input, which must not land in a bundle) and moves the result
into place atomically. The child's output is kept only when it fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from msvit_edge.calibration.tokens import Feed, load_feeds, save_feeds
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import atomic_path


class Job(NamedTuple):
    """One graph through a pass: its FP32 file, where the result goes, and its calibration feeds (INT8 only)."""

    graph: Path
    out: Path
    feeds: list[Feed] | None = None


def run_isolated(module: str, jobs: Sequence[Job], args: list[str]) -> list[Path]:
    """Run pass ``module`` on private copies of the jobs' graphs in ONE child process; results land at their ``out``.

    One child for all graphs of a pass: importing ModelOpt alone takes seconds.

    Args:
        module: The pass's module, run as ``python -m``; it takes ``--job GRAPH OUT FEEDS|- ... [args]``.
        jobs: The graphs (single files) and their feeds.
        args: The pass's options.
    """
    for job in jobs:
        if job.graph.with_name(job.graph.name + ".data").exists():
            raise MsvitEdgeError(
                "precision passes on a graph with external weights (over 2 GB) are not supported", job.graph
            )
    with tempfile.TemporaryDirectory(prefix="msvit-edge-calib-") as tmp:
        work, cmd = Path(tmp), [sys.executable, "-m", module, *args]
        for i, job in enumerate(jobs):
            shutil.copyfile(job.graph, work / f"{i}.onnx")
            if job.feeds is not None:
                save_feeds(work / f"{i}.npz", job.feeds)
            cmd += ["--job", f"{i}.onnx", f"{i}.out.onnx", "-" if job.feeds is None else f"{i}.npz"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
        if proc.returncode != 0:
            raise MsvitEdgeError(_failure(module, proc), jobs[0].graph)
        for i, job in enumerate(jobs):
            with atomic_path(job.out) as dst:
                shutil.copyfile(work / f"{i}.out.onnx", dst)
    return [job.out for job in jobs]


def feed_reader(feeds: list[Feed]):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``feeds`` (ModelOpt also calls get_first/rewind)."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> Feed | None:
            return next(self._it, None)

        def get_first(self) -> Feed:
            return feeds[0]

        def rewind(self) -> None:
            self._it = iter(feeds)

        def __len__(self) -> int:
            return len(feeds)

    return FeedReader()


def child_args(argv: list[str] | None, description: str, options: Callable) -> tuple:
    """Parse a pass child's ``--job GRAPH OUT FEEDS|-`` (repeated) and its own options; returns (namespace, jobs)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--job", nargs=3, action="append", required=True, metavar=("GRAPH", "OUT", "FEEDS"))
    options(parser)
    ns = parser.parse_args(argv)
    jobs = [Job(Path(g), Path(o), None if f == "-" else load_feeds(Path(f))) for g, o, f in ns.job]
    return ns, jobs


def _failure(module: str, proc: subprocess.CompletedProcess) -> str:
    """The one-line error for a failed child; its whole output is kept in a temporary file that the line names."""
    name = module.rsplit(".", 1)[-1]
    fd, path = tempfile.mkstemp(prefix=f"msvit-edge-{name}-", suffix=".log")
    with open(fd, "w") as f:
        f.write(proc.stdout + proc.stderr)
    return f"{name} failed: {_last_line(proc.stderr)} (output: {path})"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no error output"
