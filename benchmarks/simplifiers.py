"""onnxsim against onnxslim on MSViT's graphs: node counts and ONNX Runtime latency, measured in one run.

    python benchmarks/simplifiers.py [--ckpt CKPT] [--threads N] [--repeats R]

Exports the checkpoint's graphs unsimplified, simplifies copies with each tool, checks that the token dims stay
symbolic, and times the tokenizer (batch 1) and the encoder (batch 1, all-fine token count) interleaved.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnx

from msvit_edge.engines.ort import session
from msvit_edge.export import ExportConfig, export_graphs, simplify
from msvit_edge.measure.timing import interleaved
from msvit_edge.model.checkpoint import load_model

TOOLS = ("none", "onnxsim", "onnxslim")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", help="msvit-edge checkpoint (default: the embedded demo)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args()
    model, _ = load_model(args.ckpt)
    model.set_export(True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "none"
        raw.mkdir()
        export_graphs(model, raw, ExportConfig(simplifier="none"))
        for tool in TOOLS[1:]:
            shutil.copytree(raw, Path(tmp) / tool)
            for graph in ("tokenizer", "encoder"):
                simplify(Path(tmp) / tool / f"{graph}.onnx", tool)
        feeds = make_feeds(model)
        for graph in ("tokenizer", "encoder"):
            compare(graph, {tool: Path(tmp) / tool / f"{graph}.onnx" for tool in TOOLS}, feeds[graph], args)


def make_feeds(model) -> dict[str, dict[str, np.ndarray]]:
    vit = model.vit_config
    rng = np.random.default_rng(0)
    images = rng.standard_normal((1, vit.in_chans, vit.img_size, vit.img_size), dtype=np.float32)
    tokens = rng.standard_normal((1, vit.token_range.max, vit.embed_dim), dtype=np.float32)
    return {"tokenizer": {"images": images, "threshold": np.asarray(0.5, np.float32)}, "encoder": {"tokens": tokens}}


def compare(graph: str, paths: dict[str, Path], feed: dict[str, np.ndarray], args) -> None:
    sessions = {tool: session(path, args.threads) for tool, path in paths.items()}
    times = interleaved({tool: lambda _, s=s: s.run(None, feed) for tool, s in sessions.items()}, args.repeats, 20)
    base = statistics.median(times["none"])
    print(f"{graph}.onnx (batch 1, threads={args.threads or 'default'}, median of {args.repeats}):")
    for tool, path in paths.items():
        model = onnx.load(str(path))
        dims = [d.dim_param or d.dim_value for i in model.graph.input for d in i.type.tensor_type.shape.dim]
        symbolic = sum(isinstance(d, str) and d != "" for d in dims)
        med = statistics.median(times[tool])
        print(
            f"  {tool:<9} {len(model.graph.node):4d} nodes  {1e3 * med:7.3f} ms  ({med / base:.3f}x unsimplified)  "
            f"symbolic input dims: {symbolic}"
        )


if __name__ == "__main__":
    main()
