"""Hardware markers (tests marked gpu / tensorrt / jetson run where that hardware exists and skip, saying why,
elsewhere, such as the 2-core CPU machines CI runs on) and the tiny model and bundle the export, build and bench
tests share."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from msvit_edge.model.config import ViTConfig

# The tiny MSViT of the export, build and bench tests: 16 regions, 17..65 tokens. Head size 16, since ModelOpt leaves
# a MatMul with a dimension under 16 unquantized.
TINY = ViTConfig(
    img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2, num_heads=2, mean=(0.5,) * 3, std=(0.5,) * 3
)


def _missing() -> dict[str, str | None]:
    import torch

    return {
        "gpu": None if torch.cuda.is_available() else "needs a CUDA GPU (torch.cuda.is_available() is False here)",
        "tensorrt": None if importlib.util.find_spec("tensorrt") else "needs TensorRT (the tensorrt package is absent)",
        "jetson": None
        if Path("/etc/nv_tegra_release").exists() or shutil.which("tegrastats")
        else "needs a Jetson (no /etc/nv_tegra_release, no tegrastats)",
    }


@pytest.fixture(scope="session", autouse=True)
def calibration_cache(tmp_path_factory):
    """The calibration cache of every test in a temporary folder, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MSVIT_EDGE_CACHE", str(tmp_path_factory.mktemp("msvit-edge-cache")))
        yield


def pytest_collection_modifyitems(config, items):
    missing = None
    for item in items:
        for marker in ("tensorrt", "gpu", "jetson"):  # the most specific reason first
            if marker in item.keywords:
                missing = missing or _missing()
                if missing[marker]:
                    item.add_marker(pytest.mark.skip(reason=missing[marker]))


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """A checkpoint of a tiny MSViT and an npz of 400 real Fashion-MNIST test images, RGB at 32 px."""
    import torch

    from msvit_edge.bundle.preprocess import preprocess
    from msvit_edge.data import load_fashion_mnist
    from msvit_edge.model.checkpoint import save_checkpoint
    from msvit_edge.model.config import MSViTConfig
    from msvit_edge.model.msvit import MSViT

    root = tmp_path_factory.mktemp("tiny")
    images, labels = load_fashion_mnist(split="test")
    rgb = np.repeat(images[:400, :, :, None], 3, axis=3)
    np.savez(root / "fmnist.npz", images=rgb, labels=labels[:400])
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(TINY))
    x = torch.nn.functional.interpolate(torch.from_numpy(preprocess(rgb, TINY.mean, TINY.std)), size=32)
    _centre_gate(model, x)
    _train_backbone(model, x, torch.from_numpy(labels[:400].astype(np.int64)))
    save_checkpoint(model, root / "tiny.safetensors")
    return root


def _centre_gate(model, x) -> None:
    """Centre the untrained gate on these images so that its decisions vary, cutting halfway between two DISTINCT
    logits: no region may sit on the threshold, where the last bits of ORT vs PyTorch would decide (black background
    regions all share one logit)."""
    import torch

    with torch.no_grad():
        logits = model.gate(x)
        distinct = torch.unique(logits)
        k = int(torch.searchsorted(distinct, logits.quantile(0.6)))
        model.gate.mlp[-1].bias -= (distinct[k - 1] + distinct[k]) / 2


def _train_backbone(model, x, y, epochs: int = 12, batch: int = 100) -> None:
    """A few all-fine epochs on the images (labels, or a segmenter's label maps): an untrained head gives near-equal
    logits, whose top-1 any rounding flips, so INT8/FP16 agreement with PyTorch would measure nothing. The gate stays
    as centred."""
    import torch

    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.startswith("gate.")], lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: a second thread costs more in sync than it computes
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(batch):
            loss = torch.nn.functional.cross_entropy(model.encode(model.embed(x[i])), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    model.eval()


@pytest.fixture(scope="session")
def bundle(workdir):
    """The tiny model exported with 3 buckets, planned on 300 images, with 48 validation images."""
    from msvit_edge.export import ExportConfig, export

    cfg = ExportConfig(
        out=str(workdir / "bundle"),
        ckpt=str(workdir / "tiny.safetensors"),
        buckets=3,
        calib=str(workdir / "fmnist.npz"),
        calib_images=300,
        val_images=48,
    )
    return export(cfg)


@pytest.fixture(scope="session")
def copy_bundle(tmp_path_factory):
    """Makes a copy of a bundle, for tests that write into theirs (engines, precision graphs)."""
    from msvit_edge.bundle import Bundle

    def copy(bundle):
        folder = tmp_path_factory.mktemp("copy") / "bundle"
        shutil.copytree(bundle.path, folder)
        return Bundle(folder)

    return copy


@pytest.fixture(scope="session")
def count_macs():
    """``count_macs(model, fn, *args)``: MACs of the matrix products and convolutions ``fn(*args)`` runs, counted by
    PyTorch's FLOP counter, to hold ``msvit_edge.model.flops``'s formulas to. The counter does not see fused attention
    kernels, so ``model``'s attention runs unfused while counting (the same arithmetic, see ``vit.Attention``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from msvit_edge.model.vit import Attention

    def count(model, fn, *args) -> float:
        fused = {m: m.fused for m in model.modules() if isinstance(m, Attention)}
        try:
            for m in fused:
                m.fused = False
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                fn(*args)
        finally:
            for m, was in fused.items():
                m.fused = was
        return counter.get_total_flops() / 2  # the counter's FLOPs are 2 per multiply-accumulate

    return count


SEG_TINY = ViTConfig(
    img_size=32, patch_size=4, num_classes=11, embed_dim=32, depth=2, num_heads=2, mean=(0.5,) * 3, std=(0.5,) * 3
)  # the scenes' 11 classes (background + 10 items) on an 8x8 fine grid, 16 regions


@pytest.fixture(scope="session")
def seg_workdir(tmp_path_factory) -> Path:
    """A checkpoint of a tiny MSViT segmenter trained briefly (all fine) on 300 real Fashion-MNIST scenes at 32 px,
    its untrained gate centred so that its decisions vary."""
    import torch

    from msvit_edge.data import FashionMNISTSceneMasks, SceneConfig
    from msvit_edge.model.checkpoint import save_checkpoint
    from msvit_edge.model.config import SEGMENTATION, MSViTConfig
    from msvit_edge.model.factory import create_model

    root = tmp_path_factory.mktemp("seg-tiny")
    scenes = FashionMNISTSceneMasks.from_split("train", config=SceneConfig(canvas=32))
    x, y = (torch.stack(t) for t in zip(*(scenes[i] for i in range(300)), strict=True))
    torch.manual_seed(0)
    model = create_model(MSViTConfig(SEG_TINY, task=SEGMENTATION))
    _centre_gate(model, x)
    _train_backbone(model, x, y, epochs=8, batch=50)  # separates the items from the background
    save_checkpoint(model, root / "seg.safetensors")
    return root


@pytest.fixture(scope="session")
def seg_bundle(seg_workdir):
    """The tiny segmenter exported on the scenes with 3 buckets, planned on 200 images, with 24 validation images."""
    from msvit_edge.export import ExportConfig, export

    cfg = ExportConfig(
        out=str(seg_workdir / "bundle"),
        ckpt=str(seg_workdir / "seg.safetensors"),
        buckets=3,
        calib_images=200,
        val_images=24,
    )
    return export(cfg)
