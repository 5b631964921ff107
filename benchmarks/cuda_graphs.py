"""Eager PyTorch against per-bucket CUDA graphs on a DeiT-S-sized MSViT at batch 1 and 32 (a GPU is required).

    python benchmarks/cuda_graphs.py [--bundle DIR] [--batch 1,32] [--repeats 200] [--calib DATA]

Without --bundle it first exports a latency-only bundle into a temporary folder, as
``msvit-edge export --preset vit_small_patch16_224 --random-weights --fine-fraction 0.5`` does (random weights: the
latency is real, the accuracy meaningless), planning buckets on --calib (default: the demo's Fashion-MNIST scenes,
or the sample shipped in the package). Per batch size, four candidates run interleaved (A B C D A B C D ...,
``msvit_edge.measure.timing.interleaved``, each call closed by ``torch.cuda.synchronize``) on the bundle's validation
images: MSViT end to end eager and with CUDA graphs (``torch`` and ``torch-cudagraphs`` backends), and the plain ViT
of the same weights eager and as one CUDA graph. It prints the device, date and versions, then a Markdown table of
medians for ``docs/tensorrt.md``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from msvit_edge import MsvitEdgeError, __version__
from msvit_edge.bundle import Bundle
from msvit_edge.measure.timing import interleaved

PRESET = "vit_small_patch16_224"  # DeiT-S: 224 px, patch 16, D 384, depth 12
CANDIDATES = ("msvit eager", "msvit graphs", "vit eager", "vit graphs")


def main() -> None:
    args = parse_args()
    package = logging.getLogger("msvit_edge")  # export's lines, on stderr: stdout is the table
    package.addHandler(logging.StreamHandler(sys.stderr))
    package.setLevel(logging.INFO)
    try:
        require_cuda()
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Bundle(args.bundle) if args.bundle else latency_bundle(Path(tmp) / "bundle", args.calib)
            rows = run(bundle, args.batch, args.repeats, args.batching, args.ckpt)
    except MsvitEdgeError as e:
        sys.exit(f"error: {e}")
    print(header())
    print(table(rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help=f"export bundle (default: export a latency-only {PRESET} first)")
    p.add_argument("--batch", type=lambda s: [int(b) for b in s.split(",")], default=[1, 32], help="e.g. 1,32")
    p.add_argument("--repeats", type=int, default=200, help="timed interleaved rounds per batch size")
    p.add_argument("--batching", default="split", help="split or pad (as bench --batching)")
    p.add_argument("--calib", help="images that plan the buckets (default: the demo's)")
    p.add_argument("--ckpt", help="the --bundle's checkpoint (a bundle records its sha256, not its path)")
    return p.parse_args(argv)


def require_cuda() -> None:
    """Refuse at once, before any export, where PyTorch sees no CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        raise MsvitEdgeError(f"this benchmark needs a CUDA GPU (torch {torch.__version__} sees none)")


def latency_bundle(out: Path, calib: str | None) -> Bundle:
    """A random-weights DeiT-S-sized bundle with half of the regions fine (the CLI's latency-only export)."""
    from msvit_edge.demo import demo_data
    from msvit_edge.export import ExportConfig, export

    data = calib or demo_data()[0]
    cfg = ExportConfig(out=str(out), preset=PRESET, random_weights=True, fine_fraction=0.5, calib=data)
    return export(cfg)


def run(bundle: Bundle, batches: list[int], repeats: int, batching: str, ckpt: str | None = None) -> list[dict]:
    """One row per batch size: the four candidates' median milliseconds, on the bundle's validation images."""
    import torch

    from msvit_edge.engines import open_pipeline

    x = bundle.preprocess(bundle.reference().images)
    eager = open_pipeline(bundle, "torch", device="cuda", batching=batching, ckpt=ckpt)
    with eager, open_pipeline(bundle, "torch-cudagraphs", model=eager.model, batching=batching) as graphs:
        return [measure(eager, graphs, x, b, bundle.threshold, repeats, torch.cuda.synchronize) for b in batches]


def measure(eager, graphs, x: np.ndarray, batch: int, threshold: float, repeats: int, sync: Callable) -> dict:
    """Median ms of each candidate at ``batch``, timed interleaved after 10 untimed rounds (graph captures)."""
    n = max(1, len(x) // batch)
    index = np.arange(n * batch) % len(x)  # real images, cycled: counts vary from call to call as in use
    data = [np.ascontiguousarray(x[index[i * batch : (i + 1) * batch]]) for i in range(n)]
    plain_eager, plain_graphs = eager.plain_vit(), graphs.plain_vit()
    calls = {
        "msvit eager": lambda i: eager(data[i % n], threshold),
        "msvit graphs": lambda i: graphs(data[i % n], threshold),
        "vit eager": lambda i: plain_eager(data[i % n]),
        "vit graphs": lambda i: plain_graphs(data[i % n]),
    }
    times = interleaved(calls, repeats, warmup=10, sync=sync)
    return {"batch": batch} | {name: 1e3 * statistics.median(times[name]) for name in CANDIDATES}


def header() -> str:
    """Device, date and versions: a table row means nothing without them."""
    import torch

    cuda = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    matmul = f"float32 matmul precision {torch.get_float32_matmul_precision()}"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    versions = f"msvit-edge {__version__}, torch {torch.__version__}, {cuda}, Python {platform.python_version()}"
    return f"{device}, {datetime.date.today()}, {versions}, {matmul}"


def table(rows: list[dict]) -> str:
    """The Markdown table docs/tensorrt.md keeps: medians in ms and the ratios that matter."""
    head = (
        "| batch | MSViT eager ms | MSViT CUDA graphs ms | graphs speed-up | plain ViT eager ms | "
        "plain ViT CUDA graph ms | MSViT over ViT, eager | MSViT over ViT, graphs |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['batch']} | {r['msvit eager']:.3f} | {r['msvit graphs']:.3f} | "
        f"{r['msvit eager'] / r['msvit graphs']:.2f}x | {r['vit eager']:.3f} | {r['vit graphs']:.3f} | "
        f"{r['vit eager'] / r['msvit eager']:.2f}x | {r['vit graphs'] / r['msvit graphs']:.2f}x |"
        for r in rows
    ]
    return "\n".join([head, *lines])


if __name__ == "__main__":
    main()
