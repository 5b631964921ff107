"""Semantic segmentation on MSViT's mixed-scale tokens: the dense fine grid rebuilt, then Segmenter's linear decoder.

MSViT's tokenizer keeps every pixel's information (a coarse token stands for its 2x2 fine cells), so a dense head can
rebuild the fine grid from the encoder's output tokens: every fine cell takes the features of the token that covers
it, its own fine token or its region's coarse token. A decoder then predicts classes per cell, and bilinear
upsampling brings them to pixels (Segmenter, Strudel et al., ICCV 2021).

``MSViTSegmenter`` subclasses ``MSViT`` and changes only what comes after the encoder: the tokenizer, the bucket
packing and the blocks are the classifier's. Its state dict is timm's ViT layout plus ``gate.*`` and
``decoder.head.*`` (Segmenter's key for the linear decoder), without the CLS classifier ``head.*``. The pipeline gets
one static-shape stage: ``cell_index`` turns the tokenizer's ``order`` and ``counts`` into a [B, G*G] index of token
rows, and ``encode(tokens, mask, cells)`` gathers the dense grid by it (``encode_selection(out)`` does both), so every
backend that runs the classifier runs this (ScatterElements, Gather, MatMul, Resize; no data-dependent shape).

Choices where the paper is silent (and why):
- Dense rebuild: a coarse token's features are copied to its 2x2 fine cells unchanged (the paper's words), with no
  learned upsampling or re-added position embeddings; within a coarse region the per-cell logits are therefore equal
  until the bilinear upsampling smooths them. The CLS token runs through the encoder (a pretrained ViT expects it)
  and is not decoded, as in Segmenter.
- Where the index comes from: the tokenizer's ``order`` (candidate of each row) and ``counts``, inverted once by a
  scatter. Selected rows are always below the image's count, hence inside the packed sequence of any bucket, so the
  same index works at every bucket size and with padding.
- Decoder: Segmenter's linear decoder (one ``Linear(D, K)`` per cell, logits at the fine grid, bilinear upsampling by
  the patch size with ``align_corners=False``). The features are gathered first and decoded second (the reverse
  gives the same numbers for a linear decoder at slightly fewer MACs): the dense feature map stays a stage of its
  own, where a decoder that mixes cells (Segmenter's mask transformer) would plug in. The mask transformer is not
  built yet; the linear decoder is what the paper's dense results need to be compared against.
- Classes: the backbone's ``num_classes``, background included. Which label is ignored is the data's and the loss's
  business (``msvit_edge.training``), not the model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msvit_edge.model.config import GateTraining, MSViTConfig
from msvit_edge.model.msvit import MSViT, TokenizerOutput, pack


class LinearDecoder(nn.Module):
    """Segmenter's linear decoder: dense features [B, G*G, D] -> pixel logits [B, K, S, S]."""

    def __init__(self, dim: int, num_classes: int, grid: int, img_size: int):
        super().__init__()
        self.grid, self.img_size = grid, img_size
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # as the ViT's own linear layers
        nn.init.zeros_(self.head.bias)

    def cell_logits(self, cells: Tensor) -> Tensor:
        """Dense features [B, G*G, D] -> class logits per fine cell [B, K, G, G] (row-major grid)."""
        B, G = cells.shape[0], self.grid
        return self.head(cells).transpose(1, 2).reshape(B, -1, G, G)

    def upsample(self, logits: Tensor) -> Tensor:
        """Cell logits [B, K, G, G] -> pixel logits [B, K, S, S] (``msvit_edge.bundle.dense.upsample`` in numpy)."""
        return F.interpolate(logits, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)

    def forward(self, cells: Tensor) -> Tensor:
        return self.upsample(self.cell_logits(cells))


def cell_rows(order: Tensor, counts: Tensor, patch_region: Tensor) -> Tensor:
    """Row of the tokenizer's output that covers each fine cell [B, G*G], from its ``order`` [B, M] and ``counts`` [B].

    Args:
        order: Candidate index of each row (CLS, G*G fine, R coarse candidates), the selected ones first.
        counts: Selected tokens per image.
        patch_region: Coarse region of each fine cell [G*G] (``MSViT.patch_region``).
    """
    B, M = order.shape
    GG = patch_region.numel()
    arange = torch.arange(M, device=order.device).expand(B, M)
    rows = torch.zeros_like(order).scatter(1, order, arange)  # [B, M]: the row each candidate landed in
    fine = rows[:, 1 : 1 + GG]
    coarse = rows[:, 1 + GG :].index_select(1, patch_region)  # the row of each cell's coarse token
    return torch.where(fine < counts[:, None], fine, coarse)


def dense_features(features: Tensor, cells: Tensor) -> Tensor:
    """Output tokens [B, N, D] -> the dense fine grid [B, G*G, D]: cell c takes row ``cells[:, c]``."""
    return features.gather(1, cells[..., None].expand(-1, -1, features.shape[-1]))


class MSViTSegmenter(MSViT):
    """MSViT with a dense head. Changes from ``MSViT``: no CLS classifier; ``encode`` returns pixel logits."""

    def __init__(self, config: MSViTConfig, gate_training: GateTraining | None = None):
        super().__init__(config, gate_training)
        vit = config.vit
        self.head = nn.Identity()  # nothing reads the CLS token: every cell is decoded instead
        self.decoder = LinearDecoder(vit.embed_dim, vit.num_classes, vit.grid, vit.img_size)
        # the plain ViT's sequence (CLS, then the fine grid row-major): cell c is row 1 + c
        self.register_buffer("all_fine_cells", 1 + torch.arange(vit.num_patches), persistent=False)

    def cell_index(self, out: TokenizerOutput) -> Tensor:
        """Row of ``out.tokens`` (and of the packed sequence) covering each fine cell [B, G*G]."""
        return cell_rows(out.order, out.counts, self.patch_region)

    def encode(self, tokens: Tensor, mask: Tensor | None = None, cells: Tensor | None = None) -> Tensor:
        """Tokens [B, N, D] (+ key mask [B, N]) -> pixel logits [B, num_classes, S, S].

        Args:
            tokens: Encoder input, as for ``MSViT.encode``.
            mask: Key-padding mask, True = real token.
            cells: Row covering each fine cell [B, G*G] (``cell_index``); None: ``tokens`` is the plain ViT's all-fine
                sequence (``embed``).
        """
        return self.decoder.upsample(self.encode_cells(tokens, mask, cells))

    def encode_cells(self, tokens: Tensor, mask: Tensor | None = None, cells: Tensor | None = None) -> Tensor:
        """As ``encode``, without the upsampling: logits per fine cell [B, K, G, G], what the exported graphs return
        (the upsampling is linear and fixed: the host does it, 64x less to bring back from a device)."""
        features = self.features(tokens, mask)
        if cells is None:
            cells = self.all_fine_cells.expand(tokens.shape[0], -1)  # shape, not len(): a symbolic batch in export
        return self.decoder.cell_logits(dense_features(features, cells))

    def graph_logits(self, tokens: Tensor, mask: Tensor | None = None, cells: Tensor | None = None) -> Tensor:
        """The exported graphs' answer: cell logits (``encode_cells``)."""
        return self.encode_cells(tokens, mask, cells)

    def encode_selection(self, out: TokenizerOutput) -> Tensor:
        """Pixel logits [B, K, S, S] from the tokenizer's selection (packed, with its cell index)."""
        return self.encode(*pack(out.tokens, out.counts), self.cell_index(out))
