"""Batch 1, where token reduction usually loses: MSViT vs the plain ViT per stage and per call, one image at a time.

    python benchmarks/batch1.py [--bundle DIR ...] [--threads N | --cpu-time] [--seconds S] [--runs R] [--block B]
                                [--no-torch] [--batch32]

Without --bundle, the embedded demo checkpoint is exported to a temporary folder first. For each bundle, one
interleaved run (A B C ... A B C ...) times, on ONNX Runtime FP32 at batch 1 over the bundle's reference images:
- the plain ViT of the same weights, and MSViT as it runs (``OnnxRuntimePipeline``: one session call per image) and
  as three stages (``one_call=False``: tokenizer session, selection in numpy, encoder session);
- each stage alone on the same images: tokenizer, selection (numpy), the copy of the selected rows, the encoder at
  the image's count, the encoder padded to the image's bucket maximum with the key mask (what a static-shape engine
  pays), and an empty graph's session call (the fixed cost of one ``run``);
- PyTorch eager, MSViT and the plain ViT (unless --no-torch), in a second interleaved run: PyTorch's OpenMP threads
  keep spinning after each op and would take the cores ONNX Runtime's sessions need.
Only ratios measured in one run are compared: efficiency = (plain ViT time / MSViT time) / the MACs-ideal speedup at
the images' mean token count, and the tokenizer + selection share of the plain ViT's time (targets from issue 26).
Candidates take turns in blocks (``--block``, default 4: A A A A B B B B ...) and the first call of each block is not
timed: a camera feeds one model image after image, so its weights stay in cache, while a call straight after another
model's pays for reloading them, a fixed cost per call that alone took 0.06 of the demo's efficiency (docs/batch1.md).
``--cpu-time`` runs everything on one thread and reads the thread's CPU clock instead of the wall clock: on a shared
machine other processes then cannot lengthen a call. --runs repeats the run and prints each ratio's range;
--batch32 adds the batch-32 efficiency. Results: docs/batch1.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.selection import Selection, select
from msvit_edge.engines.ort import OnnxRuntimePipeline, session
from msvit_edge.model.config import PRESETS, MSViTConfig
from msvit_edge.model.flops import msvit_macs, vit_macs

TARGETS = {"vit_demo_patch8_80": 0.85, "vit_tiny_patch16_224": 0.90, "vit_small_patch16_224": 0.95}
TOKENIZER_SHARE = 0.05  # tokenizer + selection / plain ViT, at ViT-Tiny size
IMAGES = 16  # reference images cycled through: several token counts, few enough to stay in cache


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = empty_graph(Path(tmp) / "empty.onnx")
        bundles = [Bundle(b) for b in args.bundle] or [export_demo(Path(tmp) / "demo")]
        for bundle in bundles:
            runs = [measure(bundle, empty, args) for _ in range(args.runs)]
            report(bundle, runs, args)
            if args.batch32:
                batch32(bundle, args)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, action="append", default=[], help="export bundle (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--cpu-time", action="store_true", help="one thread, timed by its CPU clock (a shared machine)")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per run and bundle")
    p.add_argument("--runs", type=int, default=1, help="repeat the interleaved run, report the range")
    p.add_argument("--block", type=int, default=4, help="calls in a row per candidate, the first untimed (1: A B A B)")
    p.add_argument("--no-torch", action="store_true", help="leave out PyTorch eager")
    p.add_argument("--batch32", action="store_true", help="also MSViT vs the plain ViT at batch 32")
    args = p.parse_args()
    args.threads = 1 if args.cpu_time else args.threads
    args.clock = time.thread_time if args.cpu_time else time.perf_counter
    return args


def export_demo(out: Path) -> Bundle:
    from msvit_edge.export import ExportConfig, export  # lazy: torch

    return export(ExportConfig(out=str(out)))


def empty_graph(out: Path) -> Path:
    """A one-Identity graph: its ``run`` is the session's fixed cost per call (feeds, fetches, executor)."""
    import onnx  # lazy: heavy
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty", io[:1], io[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), out)
    return out


def measure(bundle: Bundle, empty: Path, args) -> dict[str, float]:
    """Median ms of every candidate, from one interleaved run (and PyTorch's, from a second)."""
    x = bundle.preprocess(bundle.reference().images[:IMAGES])
    t, n, plan = bundle.threshold, len(x), bundle.plan
    one = [x[i : i + 1] for i in range(n)]
    with (
        OnnxRuntimePipeline(bundle, threads=args.threads) as pipe,
        OnnxRuntimePipeline(bundle, threads=args.threads, one_call=False) as staged,
    ):
        tok = [staged.tokenize(im, t) for im in one]
        calls = [select(k.counts, plan, False, staged.batching)[0] for k in tok]
        cut = [staged.cut(k.tokens, c) for k, c in zip(tok, calls, strict=True)]
        padded = [pad_to_bucket(k.tokens, c, bundle) for k, c in zip(tok, calls, strict=True)]
        vit, empty_session, feed = pipe.plain_vit(), session(empty, args.threads), {"x": np.zeros(1, np.float32)}
        candidates = {
            "plain ViT": lambda i: vit(one[i % n]),
            "MSViT": lambda i: pipe(one[i % n], t),
            "MSViT, stages": lambda i: staged(one[i % n], t),
            "tokenizer": lambda i: staged.tokenize(one[i % n], t),
            "selection": lambda i: select(tok[i % n].counts, plan, False, staged.batching),
            "copy of the rows": lambda i: staged.cut(tok[i % n].tokens, calls[i % n]),
            "encoder": lambda i: staged.encode(cut[i % n], calls[i % n]),
            "encoder, bucket-padded": lambda i: staged.encode(*padded[i % n]),
            "empty session call": lambda i: empty_session.run(None, feed),
        }
        times = timed(candidates, args.seconds, args.clock, args.block)
    if not args.no_torch:
        times |= timed(torch_candidates(bundle, one, t, args.threads), args.seconds / 2, args.clock, args.block)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return ms | {"mean tokens": float(np.mean([c.rows for c in calls]))}


def pad_to_bucket(tokens: np.ndarray, call: Selection, bundle: Bundle) -> tuple[np.ndarray, Selection]:
    """The encoder's input and call at the bucket's maximum, as a static-shape engine runs it."""
    (padded,) = select(call.counts, bundle.plan, True)
    return np.ascontiguousarray(tokens[:, : padded.rows]), padded


def torch_candidates(bundle: Bundle, one: list[np.ndarray], threshold: float, threads: int | None) -> dict:
    import torch  # lazy: heavy, and only for the comparison

    from msvit_edge.engines.pytorch import torch_pipeline  # lazy: torch

    if threads:
        torch.set_num_threads(threads)
    pipe = torch_pipeline(bundle)
    vit, n = pipe.plain_vit(), len(one)
    return {"PyTorch plain ViT": lambda i: vit(one[i % n]), "PyTorch MSViT": lambda i: pipe(one[i % n], threshold)}


def timed(candidates: dict, seconds: float, clock: Callable[[], float], block: int) -> dict[str, list[float]]:
    """Seconds per call of each candidate, interleaved by blocks of ``block`` calls whose first is not timed (it runs
    on caches the other candidates left), after 5 warm-up rounds that also size the run to ``seconds`` of wall
    time. ``measure.timing.interleaved`` with a choice of clock, and blocks."""
    start = time.perf_counter()
    for i in range(5):
        for fn in candidates.values():
            fn(i)
    rounds = max(20, round(seconds * 5 / (time.perf_counter() - start) / block))
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for i in range(rounds):
        for name, fn in candidates.items():
            for j in range(block):
                begin = clock()
                fn(i * block + j)
                if j or block == 1:
                    times[name].append(clock() - begin)
    return times


def ratios(bundle: Bundle, ms: dict[str, float]) -> dict[str, float]:
    """The run's ratios: efficiency per path, and where the time goes, as shares of the plain ViT's time."""
    cfg = MSViTConfig.from_dict(bundle.record.model)
    ideal = vit_macs(cfg.vit) / msvit_macs(cfg.vit, cfg.gate, ms["mean tokens"])
    vit = ms["plain ViT"]
    stages = ms["tokenizer"] + ms["selection"] + ms["copy of the rows"]
    out = {
        "ideal speedup (MACs)": ideal,
        "efficiency": vit / ms["MSViT"] / ideal,
        "efficiency, stages": vit / ms["MSViT, stages"] / ideal,
        "encoder alone: efficiency": vit / ms["encoder"] / ideal,
        "tokenizer+selection / plain ViT": (ms["MSViT"] - ms["encoder"]) / vit,  # what the one call adds to the encoder
        "tokenizer+selection / plain ViT, stages": stages / vit,
        "  of which selection (numpy)": ms["selection"] / vit,
        "  of which the copy of the rows": ms["copy of the rows"] / vit,
        "stage glue (Python) / plain ViT": (ms["MSViT, stages"] - stages - ms["encoder"]) / vit,
        "one session call / plain ViT": ms["empty session call"] / vit,
        "padding to the bucket / plain ViT": (ms["encoder, bucket-padded"] - ms["encoder"]) / vit,
    }
    if "PyTorch MSViT" in ms:
        out["PyTorch eager: efficiency"] = ms["PyTorch plain ViT"] / ms["PyTorch MSViT"] / ideal
    return out


def report(bundle: Bundle, runs: list[dict[str, float]], args) -> None:
    vit = MSViTConfig.from_dict(bundle.record.model).vit
    name = next((k for k in TARGETS if _same_size(vit, k)), "custom")
    clock = "CPU time, 1 thread" if args.cpu_time else f"wall clock, threads {args.threads or 'default'}"
    print(
        f"\n{bundle.path} ({name}: dim {vit.embed_dim}, {vit.img_size} px), batch 1, {clock}, blocks of {args.block}, ",
        end="",
    )
    print(f"{len(runs)} run(s)")
    print("  median ms per call (min .. max over runs)")
    for k in runs[0]:
        print(f"    {k:<28} {min(r[k] for r in runs):9.3f} .. {max(r[k] for r in runs):9.3f}")
    print("  ratios (min .. max over runs)")
    per_run = [ratios(bundle, ms) for ms in runs]
    for k in per_run[0]:
        lo, hi = min(r[k] for r in per_run), max(r[k] for r in per_run)
        print(f"    {k:<40} {lo:7.3f} .. {hi:7.3f}{_target(k, name, lo, hi)}")


def _same_size(vit, preset_name: str) -> bool:
    p = PRESETS[preset_name]
    return (vit.embed_dim, vit.depth, vit.img_size, vit.patch_size) == (p.embed_dim, p.depth, p.img_size, p.patch_size)


def _target(key: str, name: str, lo: float, hi: float) -> str:
    if key == "efficiency" and name in TARGETS:
        verdict = "met" if lo >= TARGETS[name] else "missed" if hi < TARGETS[name] else "met in some runs"
        return f"   target >= {TARGETS[name]}: {verdict}"
    if key == "tokenizer+selection / plain ViT" and name == "vit_tiny_patch16_224":
        verdict = "met" if hi <= TOKENIZER_SHARE else "missed" if lo > TOKENIZER_SHARE else "met in some runs"
        return f"   target <= {TOKENIZER_SHARE}: {verdict}"
    return ""


def batch32(bundle: Bundle, args) -> None:
    """MSViT against the plain ViT at batch 32, interleaved: the batch-1 work must not cost the large batch."""
    x = bundle.preprocess(bundle.reference().images[:32])
    with OnnxRuntimePipeline(bundle, threads=args.threads) as pipe:
        vit = pipe.plain_vit()
        counts = pipe(x, bundle.threshold).counts
        candidates = {"plain ViT": lambda i: vit(x), "MSViT": lambda i: pipe(x, bundle.threshold)}
        times = timed(candidates, args.seconds, args.clock, args.block)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    cfg = MSViTConfig.from_dict(bundle.record.model)
    ideal = vit_macs(cfg.vit) / msvit_macs(cfg.vit, cfg.gate, float(counts.mean()))
    print(f"  batch 32: plain ViT {ms['plain ViT']:.2f} ms, MSViT {ms['MSViT']:.2f} ms, ", end="")
    print(f"efficiency {ms['plain ViT'] / ms['MSViT'] / ideal:.3f}")


if __name__ == "__main__":
    main()
