"""ONNX Runtime latency of an export bundle at batch 1 on this machine: the ratios the export issue sets targets for.

    python benchmarks/ort_latency.py [--bundle DIR] [--threads N] [--repeats R]

Without --bundle, the embedded demo checkpoint is exported to a temporary folder first. The three stages are timed
interleaved (A B C A B C ...) so that machine noise hits them alike; medians are reported, and only ratios measured
in this one run are compared with the targets:
- tokenizer + selection <= 5% of the all-fine encoder's latency;
- encoder at the demo's mean token count <= 1.1x the ideal share (MACs ratio) of the all-fine encoder's latency;
- expected padding overhead of the bucket plan <= 8% (from the manifest).
For context it also times the fine patch-embedding convolution alone, cut out of the tokenizer: what a plain ViT's
own tokenizer costs as a graph of its own. ``--profile`` adds ONNX Runtime's per-op kernel times of the encoder at
the mean and the all-fine token count, by op type: where its latency departs from the MACs share.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.selection import select
from msvit_edge.engines.ort import OnnxRuntimePipeline, session
from msvit_edge.measure.timing import interleaved
from msvit_edge.model.config import MSViTConfig
from msvit_edge.model.flops import encoder_macs


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Bundle(args.bundle) if args.bundle else export_demo(Path(tmp) / "bundle")
        report(bundle, patch_embedding_graph(bundle, Path(tmp) / "patch_embed.onnx"), args.threads, args.repeats)
        if args.profile:
            profile_encoder(bundle, args.threads, args.repeats, Path(tmp))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help="export bundle (default: export the embedded demo checkpoint)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--repeats", type=int, default=500)
    p.add_argument("--profile", action="store_true", help="also profile the encoder's kernels by op type")
    return p.parse_args()


def export_demo(out: Path) -> Bundle:
    from msvit_edge.export import ExportConfig, export

    return export(ExportConfig(out=str(out)))


def patch_embedding_graph(bundle: Bundle, out: Path) -> Path:
    """The tokenizer's fine patch-embedding Conv (images -> [B, D, G, G]) extracted into a graph of its own."""
    import onnx
    from onnx.utils import extract_model

    path = bundle.graph("tokenizer")
    weight = "model.patch_embed.proj.weight"  # the exporter's name for the fine patch embedding's kernel
    conv = next((n for n in onnx.load(path).graph.node if n.op_type == "Conv" and weight in n.input), None)
    if conv is None:
        raise SystemExit(f"{path}: no Conv on {weight}; was this bundle made by msvit-edge export?")
    extract_model(str(path), str(out), ["images"], [conv.output[0]])
    return out


def report(bundle: Bundle, patch_embed: Path, threads: int | None, repeats: int) -> None:
    vit = MSViTConfig.from_dict(bundle.manifest["model"]).vit
    ref = bundle.reference()
    images = bundle.preprocess(ref.images)
    mean_tokens = bundle.plan.mean_count
    n_mean, n_fine = round(mean_tokens), vit.token_range.max
    embed = session(patch_embed, threads or 1)  # one thread, like the pipeline's tokenizer
    with OnnxRuntimePipeline(bundle, threads=threads) as pipe:
        all_fine = pipe.tokenize(images[:1], 0.0).tokens  # real all-fine tokens of one image
        (at_fine,), (at_mean,) = (select(np.array([n])) for n in (n_fine, n_mean))
        fine_in, mean_in = pipe.cut(all_fine, at_fine), pipe.cut(all_fine, at_mean)
        stages = {
            "tokenizer+selection": lambda i: tokenize_and_select(pipe, images[i % len(images)][None], bundle.threshold),
            f"encoder @ {n_fine} (all fine)": lambda i: pipe.encode(fine_in, at_fine),
            f"encoder @ {n_mean} (mean)": lambda i: pipe.encode(mean_in, at_mean),
            "pipeline (real images)": lambda i: pipe(images[i % len(images)][None], bundle.threshold),
            "patch embedding alone": lambda i: embed.run(None, {"images": images[i % len(images)][None]}),
        }
        times = interleaved(stages, repeats, warmup=20)
    med = {k: statistics.median(v) for k, v in times.items()}
    names = list(med)
    tok, fine, mean, full, embed_only = (med[n] for n in names)
    macs_ratio = encoder_macs(vit, n_mean) / encoder_macs(vit, n_fine)
    print(f"ONNX Runtime, batch 1, threads={threads or 'default'}, {repeats} interleaved repeats, medians:")
    for n in names:
        print(f"  {n:<28} {1e3 * med[n]:8.3f} ms")
    print("ratios (this run):")
    check("tokenizer+selection / all-fine encoder", tok / fine, 0.05)
    check(f"encoder @ {n_mean} / ideal share ({macs_ratio:.3f} of all-fine)", mean / fine / macs_ratio, 1.10)
    check("expected padding overhead of the bucket plan", bundle.plan.expected_overhead, 0.08)
    print(f"  context: a plain ViT's patch embedding alone / all-fine encoder: {embed_only / fine:.3f}")
    print(
        f"  end-to-end speed-up over the all-fine encoder alone: {fine / full:.2f}x "
        f"(mean tokens {mean_tokens:.1f} of {n_fine})"
    )


def profile_encoder(bundle: Bundle, threads: int | None, repeats: int, tmp: Path, warmup: int = 20) -> None:
    """Per-op-type kernel time per run of the encoder at the mean and the all-fine count (ORT's profiler).

    One profiled session per count, run alternately so that machine noise hits both alike.
    """
    vit = MSViTConfig.from_dict(bundle.manifest["model"]).vit
    counts = (round(bundle.plan.mean_count), vit.token_range.max)
    sessions = {n: session(bundle.graph("encoder"), threads, profile_prefix=str(tmp / f"encoder{n}")) for n in counts}
    rng = np.random.default_rng(0)
    feeds = {n: {"tokens": rng.standard_normal((1, n, vit.embed_dim)).astype(np.float32)} for n in counts}
    for _ in range(warmup + repeats):
        for n in counts:
            sessions[n].run(None, feeds[n])
    per_op = {}
    for n in counts:
        events = json.loads(Path(sessions[n].end_profiling()).read_text())
        start = sorted(e["ts"] for e in events if e["name"] == "model_run")[warmup]  # the first timed run
        per_op[n] = defaultdict(float)
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
                per_op[n][e["args"]["op_name"]] += e["dur"] / repeats
    lo, hi = (per_op[n] for n in counts)
    macs_ratio = encoder_macs(vit, counts[0]) / encoder_macs(vit, counts[1])
    print(f"encoder kernels by op type, us per run (ORT profiler, {repeats} runs; MACs share {macs_ratio:.3f}):")
    print(f"  {'op':<24} {f'@ {counts[0]}':>9} {f'@ {counts[1]}':>9} {'ratio':>7}")
    for op in [*sorted(hi, key=hi.get, reverse=True), "total"]:
        a, b = (sum(t.values()) if op == "total" else t[op] for t in (lo, hi))
        print(f"  {op:<24} {a:9.0f} {b:9.0f} {a / b:7.3f}")


def tokenize_and_select(pipe: OnnxRuntimePipeline, image: np.ndarray, threshold: float) -> list[np.ndarray]:
    tokens, counts, *_ = pipe.tokenize(image, threshold)
    return [pipe.cut(tokens, call) for call in select(counts)]


def check(label: str, value: float, limit: float) -> None:
    print(f"  {label:<58} {value:7.3f}  (target <= {limit:g}: {'met' if value <= limit else 'MISSED'})")


if __name__ == "__main__":
    main()
