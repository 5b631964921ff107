"""Issue 23's acceptance numbers for a segmentation checkpoint, on the scenes' test split (10,000 by default).

1. PyTorch (``msvit-edge eval``'s settings): MSViT at its threshold, the same weights all fine, all coarse, and a
   random gate at each image's own fine count: mIoU, pixel accuracy, tokens, boundary recall.
2. Engines (a bundle's FP32 graphs and engine folders built from it, all ONNX Runtime here): mIoU, pixel accuracy,
   per-pixel agreement with the first source (FP32), and token counts against PyTorch's, streamed in chunks so that
   10,000 images never sit in memory as pixel logits.

    python benchmarks/segmentation.py --ckpt CKPT --sources BUNDLE ENGINES_FP16 ENGINES_INT8 [--limit 10000] \
        [--threads 2] [--json runs/seg-acceptance.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from msvit_edge.bundle import dense
from msvit_edge.bundle.engine_folder import open_source
from msvit_edge.bundle.metrics import confusion_matrix, segmentation_scores
from msvit_edge.data import open_segmentation_dataset, random_subset
from msvit_edge.engines import open_pipeline
from msvit_edge.measure.evaluate import EvalConfig, evaluate
from msvit_edge.model.checkpoint import load_checkpoint


def pytorch_settings(ckpt: str, limit: int, out: str) -> dict:
    report = evaluate(EvalConfig(ckpt=ckpt, thresholds=(), limit=limit, overlays=0, out=out, force=True))
    rows = {}
    for name in ("msvit", "all-fine", "all-coarse", "random"):
        s = report["settings"][name]
        rows[name] = {k: s[k] for k in ("miou", "pixel_accuracy", "boundary_recall", "tokens_mean", "gmacs") if k in s}
    return {"images": report["images"], "settings": rows}


def engines(ckpt: str, sources: list[str], limit: int, threads: int | None, chunk: int = 500) -> dict:
    model, _ = load_checkpoint(ckpt)
    vit, K = model.vit_config, model.vit_config.num_classes
    data = random_subset(
        open_segmentation_dataset("fashion-mnist-scenes", "test", vit.img_size, vit.mean, vit.std, K), limit
    )
    opened = [open_source(s) for s in sources]
    pipes = [open_pipeline(s, threads=threads).__enter__() for s in opened]
    stats = [
        {"confusion": np.zeros((K, K), np.int64), "agree": 0, "pixels": 0, "counts_differ": 0, "s": 0.0}
        for _ in sources
    ]
    threshold = opened[0].threshold
    for images, labels in DataLoader(data, batch_size=chunk):
        x, y = images.numpy(), labels.numpy()
        with torch.no_grad():
            want = model.tokenize(images, threshold).counts.numpy()
        first = None
        for pipe, st in zip(pipes, stats, strict=True):
            start = time.perf_counter()
            out = pipe.run_batched(x, threshold, 32)
            st["s"] += time.perf_counter() - start
            pred = dense.pixel_labels(out.logits, vit.img_size)
            st["confusion"] += confusion_matrix(pred, y, K)
            first = pred if first is None else first
            st["agree"] += int((pred == first).sum())
            st["pixels"] += pred.size
            st["counts_differ"] += int((out.counts != want).sum())
    for pipe in pipes:
        pipe.__exit__(None, None, None)
    rows = {}
    for source, st in zip(sources, stats, strict=True):
        s = segmentation_scores(st["confusion"])
        rows[source] = {
            "miou": s.miou,
            "pixel_accuracy": s.pixel_accuracy,
            "agreement_with_first": st["agree"] / st["pixels"],
            "counts_differ": st["counts_differ"],
            "seconds": st["s"],
        }
    return {"images": len(data), "sources": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--sources", nargs="*", default=[])
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-pytorch", action="store_true", help="only the engines")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    result: dict = {"date": time.strftime("%Y-%m-%d"), "ckpt": args.ckpt}
    if not args.no_pytorch:
        result["pytorch"] = pytorch_settings(args.ckpt, args.limit, "runs/seg-acceptance-eval")
        rows = result["pytorch"]["settings"]
        print(f"PyTorch on {result['pytorch']['images']} test scenes")
        for name, r in rows.items():
            print(
                f"  {name:10s} mIoU {100 * r['miou']:.2f}  pixel acc {100 * r['pixel_accuracy']:.2f}  "
                f"tokens {r['tokens_mean']:.1f}  boundary recall {r.get('boundary_recall', 0):.3f}"
            )
        fine, msvit, rnd = rows["all-fine"], rows["msvit"], rows["random"]
        print(
            f"  MSViT vs all fine: {100 * (msvit['miou'] - fine['miou']):+.2f} mIoU at "
            f"{100 * msvit['tokens_mean'] / fine['tokens_mean']:.1f}% of the tokens; vs random gate: "
            f"{100 * (msvit['miou'] - rnd['miou']):+.2f}"
        )
    if args.sources:
        result["engines"] = engines(args.ckpt, args.sources, args.limit, args.threads)
        print(f"ONNX Runtime engines on {result['engines']['images']} test scenes")
        for name, r in result["engines"]["sources"].items():
            print(
                f"  {name}: mIoU {100 * r['miou']:.2f}  pixel acc {100 * r['pixel_accuracy']:.2f}  agreement with "
                f"the first {100 * r['agreement_with_first']:.2f}%  counts differ from PyTorch's on "
                f"{r['counts_differ']}  ({r['seconds']:.1f} s)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
