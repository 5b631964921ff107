"""The MAC model against the paper's published numbers and against the real modules, counted by PyTorch."""

from __future__ import annotations

import pytest
import torch

from msvit_edge.model.config import GateConfig, MSViTConfig, ViTConfig, preset
from msvit_edge.model.flops import coarse_pool_macs, encoder_macs, gate_macs, msvit_macs, patch_embed_macs, vit_macs
from msvit_edge.model.msvit import MSViT, pack
from msvit_edge.model.vit import VisionTransformer

# Nothing at its default, so that a formula that ignores a field (MLP ratio, classes, depth, gate width) shows.
ODD = ViTConfig(img_size=48, patch_size=4, num_classes=7, embed_dim=24, depth=3, num_heads=2, mlp_ratio=2.5)
GATE = GateConfig(hidden=20, layers=3)


@pytest.fixture(scope="module")
def model() -> MSViT:
    torch.manual_seed(0)
    return MSViT(MSViTConfig(ODD, GATE)).eval()


def image() -> torch.Tensor:
    return torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "name, gmacs_fine, gmacs_half, gmacs_coarse, tokenizer_share",
    [("vit_small_patch16_224", 4.60, 2.80, 1.10, 0.01), ("vit_tiny_patch16_224", 1.25, 0.74, 0.28, 0.02)],
)
def test_reproduces_published_deit_gmacs(name, gmacs_fine, gmacs_half, gmacs_coarse, tokenizer_share):
    cfg = preset(name)
    assert round(vit_macs(cfg) / 1e9, 2) == gmacs_fine  # 197 tokens
    # msvit-method.md's half-fine and all-coarse figures count the encoder (+ one embedding pass) at 123 / 50 tokens
    assert encoder_macs(cfg, 49 + 3 * 24.5 + 1) / 1e9 == pytest.approx(gmacs_half, abs=0.06)
    assert encoder_macs(cfg, 50) / 1e9 == pytest.approx(gmacs_coarse, abs=0.06)
    assert (msvit_macs(cfg, GateConfig(), 197) - vit_macs(cfg)) / vit_macs(cfg) < tokenizer_share  # gate, coarse


@pytest.mark.parametrize("tokens", [ODD.token_range.min, 50, ODD.token_range.max])
def test_encoder_macs_are_what_the_encoder_computes(model, count_macs, tokens):
    x = torch.randn(1, tokens, ODD.embed_dim)
    assert encoder_macs(ODD, tokens) == count_macs(model, model.encode, x)


def test_plain_vit_macs_are_what_the_plain_vit_computes(count_macs):
    vit = VisionTransformer(ODD).eval()
    assert vit_macs(ODD) == count_macs(vit, vit, image())


def test_tokenizer_parts_are_what_the_modules_compute(model, count_macs):
    x = image()
    assert gate_macs(ODD, GATE) == count_macs(model, model.gate, x)
    assert patch_embed_macs(ODD, ODD.num_patches) == count_macs(model, model.patch_embed, x)
    assert patch_embed_macs(ODD, ODD.num_regions) + coarse_pool_macs(ODD) == count_macs(model, model.coarse_embed, x)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_msvit_macs_are_what_one_image_costs_apart_from_the_selection_bookkeeping(model, count_macs, threshold):
    x = image()
    count = int(model.tokenize(x, threshold=threshold).counts[0])
    measured = count_macs(model, lambda: model.encode(*pack(*model.tokenize(x, threshold=threshold)[:2])))
    keep_map = ODD.num_regions * ODD.num_candidates  # decisions [1, R] @ keep_map [R, M]
    assert msvit_macs(ODD, GATE, count) == measured - keep_map
