"""bench with PyTorch sources (``torch:BUNDLE``, ``torch-cudagraphs:BUNDLE``) on the tiny bundle, on the CPU: the eager
source is measured for real against its own plain ViT; the CUDA-graph source fails alone, saying why."""

from __future__ import annotations

import json

import numpy as np
import pytest

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.measure.bench import BenchConfig, bench

QUICK = {"warmup": 0.0, "iters": 3, "batch": (1, 4)}


@pytest.fixture(scope="module")
def report(bundle, workdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-torch") / "report"
    sources = (f"torch:{bundle.path}", f"torch-cudagraphs:{bundle.path}")
    cfg = BenchConfig(sources=sources, device="cpu", ckpt=str(workdir / "tiny.safetensors"), out=str(out), **QUICK)
    with pytest.raises(MsvitEdgeError, match=r"torch-cudagraphs:.* failed"):  # one source failed: the run exits 1
        bench(cfg)
    return json.loads((out / "report.json").read_text())["engines"]


def test_the_eager_torch_source_passes_against_its_own_reference(report, bundle):
    eager = report[0]
    assert eager["row"]["status"] == "passed" and eager["row"]["backend"] == "torch"
    assert eager["row"]["precision"] == "fp32"
    acc = eager["accuracy"]
    assert acc["agreement"] == 1.0 and acc["counts_agreement"] == 1.0 and acc["logits"]["max_abs"] <= 1e-4
    assert acc["n"] == len(bundle.reference().labels)


def test_the_eager_torch_source_is_timed_against_the_plain_vit(report):
    for lat in report[0]["latency"].values():
        assert lat["iters"] == 3 and lat["vit"]["iters"] == 3
        assert lat["speedup"] == pytest.approx(lat["vit"]["p50_ms"] / lat["p50_ms"])
        assert lat["efficiency"] == pytest.approx(lat["speedup"] / lat["ideal_speedup"])
    assert all(point["vit_ms"] is not None for point in report[0]["curve"])


def test_the_size_of_a_torch_source_is_its_parameters(report, bundle, workdir):
    from msvit_edge.engines.pytorch import bundle_model

    model = bundle_model(bundle, workdir / "tiny.safetensors")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert report[0]["row"]["size_mb"] == pytest.approx(params / 1e6)


def test_cuda_graphs_fail_alone_on_the_cpu_and_say_why(report):
    graphs = report[1]
    assert graphs["row"]["status"] == "failed" and graphs["info"]["backend"] == "torch-cudagraphs"
    assert "CUDA graphs need a CUDA GPU" in graphs["error"] and "torch:BUNDLE" in graphs["error"]
    assert graphs["latency"] == {}


def test_the_torch_plain_vit_is_the_bundles_vit_graph(bundle, workdir):
    """The baseline PyTorch times is the graph ONNX Runtime times: images -> logits, every token fine."""
    from msvit_edge.engines import open_pipeline

    images = bundle.preprocess(bundle.reference().images[:8])
    ckpt = str(workdir / "tiny.safetensors")
    with open_pipeline(bundle, "torch", ckpt=ckpt) as torch_pipe, open_pipeline(bundle) as ort_pipe:
        got, want = torch_pipe.plain_vit()(images), ort_pipe.plain_vit()(images)
    assert got.shape == (8, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_cuda_graphs_are_refused_before_the_model_is_looked_for(bundle):
    from msvit_edge.engines import open_pipeline

    with pytest.raises(MsvitEdgeError, match=r"CUDA graphs need a CUDA GPU \(device 'cpu'"):
        open_pipeline(bundle, "torch-cudagraphs", model=None, device="cpu")


def test_a_torch_source_must_be_a_bundle(bundle, tmp_path):
    from msvit_edge.build import BuildConfig, build

    engine = build(BuildConfig(str(bundle.path), "fp32", "onnxruntime", out=str(tmp_path / "ort")))
    cfg = BenchConfig(sources=(f"torch:{engine.path}",), out=str(tmp_path / "r"), **QUICK)
    with pytest.raises(MsvitEdgeError, match="runs a bundle's PyTorch model, not an engine directory"):
        bench(cfg)  # an input: refused before anything is measured or written
    assert not (tmp_path / "r").exists()
