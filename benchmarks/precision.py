"""Precision passes measured: calibration methods, FP32/FP16/INT8 accuracy, and ONNX Runtime CPU latency.

    python benchmarks/precision.py methods  --bundle DIR [--calib 512] [--held 2000]
    python benchmarks/precision.py counts   --bundle DIR [--held 2000]
    python benchmarks/precision.py accuracy --bundle DIR [--test 10000]
    python benchmarks/precision.py deit     --out DIR
    python benchmarks/precision.py speed    --bundle DIR [--repeats 20] [--variants ...]

``methods`` compares the calibration methods of ModelOpt (and of ONNX Runtime's quantizer) on held-out TRAINING
images, never the test split: calibration takes the first ``--calib`` images of a seeded permutation of the training
split, the comparison the next ``--held``. ``counts`` sweeps the number of calibration images (the documented
minimum). ``accuracy`` runs every shipped precision on the test split once. ``deit`` exports a DeiT-S-sized MSViT
with random weights (speed only). ``speed`` times FP32 and INT8 graphs interleaved in one run, batch 1 and 32,
through the whole ONNX Runtime pipeline and the encoder alone. Every result is printed as a Markdown row and
appended to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.selection import select
from msvit_edge.calibration import encoder_feeds, precision_graphs
from msvit_edge.calibration.compare import GraphsPipeline, compare_outputs, run_graphs
from msvit_edge.calibration.images import load_images
from msvit_edge.calibration.int8 import DEFAULT_METHOD, quantize_modelopt
from msvit_edge.calibration.isolated import Job
from msvit_edge.calibration.ort_int8 import quantize_ort
from msvit_edge.measure.timing import interleaved

ALL_ORT_OPS = ()  # empty: every op type ONNX Runtime's QDQ quantizer supports


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    {"methods": methods, "counts": counts, "accuracy": accuracy, "deit": deit, "speed": speed}[args.command](args)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("methods", "counts", "accuracy", "deit", "speed"))
    p.add_argument("--bundle", type=Path)
    p.add_argument("--out", type=Path, help="deit: the bundle to write")
    p.add_argument("--work", type=Path, default=Path("precision-work"), help="graphs and the calibration cache")
    p.add_argument("--json", type=Path, default=Path("precision-results.json"))
    p.add_argument("--calib", type=int, default=512, help="calibration images (training split)")
    p.add_argument("--held", type=int, default=2000, help="held-out training images for method comparison")
    p.add_argument("--test", type=int, default=10000, help="test images for the final accuracy")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variants", nargs="+", default=["fp32", "int8-modelopt", "int8-ort-matmul", "int8-ort-all"])
    return p.parse_args()


def record(args: argparse.Namespace, row: dict) -> None:
    row = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), **row}
    results = json.loads(args.json.read_text()) if args.json.is_file() else []
    args.json.write_text(json.dumps([*results, row], indent=1) + "\n")
    cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in row.items() if k not in ("date", "machine")]
    print("| " + " | ".join(cells) + " |", flush=True)


def machine() -> str:
    import os

    import onnxruntime

    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":")[1].strip() for line in lines if "model name" in line), "?")
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}, ORT {onnxruntime.__version__}"


# ---- graphs ----------------------------------------------------------------------------------------------------


def variant(bundle: Bundle, name: str, calib: np.ndarray, work: Path, method: str | None = None) -> dict:
    """The graphs of one precision variant (made once, cached under ``work``)."""
    cache = work / "cache"
    if name == "fp32":
        return {}
    if name == "fp16":
        return precision_graphs(bundle, "fp16", "tensorrt", None, work / "fp16", cache_dir=cache).graphs
    if name == "int8-tensorrt":  # what TensorRT gets: ModelOpt Q/DQ, the rest FP16
        out = work / f"int8-tensorrt-{method}-{len(calib)}"
        return precision_graphs(bundle, "int8", "tensorrt", calib, out, method, cache_dir=cache).graphs
    folder = work / f"{name}-{method}-{len(calib)}"
    graphs = {n: folder / f"{n}.onnx" for n in ("encoder", "encoder_masked")}
    if all(p.is_file() for p in graphs.values()):
        return graphs
    feeds = encoder_feeds(bundle, calib, minimum=1)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [Job(bundle.graph(n), path, feeds.for_graph(n)) for n, path in graphs.items()]
    if name == "int8-modelopt":
        quantize_modelopt(jobs, method or DEFAULT_METHOD, "fp32")
    else:
        ops = {"int8-ort-matmul": ("MatMul",), "int8-ort-gemm": ("MatMul", "Gemm"), "int8-ort-all": ALL_ORT_OPS}
        quantize_ort(
            jobs, ops[name.removesuffix("-u8")], method or "minmax", "uint8" if name.endswith("-u8") else "int8"
        )
    return graphs


# ---- accuracy --------------------------------------------------------------------------------------------------


def methods(args: argparse.Namespace) -> None:
    bundle = Bundle(args.bundle)
    calib, _ = load_images(bundle, n=args.calib)
    held, labels = load_images(bundle, n=args.held, offset=args.calib)
    fp32 = run_graphs(bundle, {}, held)
    runs = [("int8-modelopt", m) for m in ("max", "entropy")] + [("int8-tensorrt", m) for m in ("max", "entropy")]
    runs += [("int8-ort-matmul", "minmax")]  # ONNX Runtime's histogram methods fail on feeds of mixed token counts
    for name, method in runs:
        graphs = variant(bundle, name, calib, args.work, method)
        report = compare_outputs(run_graphs(bundle, graphs, held), fp32, labels)
        record(args, {"table": "methods", "variant": name, "method": method, "calib": len(calib), **report})


def counts(args: argparse.Namespace) -> None:
    bundle = Bundle(args.bundle)
    held, labels = load_images(bundle, n=args.held, offset=2048)
    fp32 = run_graphs(bundle, {}, held)
    for n in (32, 64, 128, 256, 512, 1024):
        calib, _ = load_images(bundle, n=n)
        for name in ("int8-modelopt", "int8-ort-matmul"):
            report = compare_outputs(run_graphs(bundle, variant(bundle, name, calib, args.work), held), fp32, labels)
            record(args, {"table": "counts", "variant": name, "calib": n, **report})


def accuracy(args: argparse.Namespace) -> None:
    bundle = Bundle(args.bundle)
    calib, _ = load_images(bundle, n=args.calib)
    test, labels = load_images(bundle, n=args.test, split="test")
    fp32 = run_graphs(bundle, {}, test)
    names = ["fp32", "fp16", "int8-tensorrt", "int8-modelopt", "int8-ort-matmul"]
    for name in names:
        report = compare_outputs(run_graphs(bundle, variant(bundle, name, calib, args.work), test), fp32, labels)
        record(args, {"table": "accuracy", "variant": name, "calib": len(calib), **report})
    fp16 = variant(bundle, "fp16", calib, args.work)
    tokenizer = fp16["encoder"].with_name("tokenizer.fp16.onnx")
    if not tokenizer.is_file():
        from msvit_edge.calibration.fp16 import to_fp16

        to_fp16(bundle.graph("tokenizer"), tokenizer)
    report = compare_outputs(run_graphs(bundle, fp16 | {"tokenizer": tokenizer}, test), fp32, labels)
    record(args, {"table": "accuracy", "variant": "fp16 with an fp16 tokenizer", "calib": 0, **report})


# ---- speed -----------------------------------------------------------------------------------------------------


def speed(args: argparse.Namespace) -> None:
    bundle = Bundle(args.bundle)
    calib, _ = load_images(bundle, n=args.calib)
    images, _ = load_images(bundle, n=64, offset=args.calib)
    graphs = {name: variant(bundle, name, calib, args.work) for name in args.variants}
    pipes = {name: QuietPipeline(bundle, g, args.threads).__enter__() for name, g in graphs.items()}
    for batch in (1, 32):
        xs = [bundle.preprocess(images[i : i + batch]) for i in range(0, 64, batch)]
        whole = {name: _whole(pipe, xs, bundle.threshold) for name, pipe in pipes.items()}
        encoder = {name: _encoder(pipe, xs, bundle.threshold) for name, pipe in pipes.items()}
        for stage, candidates in (("pipeline", whole), ("encoder", encoder)):
            times = interleaved(candidates, args.repeats * (8 if batch == 1 else 1), warmup=2)
            ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
            for name in graphs:
                row = {"table": "speed", "bundle": bundle.path.name, "threads": args.threads, "stage": stage}
                row |= {"batch": batch, "variant": name}
                record(args, row | {"ms": ms[name], "speedup_vs_fp32": ms["fp32"] / ms[name]})


class QuietPipeline(GraphsPipeline):
    """Sessions whose idle workers sleep instead of spinning.

    Every variant's sessions stay alive for interleaved timing; ONNX Runtime's workers spin after each run, and on a
    2-core machine a spinning pool of one variant slowed whichever ran next, by up to 9x at batch 1.
    """

    def activate(self) -> None:
        import onnxruntime as ort

        def quiet(path, threads):
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            options.intra_op_num_threads = threads or 0
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        self.sessions = {n: quiet(p, self.threads or (1 if n == "tokenizer" else None)) for n, p in self.graphs.items()}


def _whole(pipe, xs: list[np.ndarray], threshold: float):
    return lambda i: pipe(xs[i % len(xs)], threshold)


def _encoder(pipe, xs: list[np.ndarray], threshold: float):
    """The encoder call alone, on the real tokens of each batch (masked where the batch's counts differ)."""
    calls = []
    for x in xs:
        tok = pipe.tokenize(x, threshold)
        (selection,) = select(tok.counts)
        calls.append((pipe.cut(tok.tokens, selection), selection))
    return lambda i: pipe.encode(*calls[i % len(calls)])


# ---- a DeiT-S-sized bundle -------------------------------------------------------------------------------------


def deit(args: argparse.Namespace) -> None:
    """Random-weight MSViT at DeiT-S size (224 px, dim 384, depth 12), half its regions fine on scenes rendered at
    224 px: what ``msvit-edge export --preset vit_small_patch16_224 --random-weights --fine-fraction 0.5`` makes."""
    from msvit_edge.export import ExportConfig, export

    cfg = ExportConfig(
        out=str(args.out),
        preset="vit_small_patch16_224",
        random_weights=True,
        fine_fraction=0.5,
        calib_images=1024,
        val_images=32,
        buckets=3,
        force=True,
    )
    export(cfg)


if __name__ == "__main__":
    main()
