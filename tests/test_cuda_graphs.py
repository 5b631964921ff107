"""The torch backend's per-bucket CUDA graphs: refused without CUDA here; on a GPU, equal to eager and timed.

``test_latency_table`` prints the table that ``docs/tensorrt.md`` keeps (a DeiT-S-sized MSViT at batch 1 and 32,
eager against CUDA graphs): ``pytest tests/test_cuda_graphs.py -k latency -s`` on a GPU machine.
"""

from __future__ import annotations

import datetime
import platform

import numpy as np
import pytest
import torch

from msvit_edge.buckets import plan_buckets
from msvit_edge.config import MSViTConfig, ViTConfig, preset
from msvit_edge.engines.pytorch import CudaGraphTorchPipeline, TorchPipeline
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.flops import encoder_macs
from msvit_edge.msvit import MSViT

TINY = ViTConfig(img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2, num_heads=4)  # 17..65 tokens


def model_and_plan(vit: ViTConfig, images: np.ndarray, threshold: float, buckets: int, seed: int = 0):
    """A random-weights MSViT and the bucket plan of its token counts on ``images``."""
    torch.manual_seed(seed)
    model = MSViT(MSViTConfig(vit)).eval()
    with torch.no_grad():
        counts = model.tokenize(torch.from_numpy(images), threshold=threshold).counts.numpy()
    regions = (vit.grid // 2) ** 2
    plan = plan_buckets(counts, buckets, lambda n: encoder_macs(vit, n), regions + 1, 4 * regions + 1)
    return model, plan


def test_cuda_graphs_are_refused_without_cuda_and_say_what_to_use():
    model, plan = model_and_plan(TINY, np.random.default_rng(0).standard_normal((8, 3, 32, 32), np.float32), 0.5, 1)
    with pytest.raises(
        MsvitEdgeError, match=r"CUDA graphs need a CUDA GPU .*use the torch backend without CUDA graphs"
    ):
        CudaGraphTorchPipeline(model, plan, device="cpu")


@pytest.mark.gpu
def test_cuda_graphs_need_the_bucket_plan():
    model, _ = model_and_plan(TINY, np.zeros((2, 3, 32, 32), np.float32), 0.5, 1)
    with pytest.raises(MsvitEdgeError, match="need the bucket plan"):
        CudaGraphTorchPipeline(model, None)


@pytest.mark.gpu
@pytest.mark.parametrize("batching", ["pad", "split"])
def test_cuda_graphs_equal_eager_at_batch_1_and_batched(batching):
    torch.backends.cuda.matmul.allow_tf32 = False
    images = np.random.default_rng(0).standard_normal((48, 3, 32, 32)).astype(np.float32)
    model, plan = model_and_plan(TINY, images, 0.5, 3)
    eager = TorchPipeline(model, plan, pad_to_bucket=False, device="cuda", batching=batching)
    with CudaGraphTorchPipeline(model, plan, batching=batching) as graphs:
        for size in (1, 16):
            for start in range(0, len(images), size):
                got, want = graphs(images[start : start + size], 0.5), eager(images[start : start + size], 0.5)
                np.testing.assert_array_equal(got.counts, want.counts)
                np.testing.assert_allclose(got.logits, want.logits, atol=1e-4, rtol=1e-4)
                assert all(c.rows == plan.buckets[c.bucket].max for c in got.calls)  # every call at its bucket max
        assert len({n for _, n in graphs.graphs}) > 1  # one graph per (bucket, batch size), reused across calls


@pytest.mark.gpu
def test_a_replayed_graph_reads_new_tokens_each_call():
    images = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    model, plan = model_and_plan(TINY, images, 0.5, 1)  # one bucket: every image replays the same graph
    eager = TorchPipeline(model, plan, device="cuda")
    with CudaGraphTorchPipeline(model, plan) as graphs:
        outs = [graphs(images[i : i + 1], 0.5).logits for i in range(4)]
    assert len(graphs.graphs) == 0  # released on exit
    for i, logits in enumerate(outs):
        np.testing.assert_allclose(logits, eager(images[i : i + 1], 0.5).logits, atol=1e-4, rtol=1e-4)
    assert not np.allclose(outs[0], outs[1])


def _encoder_ms(pipe, images: np.ndarray, threshold: float, repeats: int) -> float:
    """Median encoder milliseconds per call over ``repeats`` calls, after warm-up (captures included)."""
    from msvit_edge.engines.pipeline import StageTimes

    for _ in range(3):
        pipe(images, threshold)
    pipe.timer = StageTimes()
    for _ in range(repeats):
        pipe(images, threshold)
    return 1000 * float(np.median(pipe.timer.seconds["encoder"]))


@pytest.mark.gpu
@pytest.mark.slow
def test_latency_table():
    """DeiT-S-sized MSViT (224 px, patch 16, D 384, depth 12), random weights, 4 buckets: eager vs CUDA graphs."""
    vit = preset("vit_small_patch16_224")
    images = np.random.default_rng(0).standard_normal((64, 3, 224, 224)).astype(np.float32)
    model, plan = model_and_plan(vit, images, 0.5, 4)
    rows = []
    for batch in (1, 32):
        x = images[:batch]
        eager = TorchPipeline(model, plan, device="cuda")
        with CudaGraphTorchPipeline(model, plan) as graphs:
            e, g = _encoder_ms(eager, x, 0.5, 50), _encoder_ms(graphs, x, 0.5, 50)
        rows.append(f"| {batch} | {e:.3f} | {g:.3f} | {e / g:.2f}x |")
    device = torch.cuda.get_device_name()
    versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {platform.python_version()}"
    print(f"\n{device}, {datetime.date.today()}, {versions}")
    print("| batch | eager encoder ms | CUDA graphs encoder ms | speed-up |\n|---|---|---|---|\n" + "\n".join(rows))
