"""The CUDA path of the PyTorch model and training: runs where a GPU exists, skips elsewhere."""

from __future__ import annotations

import pytest
import torch

from msvit_edge.model.config import GateTraining, MSViTConfig, preset
from msvit_edge.model.msvit import MSViT, pack
from msvit_edge.training.train import TrainConfig, TrainStep

pytestmark = pytest.mark.gpu


def test_cuda_forward_matches_cpu():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(preset("vit_demo_patch8_80"))).eval()
    x = torch.randn(16, 3, 80, 80)
    with torch.no_grad():
        cpu = model.tokenize(x, threshold=0.5)
        cpu_logits = model.encode(*pack(cpu.tokens, cpu.counts))
        model.cuda()
        gpu = model.tokenize(x.cuda(), threshold=0.5)
        gpu_logits = model.encode(*pack(gpu.tokens, gpu.counts))
    assert torch.equal(gpu.counts.cpu(), cpu.counts)
    torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("gradient", ["flip", "straight-through"])
def test_cuda_training_step_reaches_the_gate(gradient, device="cuda"):
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(preset("vit_demo_patch8_80")))
    step = TrainStep(model, TrainConfig(gate_training=GateTraining(noise=True, gradient=gradient))).to(device).train()
    images, labels = torch.randn(32, 3, 80, 80, device=device), torch.arange(32, device=device) % 10
    logits, _, _, surrogate = step(images, labels)
    (torch.nn.functional.cross_entropy(logits, labels) + surrogate).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.gate.parameters())
