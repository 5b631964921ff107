"""The torch backend's per-bucket CUDA graphs: refused without CUDA here; on a GPU, equal to eager (the MSViT and its
plain ViT), and timed by ``benchmarks/cuda_graphs.py``, which prints the table ``docs/tensorrt.md`` keeps (a
DeiT-S-sized MSViT at batch 1 and 32, eager against CUDA graphs): ``python benchmarks/cuda_graphs.py`` on a GPU.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from msvit_edge.bundle.buckets import plan_buckets
from msvit_edge.engines.pytorch import CudaGraphTorchPipeline, TorchPipeline
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.model.config import MSViTConfig, ViTConfig
from msvit_edge.model.flops import encoder_macs
from msvit_edge.model.msvit import MSViT

TINY = ViTConfig(img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2, num_heads=4)  # 17..65 tokens


def model_and_plan(vit: ViTConfig, images: np.ndarray, threshold: float, buckets: int, seed: int = 0):
    """A random-weights MSViT and the bucket plan of its token counts on ``images``."""
    torch.manual_seed(seed)
    model = MSViT(MSViTConfig(vit)).eval()
    with torch.no_grad():
        counts = model.tokenize(torch.from_numpy(images), threshold=threshold).counts.numpy()
    plan = plan_buckets(counts, buckets, lambda n: encoder_macs(vit, n), *vit.token_range)
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


@pytest.mark.gpu
@pytest.mark.parametrize("batching", ["pad", "split"])
def test_cuda_graphs_replay_a_segmenters_cell_index_as_eager_runs_it(seg_bundle, seg_workdir, batching):
    """The cell index is the graphs' third static input: each replay must read the new images' rows."""
    from msvit_edge.engines import open_pipeline

    torch.backends.cuda.matmul.allow_tf32 = False
    ref = seg_bundle.reference()
    images, ckpt = seg_bundle.preprocess(ref.images), str(seg_workdir / "seg.safetensors")
    eager = open_pipeline(seg_bundle, "torch", device="cuda", batching=batching, ckpt=ckpt)
    with eager, open_pipeline(seg_bundle, "torch-cudagraphs", model=eager.model, batching=batching) as graphs:
        for size in (1, 8):
            got = graphs.run_batched(images, seg_bundle.threshold, size)
            np.testing.assert_array_equal(got.counts, ref.counts)
            np.testing.assert_allclose(
                got.logits, eager.run_batched(images, seg_bundle.threshold, size).logits, atol=1e-4, rtol=1e-4
            )
            np.testing.assert_allclose(got.logits, ref.logits, atol=1e-4, rtol=1e-4)  # the bundle's cell logits
        assert len(graphs.graphs) > 1  # one graph per (bucket, batch size), each replayed with new cells


SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_graphs.py"


def benchmark_script():
    spec = importlib.util.spec_from_file_location("cuda_graphs_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.gpu
@pytest.mark.parametrize("batching", ["pad", "split"])
def test_cuda_graphs_equal_eager_on_the_tiny_bundle_for_msvit_and_its_plain_vit(bundle, workdir, batching):
    from msvit_edge.engines import open_pipeline

    torch.backends.cuda.matmul.allow_tf32 = False
    images = bundle.preprocess(bundle.reference().images)
    ckpt = str(workdir / "tiny.safetensors")
    eager = open_pipeline(bundle, "torch", device="cuda", batching=batching, ckpt=ckpt)
    with eager, open_pipeline(bundle, "torch-cudagraphs", model=eager.model, batching=batching) as graphs:
        for size in (1, 16):
            for start in range(0, len(images), size):
                x = images[start : start + size]
                got, want = graphs(x, bundle.threshold), eager(x, bundle.threshold)
                np.testing.assert_array_equal(got.counts, want.counts)
                np.testing.assert_allclose(got.logits, want.logits, atol=1e-4, rtol=1e-4)
                np.testing.assert_allclose(graphs.plain_vit()(x), eager.plain_vit()(x), atol=1e-4, rtol=1e-4)
        assert sorted(graphs.vit_graphs) == [1, 16]  # one plain-ViT graph per batch size, replayed after
        assert not np.allclose(graphs.plain_vit()(images[:1]), graphs.plain_vit()(images[1:2]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_benchmark_script_refuses_without_cuda_in_one_line_before_exporting():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0  # no export log: refused first
    assert result.stderr.startswith("error: this benchmark needs a CUDA GPU")


def test_the_benchmark_table_has_a_row_per_batch_size_with_its_ratios(bundle, workdir):
    """The script's timing and table on two eager CPU pipelines (the GPU run swaps in CUDA graphs)."""
    from msvit_edge.engines import open_pipeline

    script = benchmark_script()
    x = bundle.preprocess(bundle.reference().images)
    with (
        open_pipeline(bundle, "torch", ckpt=str(workdir / "tiny.safetensors")) as a,
        open_pipeline(bundle, "torch", model=a.model) as b,
    ):
        rows = [script.measure(a, b, x, n, bundle.threshold, 2, lambda: None) for n in (1, 4)]
    assert [r["batch"] for r in rows] == [1, 4] and all(r[c] > 0 for r in rows for c in script.CANDIDATES)
    lines = script.table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| batch | MSViT eager ms |") and lines[2].startswith("| 1 |")
    for line in lines[2:]:
        assert_ratios_match_times(line)
    assert script.header().count(",") >= 4 and "torch " in script.header()


def assert_ratios_match_times(line: str) -> None:
    """Each ratio cell of a table row equals the ratio of the row's printed times, to the printed precision."""
    cells = [c.strip() for c in line.strip("|").split("|")]
    msvit_eager, msvit_graphs, vit_eager, vit_graphs = (float(cells[i]) for i in (1, 2, 4, 5))
    ratios = {3: (msvit_eager, msvit_graphs), 6: (vit_eager, msvit_eager), 7: (vit_graphs, msvit_graphs)}
    for i, (num, den) in ratios.items():
        rounding = 0.005 + num / den * (0.0005 / num + 0.0005 / den)  # ratios to 2 places of times to 3
        assert cells[i].endswith("x") and float(cells[i][:-1]) == pytest.approx(num / den, abs=rounding), line


def test_the_benchmark_table_ratios_on_known_times():
    row = {"batch": 32, "msvit eager": 2.0, "msvit graphs": 0.5, "vit eager": 3.0, "vit graphs": 1.5}
    line = benchmark_script().table([row]).splitlines()[2]
    assert line == "| 32 | 2.000 | 0.500 | 4.00x | 3.000 | 1.500 | 1.50x | 3.00x |"
    assert_ratios_match_times(line)


@pytest.mark.gpu
def test_the_benchmark_script_prints_the_table_on_a_gpu(bundle, workdir):
    args = [
        "--bundle",
        str(bundle.path),
        "--ckpt",
        str(workdir / "tiny.safetensors"),
        "--batch",
        "1,4",
        "--repeats",
        "3",
    ]
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert torch.cuda.get_device_name() in lines[0] and lines[1].startswith("| batch |")
    assert [line.split("|")[1].strip() for line in lines[3:]] == ["1", "4"]
