"""Multiply-accumulate (MAC) counts per image, the one axis every report places results on.

Counted: matrix products (patch embedding, attention projections, attention scores and mixing, MLP, gate, head).
Not counted: normalisation, softmax, activations, additions, a segmenter's gather and bilinear upsampling (the usual
convention; they are a few % at most).
Per transformer layer with N tokens (CLS included) of width D and MLP ratio r: ``(4 + 2r) N D^2 + 2 N^2 D``, i.e.
``12 N D^2 + 2 N^2 D`` for r = 4. DeiT-S at 197 tokens: 4.60 GMACs.

The formulas count the model as it runs in PyTorch: the tests hold them to the real modules, counted by PyTorch's
FLOP counter (``count_macs`` in tests/conftest.py). Not in the formulas: the tokenizer's selection bookkeeping (one
[R] x [R, M] product per image, see ``MSViT.keep_map``).
"""

from __future__ import annotations

from msvit_edge.model.config import CLASSIFICATION, SEGMENTATION, GateConfig, ViTConfig


def encoder_macs(cfg: ViTConfig, tokens: float, task: str = CLASSIFICATION) -> float:
    """MACs of the transformer blocks and the task's head for ``tokens`` tokens (CLS included)."""
    D, N = cfg.embed_dim, tokens
    per_layer = (4 + 2 * cfg.mlp_ratio) * N * D * D + 2 * N * N * D
    return cfg.depth * per_layer + head_macs(cfg, task)


def head_macs(cfg: ViTConfig, task: str = CLASSIFICATION) -> float:
    """The classifier's head reads the CLS token; a segmenter's linear decoder reads every fine cell, whatever the
    token count (``msvit_edge.model.segmenter``)."""
    cells = cfg.num_patches if task == SEGMENTATION else 1
    return cells * cfg.embed_dim * cfg.num_classes


def patch_embed_macs(cfg: ViTConfig, patches: int) -> float:
    return patches * cfg.in_chans * cfg.patch_size**2 * cfg.embed_dim


def coarse_pool_macs(cfg: ViTConfig) -> float:
    """The 2x2 mean before the coarse embedding: a depthwise stride-2 conv, one MAC per input pixel and channel."""
    return cfg.in_chans * cfg.img_size**2


def gate_macs(cfg: ViTConfig, gate: GateConfig) -> float:
    per_region = (
        cfg.in_chans * (2 * cfg.patch_size) ** 2 * gate.hidden + (gate.layers - 2) * gate.hidden**2 + gate.hidden
    )
    return cfg.num_regions * per_region


def vit_macs(cfg: ViTConfig, tokens: float | None = None, task: str = CLASSIFICATION) -> float:
    """A plain ViT's MACs per image (all-fine tokens unless ``tokens`` is given)."""
    tokens = cfg.token_range.max if tokens is None else tokens
    return patch_embed_macs(cfg, cfg.num_patches) + encoder_macs(cfg, tokens, task)


def msvit_macs(cfg: ViTConfig, gate: GateConfig, tokens: float, task: str = CLASSIFICATION) -> float:
    """MSViT's MACs per image with ``tokens`` selected tokens.

    The tokenizer embeds every candidate (all fine patches and all coarse regions: that is what the deployed static
    tokenizer graph computes) and runs the gate on every region; the encoder sees only the selected tokens.
    """
    embed = patch_embed_macs(cfg, cfg.num_patches + cfg.num_regions) + coarse_pool_macs(cfg)
    return embed + gate_macs(cfg, gate) + encoder_macs(cfg, tokens, task)
