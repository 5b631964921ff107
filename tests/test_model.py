"""MSViT against the plain ViT, token bookkeeping, padding, straight-through gradients, the gate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.model.config import GateConfig, GateTraining, MSViTConfig, ViTConfig
from msvit_edge.model.msvit import MSViT, pack
from msvit_edge.model.vit import VisionTransformer

TINY = ViTConfig(
    img_size=32, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=4, mean=(0.5,) * 3, std=(0.5,) * 3
)  # 8x8 fine grid, 4x4 = 16 regions, 1 + 64 + 16 = 81 candidates


@pytest.fixture
def model() -> MSViT:
    torch.manual_seed(0)
    return MSViT(MSViTConfig(TINY)).eval()


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def random_decisions(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 16, generator=torch.Generator().manual_seed(seed)) < 0.4


def test_all_fine_msvit_equals_plain_vit(model):
    vit = VisionTransformer(TINY).eval()
    vit.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("gate.")})
    x = images()
    with torch.no_grad():
        expected = vit(x)
        torch.testing.assert_close(model(x, threshold=0.0), expected, rtol=0, atol=1e-5)
        forced = model.tokenize(x, decisions=torch.ones(4, 16, dtype=torch.bool))
        torch.testing.assert_close(model.encode(*pack(forced.tokens, forced.counts)), expected, rtol=0, atol=1e-5)


def test_token_counts_follow_decisions(model):
    x, d = images(), random_decisions(4)
    out = model.tokenize(x, decisions=d)
    assert out.counts.tolist() == [16 + 3 * k + 1 for k in d.sum(1).tolist()]
    assert torch.equal(model.fine_regions(out), d)
    assert model.vit_config.token_range == (17, 65)
    assert model.tokenize(x, threshold=1.0).counts.tolist() == [17] * 4  # all coarse
    assert model.tokenize(x, threshold=0.0).counts.tolist() == [65] * 4  # all fine


def test_selected_tokens_are_the_right_candidates_in_stable_order(model):
    x, d = images(2), random_decisions(2)
    out = model.tokenize(x, decisions=d)
    for b in range(2):
        n = int(out.counts[b])
        selected = out.order[b, :n].tolist()
        assert selected == sorted(selected) and selected[0] == 0  # CLS first, candidate order kept
        fine = {c - 1 for c in selected if 1 <= c <= 64}
        coarse = {c - 65 for c in selected if c > 64}
        regions_fine = {int(model.patch_region[p]) for p in fine}
        assert regions_fine == set(torch.nonzero(d[b]).flatten().tolist())
        assert coarse == set(range(16)) - regions_fine and len(fine) == 4 * len(regions_fine)


def test_coarse_position_embeddings_are_2x2_means(model):
    fine = model.pos_embed[0, 1:].detach().reshape(8, 8, -1)
    coarse = model.coarse_pos_embed()[0].detach().reshape(4, 4, -1)
    for i, j in [(0, 0), (1, 3), (3, 2)]:
        torch.testing.assert_close(coarse[i, j], fine[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean((0, 1)))


@pytest.mark.parametrize("export", [False, True])
def test_coarse_token_embeds_the_region_resized_to_the_patch(model, export):
    x = images(1)
    model.set_export(export)
    try:
        out = model.tokenize(x, threshold=1.0)  # all coarse: rows 1..16 are regions 0..15
    finally:
        model.set_export(False)
    region = x[:, :, 8:16, 8:16]  # region 5 = (row 1, col 1), 8x8 px
    patch = F.interpolate(region, size=(4, 4), mode="area")
    expected = model.patch_embed(patch)[0, 0] + model.coarse_pos_embed()[0, 5]
    torch.testing.assert_close(out.tokens[0, 1 + 5], expected.detach(), rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_real_outputs(model):
    x, d = images(6), random_decisions(6)
    with torch.no_grad():
        out = model.tokenize(x, decisions=d)
        tokens, mask = pack(out.tokens, out.counts)
        assert mask is not None and len(set(out.counts.tolist())) > 1
        batched = model.encode(tokens, mask)
        alone = torch.cat([model.encode(out.tokens[i : i + 1, : out.counts[i]]) for i in range(6)])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


def test_unfused_attention_matches_fused(model):
    x, d = images(3), random_decisions(3)
    with torch.no_grad():
        out = model.tokenize(x, decisions=d)
        fused = model.encode(*pack(out.tokens, out.counts))
        unfused = model.set_export(True).encode(*pack(out.tokens, out.counts))
    torch.testing.assert_close(fused, unfused, rtol=0, atol=1e-5)


def test_gate_gets_gradient_from_task_loss_through_straight_through():
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(TINY), GateTraining(noise=False, gradient="straight-through")).train()
    out = model.tokenize(images(8))
    logits = model.encode(*pack(out.tokens, out.counts))
    F.cross_entropy(logits, torch.arange(8) % 5).backward()  # task loss only: no gBaS
    grads = [p.grad for p in model.gate.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_training_forward_keeps_selected_tokens_exactly():
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(TINY)).train()
    x = images(2)
    out = model.tokenize(x)
    d = model.fine_regions(out)
    replay = model.eval().tokenize(x, decisions=d)
    assert torch.equal(replay.counts, out.counts)
    for i, n in enumerate(out.counts):
        torch.testing.assert_close(out.tokens[i, :n].detach(), replay.tokens[i, :n], rtol=0, atol=0)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 1, 32, 32), r"\[B, 3, 32, 32\]"),
        ((2, 3, 48, 48), r"\[B, 3, 32, 32\]"),
        ((3, 32, 32), "got \\[3, 32, 32\\]"),
    ],
)
def test_wrong_image_shapes_are_clear_errors(model, shape, message):
    with pytest.raises(MsvitEdgeError, match=message):
        model(torch.zeros(shape))


def test_non_divisible_sizes_are_clear_errors():
    with pytest.raises(MsvitEdgeError, match="not divisible by the coarse region size 32"):
        ViTConfig(img_size=240, patch_size=16)
    with pytest.raises(MsvitEdgeError, match="embed_dim 100 is not divisible by num_heads 3"):
        ViTConfig(embed_dim=100, num_heads=3)


def reference_gate(model: MSViT, images: torch.Tensor) -> torch.Tensor:
    """The gate by its definition: the MLP on each flattened region, detail-transformed when configured."""
    if model.config.gate.input == "detail":
        blocks = images.reshape(*images.shape[:2], 16, 2, 16, 2)
        images = (blocks - blocks.mean((3, 5), keepdim=True)).reshape(images.shape)
    B, C, H, W = images.shape  # flattened 8x8 regions, row-major, (C, y, x) within a region
    regions = images.reshape(B, C, H // 8, 8, W // 8, 8).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * 64)
    return model.gate.mlp(regions).squeeze(-1)


@pytest.mark.parametrize("export", [False, True])
@pytest.mark.parametrize("gate_input", ["detail", "pixels"])
def test_convolutional_gate_equals_the_per_region_mlp(gate_input, export):
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(TINY, GateConfig(input=gate_input))).eval().set_export(export)
    assert model.gate.fold is export
    x = images(3)
    torch.testing.assert_close(model.gate(x), reference_gate(model, x), rtol=1e-5, atol=1e-5)


def test_detail_gate_ignores_what_coarse_tokens_already_see():
    torch.manual_seed(0)
    detail = MSViT(MSViTConfig(TINY)).eval()
    pixels = MSViT(MSViTConfig(TINY, GateConfig(input="pixels"))).eval()
    pixels.load_state_dict(detail.state_dict())
    smooth = torch.randn(2, 3, 16, 16).repeat_interleave(2, 2).repeat_interleave(2, 3)  # constant 2x2 blocks
    bias_only = detail.gate.mlp[1:](detail.gate.mlp[0].bias.expand(2, 16, -1)).squeeze(-1)
    torch.testing.assert_close(detail.gate(smooth), bias_only, rtol=1e-5, atol=1e-5)  # input contributes nothing
    shifted = smooth + torch.tensor([0.3, -0.2, 0.5])[:, None, None]  # another background colour
    torch.testing.assert_close(detail.tokenize(shifted).probs, detail.tokenize(smooth).probs)
    assert not torch.allclose(pixels.tokenize(shifted).probs, pixels.tokenize(smooth).probs)
    with pytest.raises(MsvitEdgeError, match="gate input must be"):
        GateConfig(input="edges")
    with pytest.raises(MsvitEdgeError, match="gate gradient must be"):
        GateTraining(gradient="reinforce")
