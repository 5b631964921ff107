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
from collections.abc import Callable
from pathlib import Path

from msvit_edge.calibration.tokens import Feed, load_feeds, save_feeds
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import atomic_path


def run_isolated(
    module: str, graph: Path, out: Path, args: list[str], log: Callable[[str], None], feeds: list[Feed] | None = None
) -> Path:
    """Run pass ``module`` on a private copy of ``graph`` in a child process; the result lands at ``out``.

    Args:
        module: The pass's module, run as ``python -m``; it takes ``GRAPH OUT [--feeds FEEDS] [args]``.
        graph: The FP32 ONNX graph (a single file).
        out: Where the new graph goes.
        args: The pass's options.
        log: Receives one line when the child fails.
        feeds: Calibration inputs, one dict per inference (INT8 only).
    """
    if graph.with_name(graph.name + ".data").exists():
        raise MsvitEdgeError(
            "INT8 calibration of a graph with external weights (a model over 2 GB) is not supported", graph
        )
    with tempfile.TemporaryDirectory(prefix="msvit-edge-calib-") as tmp:
        work = Path(tmp)
        shutil.copyfile(graph, work / "model.onnx")
        cmd = [sys.executable, "-m", module, str(work / "model.onnx"), str(work / "out.onnx"), *args]
        if feeds is not None:
            save_feeds(work / "feeds.npz", feeds)
            cmd += ["--feeds", str(work / "feeds.npz")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
        if proc.returncode != 0:
            (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
            log(f"{module} failed; its output is in {out.name}.log")
            raise MsvitEdgeError(f"{module.rsplit('.', 1)[-1]} failed: {_last_line(proc.stderr)}", graph)
        with atomic_path(out) as dst:
            shutil.copyfile(work / "out.onnx", dst)
    return out


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
    """The arguments every pass's child takes (GRAPH OUT [--feeds]) plus its own; returns (namespace, feeds)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("graph", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--feeds", type=Path)
    options(parser)
    ns = parser.parse_args(argv)
    return ns, None if ns.feeds is None else load_feeds(ns.feeds)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no error output"
