"""A compact ViT/DeiT whose state dict uses timm's ``VisionTransformer`` key layout.

timm needs torchvision at import, which cannot sit next to a CPU-only torch, so this is a small re-implementation of
the parts MSViT needs: patch embedding, CLS token, learned absolute position embeddings, pre-norm blocks, final norm
and a linear head on the CLS token. Keys (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N.norm1``,
``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``norm``, ``head``) match timm, so timm and DeiT
checkpoints load directly (see ``msvit_edge.model.checkpoint``).

The forward is split like the exporter's two graphs: ``embed(images) -> tokens`` and ``encode(tokens, mask) ->
logits``. ``mask`` is a key-padding mask for batches whose images have different token counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.model.config import ViTConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: [B, C, H, W] -> [B, H/p * W/p, D], row-major."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with an optional additive key bias.

    ``fused`` selects ``F.scaled_dot_product_attention`` (fast in eager PyTorch); export mode turns it off so ONNX
    gets plain MatMul/Softmax, which every runtime (and ModelOpt's Q/DQ placement) understands.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.fused = True

    def set_export(self, enable: bool) -> None:
        self.fused = not enable

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # [B, heads, N, N]
            if bias is not None:
                attn = attn + bias
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm's ``Block`` without LayerScale or drop-path)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


def attention_bias(mask: Tensor | None, dtype: torch.dtype = torch.float32) -> Tensor | None:
    """Key-padding mask [B, N] (True = real token) -> additive bias [B, 1, 1, N] (0 or -inf).

    Only keys are masked: every row keeps at least the CLS token, so no softmax row is all -inf, and real tokens
    never attend to padding. Padded rows compute garbage that nothing reads.
    """
    if mask is None:
        return None
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.full_like(zero, -math.inf))[:, None, None, :]


class VisionTransformer(nn.Module):
    """A plain ViT/DeiT classifier (CLS-token pooling)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.vit_config = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_patches + 1, D) * 0.02)
        self.blocks = nn.ModuleList(Block(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.head = nn.Linear(D, cfg.num_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def set_export(self, enable: bool = True) -> VisionTransformer:
        """Select ONNX/TensorRT-friendly code paths in every submodule that has one (e.g. unfused attention)."""
        for module in self.modules():
            if module is not self and hasattr(module, "set_export"):
                module.set_export(enable)
        return self

    def check_images(self, images: Tensor) -> None:
        """Raise a user-facing error for an image batch this model cannot take."""
        c, s = self.vit_config.in_chans, self.vit_config.img_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
            raise MsvitEdgeError(f"model expects images of shape [B, {c}, {s}, {s}], got {list(images.shape)}")

    def embed(self, images: Tensor) -> Tensor:
        """Images [B, C, H, W] -> tokens [B, 1 + N, D] (CLS first, position embeddings added)."""
        self.check_images(images)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(images.shape[0], -1, -1)
        return torch.cat([cls, self.patch_embed(images) + self.pos_embed[:, 1:]], dim=1)

    def features(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Tokens [B, N, D] (+ key mask [B, N]) -> normalised output tokens [B, N, D]."""
        bias = attention_bias(mask, tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, bias)
        return self.norm(tokens)

    def encode(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Tokens [B, N, D] (+ key mask [B, N], True = real) -> logits [B, num_classes], read from the CLS token."""
        return self.head(self.features(tokens, mask)[:, 0])

    def forward(self, images: Tensor) -> Tensor:
        return self.encode(self.embed(images))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
