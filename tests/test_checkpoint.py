"""Loading users' timm/DeiT checkpoints, msvit-edge checkpoints, and bad checkpoint files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.model.checkpoint import load_checkpoint, load_vit_weights, resize_pos_embed, save_checkpoint
from msvit_edge.model.config import GateConfig, MSViTConfig, ViTConfig
from msvit_edge.model.msvit import MSViT
from msvit_edge.model.vit import VisionTransformer

TINY = ViTConfig(
    img_size=32, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=4, mean=(0.5,) * 3, std=(0.5,) * 3
)
# timm.models.vision_transformer.VisionTransformer(depth=1, class_token=True, global_pool="token").state_dict()
TIMM_KEYS_DEPTH1 = [
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "blocks.0.norm1.weight",
    "blocks.0.norm1.bias",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight",
    "blocks.0.attn.proj.bias",
    "blocks.0.norm2.weight",
    "blocks.0.norm2.bias",
    "blocks.0.mlp.fc1.weight",
    "blocks.0.mlp.fc1.bias",
    "blocks.0.mlp.fc2.weight",
    "blocks.0.mlp.fc2.bias",
    "norm.weight",
    "norm.bias",
    "head.weight",
    "head.bias",
]


def vit(cfg: ViTConfig = TINY, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(cfg).eval()


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_state_dict_uses_timm_key_layout():
    keys = VisionTransformer(ViTConfig(**{**TINY.__dict__, "depth": 1})).state_dict().keys()
    assert sorted(keys) == sorted(TIMM_KEYS_DEPTH1)


@pytest.mark.parametrize("layout", ["deit_pth", "plain_pt", "ddp_pth", "safetensors"])
def test_timm_layout_checkpoints_load_with_identical_logits(tmp_path, layout):
    source = vit(seed=1)
    sd = source.state_dict()
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pth")
    if layout == "deit_pth":
        torch.save({"model": sd, "epoch": 300, "args": {"lr": 5e-4}}, path)  # DeiT's released format
    elif layout == "ddp_pth":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    elif layout == "plain_pt":
        torch.save(sd, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    model = MSViT(MSViTConfig(TINY)).eval()
    load_vit_weights(model, path)
    with torch.no_grad():
        torch.testing.assert_close(model(images(), threshold=0.0), source(images()), rtol=0, atol=1e-6)


def test_position_embeddings_are_resized_for_another_grid(tmp_path):
    small = vit(ViTConfig(**{**TINY.__dict__, "img_size": 16}))  # 4x4 grid
    torch.save(small.state_dict(), tmp_path / "w.pth")
    model = MSViT(MSViTConfig(TINY))
    load_vit_weights(model, tmp_path / "w.pth")
    grid = small.pos_embed[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    torch.testing.assert_close(model.pos_embed[0, 0], small.pos_embed[0, 0])
    torch.testing.assert_close(model.pos_embed[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 64, 32))
    assert torch.equal(resize_pos_embed(small.pos_embed, 4), small.pos_embed)


def test_reset_head_loads_a_backbone_for_other_classes(tmp_path):
    torch.save(vit(ViTConfig(**{**TINY.__dict__, "num_classes": 1000})).state_dict(), tmp_path / "w.pth")
    model = MSViT(MSViTConfig(TINY))
    with pytest.raises(MsvitEdgeError, match=r"shape mismatch: head.weight \[1000, 32\] vs \[5, 32\]"):
        load_vit_weights(model, tmp_path / "w.pth")
    load_vit_weights(model, tmp_path / "w.pth", reset_head=True)
    assert model.head.weight.shape == (5, 32)


def test_mismatched_checkpoints_list_the_problems(tmp_path):
    sd = vit().state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")} | {"dist_token": torch.zeros(1, 1, 32)}
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(MsvitEdgeError) as err:
        load_vit_weights(MSViT(MSViTConfig(TINY)), tmp_path / "w.pth")
    message = str(err.value)
    assert message.startswith(str(tmp_path / "w.pth")) and "\n" not in message
    assert "missing: blocks.1.norm1.weight" in message and "(+6 more)" in message
    assert "unexpected: dist_token" in message
    torch.save(vit(ViTConfig(**{**TINY.__dict__, "embed_dim": 64})).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(MsvitEdgeError, match=r"shape mismatch: cls_token \[1, 1, 64\] vs \[1, 1, 32\]"):
        load_vit_weights(MSViT(MSViTConfig(TINY)), tmp_path / "wide.pth")


class NotWeights:
    """A pickled object that weights_only loading must refuse to construct."""


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("garbage.pth", b"\x00not a checkpoint" * 50, "not a readable checkpoint"),
        ("truncated.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{", "not a readable safetensors file"),
        ("missing.pth", None, "checkpoint not found"),
    ],
)
def test_corrupt_or_missing_checkpoints_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MsvitEdgeError, match=message) as err:
        load_vit_weights(MSViT(MSViTConfig(TINY)), path)
    assert str(err.value).startswith(str(path))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": vit().state_dict(), "evil": NotWeights()}, tmp_path / "w.pth")
    with pytest.raises(
        MsvitEdgeError,
        match=r"holds pickled objects beyond tensors \(test_checkpoint.NotWeights\), which weights-only",
    ) as err:
        load_vit_weights(MSViT(MSViTConfig(TINY)), tmp_path / "w.pth")
    assert "NotWeights" in str(err.value) and "\n" not in str(err.value)  # torch's reason, whole, on one line
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(MsvitEdgeError, match="expected a state dict, found a Tensor"):
        load_vit_weights(MSViT(MSViTConfig(TINY)), tmp_path / "t.pth")


@pytest.mark.parametrize("half", [False, True])
def test_msvit_checkpoint_round_trip(tmp_path, half):
    torch.manual_seed(0)
    model = MSViT(MSViTConfig(TINY)).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"epochs": 3}, half=half)
    loaded, meta = load_checkpoint(path)
    assert meta == {"epochs": 3} and loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(images()), model(images()), rtol=0, atol=1e-2 if half else 0)
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    path = save_checkpoint(MSViT(MSViTConfig(TINY)), tmp_path / "m.safetensors")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_plain_vit_weights_are_not_an_msvit_checkpoint(tmp_path):
    save_file({k: v.contiguous() for k, v in vit().state_dict().items()}, tmp_path / "vit.safetensors")
    with pytest.raises(MsvitEdgeError, match="not an msvit-edge checkpoint"):
        load_checkpoint(tmp_path / "vit.safetensors")


def test_interrupted_save_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"

    def failing_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half-written")
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", failing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(MSViT(MSViTConfig(TINY)), path)
    assert list(tmp_path.iterdir()) == []


def test_a_classifier_that_already_fits_is_kept_when_a_new_one_is_asked_for(tmp_path):
    torch.save({"model": vit().state_dict()}, tmp_path / "w.pth")
    fits, other = MSViT(MSViTConfig(TINY)), MSViT(MSViTConfig(ViTConfig(**{**TINY.__dict__, "num_classes": 7})))
    load_vit_weights(fits, tmp_path / "w.pth", reset_head=True)
    load_vit_weights(other, tmp_path / "w.pth", reset_head=True)
    assert torch.equal(fits.head.weight, vit().head.weight) and other.head.weight.shape[0] == 7


@pytest.mark.parametrize("loader", [load_checkpoint, lambda path: load_vit_weights(MSViT(MSViTConfig(TINY)), path)])
def test_a_folder_is_named_as_a_folder(tmp_path, loader):
    with pytest.raises(MsvitEdgeError, match="is a folder, not a checkpoint file"):
        loader(tmp_path)


def test_a_torch_save_file_is_named_a_plain_vit_checkpoint(tmp_path):
    torch.save({"model": vit().state_dict()}, tmp_path / "deit.pth")
    with pytest.raises(MsvitEdgeError, match="not an msvit-edge checkpoint: a plain ViT/DeiT one"):
        load_checkpoint(tmp_path / "deit.pth")


GOLDEN = Path(__file__).parent / "data" / "demo_checkpoint_golden.npz"  # the demo's answers before GateTraining


def test_the_embedded_demo_checkpoint_still_loads_and_gives_the_same_logits():
    from msvit_edge.data import FashionMNISTScenes
    from msvit_edge.model.checkpoint import demo_checkpoint, read_checkpoint_header
    from msvit_edge.model.msvit import pack

    stored = json.loads(read_checkpoint_header(demo_checkpoint())["msvit_edge.config"])
    assert "threshold" in stored["gate"] and "threshold" not in stored  # the format from before GateTraining
    model, _ = load_checkpoint(demo_checkpoint())
    assert model.config.threshold == stored["gate"]["threshold"]
    sample = Path(demo_checkpoint()).parent / "fashion-mnist-sample"
    scenes = FashionMNISTScenes.from_split("test", root=sample)
    with torch.no_grad():
        out = model.tokenize(torch.stack([scenes[i][0] for i in range(8)]))
        logits = model.encode(*pack(out.tokens, out.counts))
    with np.load(GOLDEN) as golden:
        np.testing.assert_array_equal(out.counts.numpy(), golden["counts"])
        np.testing.assert_allclose(logits.numpy(), golden["logits"], rtol=0, atol=1e-5)


def test_a_config_from_before_gate_training_reads_as_architecture_and_threshold():
    old = {"vit": {"img_size": 32, "patch_size": 4, "mean": [0.5] * 3, "std": [0.5] * 3}}
    old["gate"] = {"hidden": 16, "layers": 3, "threshold": 0.7, "temperature": 0.5, "noise": False, "gradient": "flip"}
    cfg = MSViTConfig.from_dict(old)
    assert cfg.gate == GateConfig(hidden=16, layers=3) and cfg.threshold == 0.7 and cfg.vit.mean == (0.5,) * 3
    assert MSViTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # as a checkpoint header stores it
    assert set(cfg.to_dict()) == {"vit", "gate", "threshold"} and "threshold" not in cfg.to_dict()["gate"]
