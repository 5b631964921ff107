"""The segmentation head on MSViT's tokens: the dense grid rebuilt from the selection, padding, checkpoints, MACs,
and the head as a static-shape ONNX stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from msvit_edge.model.checkpoint import load_checkpoint, load_vit_weights, read_checkpoint_header, save_checkpoint
from msvit_edge.model.config import SEGMENTATION, MSViTConfig, ViTConfig
from msvit_edge.model.factory import create_model
from msvit_edge.model.flops import encoder_macs, head_macs
from msvit_edge.model.msvit import MSViT, pack
from msvit_edge.model.segmenter import MSViTSegmenter, cell_rows, dense_features
from msvit_edge.model.vit import VisionTransformer

TINY = ViTConfig(
    img_size=32, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=4, mean=(0.5,) * 3, std=(0.5,) * 3
)  # 8x8 fine grid, 16 regions


@pytest.fixture
def model() -> MSViTSegmenter:
    torch.manual_seed(0)
    return create_model(MSViTConfig(TINY, task=SEGMENTATION)).eval()


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def decisions(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 16, generator=torch.Generator().manual_seed(seed)) < 0.4


def test_the_task_picks_the_model_and_a_classifier_config_is_stored_as_before():
    assert type(create_model(MSViTConfig(TINY))) is MSViT
    assert isinstance(create_model(MSViTConfig(TINY, task=SEGMENTATION)), MSViTSegmenter)
    assert set(MSViTConfig(TINY).to_dict()) == {"vit", "gate", "threshold"}
    seg = MSViTConfig(TINY, task=SEGMENTATION)
    assert seg.to_dict()["task"] == SEGMENTATION and MSViTConfig.from_dict(json.loads(json.dumps(seg.to_dict()))) == seg


def test_each_cell_reads_the_token_that_covers_it(model):
    d = decisions(4)
    out = model.tokenize(images(), decisions=d)
    rows = model.cell_index(out)  # [4, 64]
    for b in range(4):
        for cell in range(64):
            region = (cell // 8 // 2) * 4 + (cell % 8) // 2
            candidate = 1 + cell if d[b, region] else 1 + 64 + region
            assert out.order[b, rows[b, cell]] == candidate and rows[b, cell] < out.counts[b]


def test_all_fine_is_the_plain_vit_with_the_same_decoder(model):
    x = images()
    with torch.no_grad():
        expected = model.encode(model.embed(x))  # the plain ViT's sequence, cells in grid order
        torch.testing.assert_close(model(x, threshold=0.0), expected, rtol=0, atol=1e-5)
    assert expected.shape == (4, 5, 32, 32)


def test_a_coarse_region_gives_its_four_cells_one_feature_vector(model):
    x, d = images(2), decisions(2)
    with torch.no_grad():
        out = model.tokenize(x, decisions=d)
        tokens, mask = pack(out.tokens, out.counts)
        dense = dense_features(model.features(tokens, mask), model.cell_index(out)).reshape(2, 4, 2, 4, 2, -1)
    spread = (dense - dense.mean((2, 4), keepdim=True)).abs().amax((2, 4, 5))  # [2, 4, 4]: per region
    assert torch.all(spread[~d.reshape(2, 4, 4)] == 0) and torch.all(spread[d.reshape(2, 4, 4)] > 0)


def test_padding_to_the_batch_maximum_changes_no_pixel(model):
    x, d = images(3), decisions(3)
    assert len(set(model.tokenize(x, decisions=d).counts.tolist())) == 3
    with torch.no_grad():
        out = model.tokenize(x, decisions=d)
        batched = model.encode(*pack(out.tokens, out.counts), model.cell_index(out))
        for b in range(3):
            one = model.tokenize(x[b : b + 1], decisions=d[b : b + 1])
            alone = model.encode(*pack(one.tokens, one.counts), model.cell_index(one))
            torch.testing.assert_close(batched[b : b + 1], alone, rtol=0, atol=1e-5)


def test_a_segmentation_checkpoint_says_its_task_and_loads_as_a_segmenter(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "seg.safetensors")
    assert json.loads(read_checkpoint_header(path)["msvit_edge.config"])["task"] == SEGMENTATION
    loaded, _ = load_checkpoint(path)
    assert isinstance(loaded, MSViTSegmenter)
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_vit_weights_fill_the_backbone_and_leave_the_decoder(model, tmp_path):
    torch.manual_seed(1)
    vit = VisionTransformer(TINY)  # timm's layout, with a classifier head the segmenter has no use for
    torch.save({"model": vit.state_dict()}, tmp_path / "vit.pth")
    decoder = model.decoder.head.weight.clone()
    load_vit_weights(model, tmp_path / "vit.pth")
    assert torch.equal(model.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    assert torch.equal(model.decoder.head.weight, decoder) and "head.weight" not in model.state_dict()


def test_the_decoder_macs_are_what_it_computes(model, count_macs):
    tokens = model.embed(images(1))
    blocks = encoder_macs(TINY, tokens.shape[1]) - head_macs(TINY)
    assert count_macs(model, model.encode, tokens) == blocks + head_macs(TINY, SEGMENTATION)
    assert head_macs(TINY, SEGMENTATION) == 64 * 32 * 5


class _DenseStage(nn.Module):
    """What a deployed segmentation pipeline adds: the cell index from the tokenizer's outputs, then the encoder and
    the decoder on the packed tokens."""

    def __init__(self, model: MSViTSegmenter):
        super().__init__()
        self.model = model

    def forward(self, tokens, mask, order, counts):
        cells = cell_rows(order, counts, self.model.patch_region)
        return self.model.encode(tokens, mask, cells)


@pytest.mark.filterwarnings("ignore")  # torch.onnx's own deprecation and axis-naming chatter
@torch.no_grad()
def test_the_dense_stage_runs_in_onnx_runtime_at_any_token_count(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model.set_export(True)
    x, d = images(3), decisions(3)
    out = model.tokenize(x, decisions=d)
    tokens, mask = pack(out.tokens, out.counts)
    B, N = torch.export.Dim("B", min=1, max=64), torch.export.Dim("N", min=2, max=81)
    dynamic = {"tokens": {0: B, 1: N}, "mask": {0: B, 1: N}, "order": {0: B}, "counts": {0: B}}
    args = (tokens, mask, out.order, out.counts)
    program = torch.onnx.export(_DenseStage(model), args, dynamo=True, dynamic_shapes=dynamic, opset_version=20)
    program.save(str(tmp_path / "dense.onnx"))
    session = ort.InferenceSession(str(tmp_path / "dense.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for b in (slice(0, 3), slice(1, 2)):  # the whole batch (masked) and one image (its own count)
        one = model.tokenize(x[b], decisions=d[b])
        feed = (*pack(one.tokens, one.counts), one.order, one.counts)
        feed = (feed[0], torch.ones(feed[0].shape[:2], dtype=torch.bool) if feed[1] is None else feed[1], *feed[2:])
        (got,) = session.run(None, {n: t.numpy() for n, t in zip(names, feed, strict=True)})
        expected = model.encode(*pack(one.tokens, one.counts), model.cell_index(one)).numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_the_embedded_demo_checkpoint_is_still_a_classifier():
    from msvit_edge.model.checkpoint import load_model

    model, _ = load_model()
    assert type(model) is MSViT and model.config.task == "classification" and "head.weight" in model.state_dict()
