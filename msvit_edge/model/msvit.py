"""MSViT: dynamic mixed-scale tokenization (Havtorn et al., ICCV 2023 workshops, arXiv 2307.02321).

A gate looks at each coarse region (2x2 fine patches) on its own and decides whether it becomes ONE coarse token or
its FOUR fine tokens. The backbone (blocks, norm, head) is an unchanged ViT, so the token count varies per image:
``R + 3k + 1`` for R regions of which k are fine.

``MSViT`` subclasses ``VisionTransformer`` and changes only the tokenization; its state dict is timm's layout plus
``gate.*``. The forward is split as the exporter's two graphs: ``tokenize`` (static shapes: every candidate token,
the selected ones first) and ``encode`` (dynamic token count), glued by ``pack``. Training, evaluation and export
all run this one code path.

Choices where the paper is silent (and why):
- The gate output is the probability that a region is tokenized FINE (the paper's means "keep coarse").
- Gate: 4-layer MLP (GELU, hidden width ``GateConfig.hidden``) on each region's own pixels. By default
  (``GateConfig.input = "detail"``) it sees what coarse tokenization would discard: the region minus the means of its
  2x2 pixel blocks (the coarse token sees those means). On raw pixels the gate latched onto image-level features
  (background colour) and spent its budget per image -- all-fine or all-coarse images, little better than a random
  gate at finding the object (docs/measurements.md) -- because the batch-wise prior cannot tell that from a
  per-region allocation. ``"pixels"`` keeps the raw input. No scale normalisation: a region's contrast is exactly
  what tells detail from background.
- Coarse tokens: the image is 2x2 average-pooled (an area resize of each coarse region to the fine patch size) and
  embedded with the SAME patch embedding. Their position embeddings are the 2x2 means of the fine grid's, i.e. the
  fine grid linearly interpolated to the coarse grid.
- Training: Gumbel-sigmoid (logistic noise, temperature ``GateTraining.temperature``), hard 0/1 forward. The paper's
  straight-through gradient multiplies every candidate token by its hard decision (1.0 when kept) so the task loss
  reaches the gate. The default gradient, ``"flip"``, leaves the forward alone and learns from the task loss's
  actual change when one sampled region changes scale (``msvit_edge.training.train.flip_gain``). Inference:
  deterministic ``logit(p) > logit(threshold)``, so threshold 0 is all-fine and 1 all-coarse without special cases.
- Candidate order: CLS, fine tokens (row-major fine grid), coarse tokens (row-major coarse grid). The selected
  tokens keep that order, so an all-fine selection is exactly the plain ViT's token sequence.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msvit_edge.bundle.selection import select
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.model.config import GateTraining, MSViTConfig
from msvit_edge.model.vit import VisionTransformer


class TokenizerOutput(NamedTuple):
    """What the tokenizer graph returns (M = 1 + fine patches + regions candidates per image)."""

    tokens: Tensor  # [B, M, D] candidates, the selected ones first (CLS, fine, coarse order), then the rest
    counts: Tensor  # [B] int64 number of selected tokens
    probs: Tensor  # [B, R] gate probability that each region is tokenized fine
    order: Tensor  # [B, M] int64 candidate index of each row of ``tokens``


class Gate(nn.Module):
    """Per-region MLP: images [B, C, H, W] -> fine logits [B, R], each region seen on its own.

    The first layer is an ``nn.Linear`` over a region's flattened pixels (C, y, x order) but runs as a convolution
    with stride = kernel = region size: the same weights, without materialising the regions. With ``detail`` the
    input is the image minus each 2x2 pixel block's mean. That transform is linear, so export mode folds it into the
    kernel (exported graphs then constant-fold it away). Training keeps it on the input: folded, the weight gradient
    becomes g - blockmean(g), which cancels to rounding noise on smooth regions, and Adam's per-element scaling
    turns that noise into full steps (1 and 2 data-parallel processes then drifted apart: docs/measurements.md).
    """

    def __init__(self, in_chans: int, region: int, hidden: int, layers: int, detail: bool):
        super().__init__()
        self.in_chans, self.region, self.detail = in_chans, region, detail
        self.fold = False
        dims = [in_chans * region**2] + [hidden] * (layers - 1)
        blocks: list[nn.Module] = []
        for d_in, d_out in itertools.pairwise(dims):
            blocks += [nn.Linear(d_in, d_out), nn.GELU()]
        self.mlp = nn.Sequential(*blocks, nn.Linear(dims[-1], 1))

    def set_export(self, enable: bool) -> None:
        self.fold = enable

    def forward(self, images: Tensor) -> Tensor:
        kernel = self.mlp[0].weight.view(-1, self.in_chans, self.region, self.region)
        if self.detail and self.fold:
            kernel = subtract_block_means(kernel)  # w (I - P): P, the 2x2-block averaging, is symmetric
        elif self.detail:
            images = subtract_block_means(images)
        x = F.conv2d(images, kernel, self.mlp[0].bias, stride=self.region)  # [B, hidden, g, g]
        for layer in self.mlp[1:]:  # the Linear layers as 1x1 convolutions: no transposes in the exported graph
            x = F.conv2d(x, layer.weight[..., None, None], layer.bias) if isinstance(layer, nn.Linear) else layer(x)
        return x.flatten(1)


def subtract_block_means(x: Tensor) -> Tensor:
    """[..., H, W] minus the mean of each 2x2 block of its last two dims."""
    *lead, H, W = x.shape
    blocks = x.reshape(*lead, H // 2, 2, W // 2, 2)
    return (blocks - blocks.mean((-3, -1), keepdim=True)).reshape(x.shape)


class MSViT(VisionTransformer):
    """A ViT with a mixed-scale tokenizer. Changes from the ViT: ``embed`` is replaced by ``tokenize``."""

    def __init__(self, config: MSViTConfig, gate_training: GateTraining | None = None):
        super().__init__(config.vit)
        self.config = config
        self.gate_training = gate_training or GateTraining()  # how ``decide`` samples in training mode
        p, G, gate = config.vit.patch_size, config.vit.grid, config.gate
        self.gate = Gate(config.vit.in_chans, 2 * p, gate.hidden, gate.layers, gate.input == "detail")
        # region (row-major coarse grid) that each fine patch (row-major fine grid) belongs to: [G * G]
        rows = torch.arange(G) // 2
        self.register_buffer("patch_region", (rows[:, None] * (G // 2) + rows[None, :]).flatten(), persistent=False)
        # keep [B, M] = decisions [B, R] @ keep_map + keep_base: CLS 1, a fine patch its region's decision, a coarse
        # token 1 - decision. One MatMul in the exported graph instead of a gather, a concat and a subtraction.
        R = self.num_regions
        keep_map = torch.zeros(R, self.num_candidates)
        keep_map[self.patch_region, 1 + torch.arange(G * G)] = 1.0
        keep_map[torch.arange(R), 1 + G * G + torch.arange(R)] = -1.0
        self.register_buffer("keep_map", keep_map, persistent=False)
        self.register_buffer(
            "keep_base", torch.cat([torch.ones(1), torch.zeros(G * G), torch.ones(R)]), persistent=False
        )

    @property
    def num_regions(self) -> int:
        return self.vit_config.num_regions

    @property
    def num_candidates(self) -> int:
        return self.vit_config.num_candidates

    def coarse_embed(self, images: Tensor) -> Tensor:
        """Coarse tokens [B, R, D]: the patch embedding of the 2x2 average-pooled image.

        Exported, this is the pooling and the fine patch embedding's Conv. Folding the pooling into one Conv with
        a 2p-wide kernel is the same linear map at 4x the MACs; once ONNX Runtime's sessions stopped spinning it was
        the slower form at both the demo's and DeiT-S's size (docs/benchmarks.md). The 2x2 mean is a depthwise
        stride-2 Conv of weights 1/4, not an AveragePool: ONNX Runtime runs it in 151 us instead of 342 us at 224 px,
        most of what the tokenizer cost ViT-Tiny at batch 1 (docs/batch1.md).
        """
        C = images.shape[1]
        mean = images.new_full((C, 1, 2, 2), 0.25)
        return self.patch_embed(F.conv2d(images, mean, stride=2, groups=C))

    def coarse_pos_embed(self) -> Tensor:
        """Position embeddings of the coarse grid [1, R, D]: 2x2 means of the fine grid's."""
        G, D = self.vit_config.grid, self.vit_config.embed_dim
        fine = self.pos_embed[:, 1:].transpose(1, 2).reshape(1, D, G, G)
        return F.avg_pool2d(fine, 2).flatten(2).transpose(1, 2)

    def decide(self, logits: Tensor, threshold: Tensor | float | None = None) -> Tensor:
        """Gate logits [B, R] -> fine decisions [B, R] as floats: hard 0/1 forward, straight-through when training."""
        if not self.training:
            t = torch.as_tensor(self.config.threshold if threshold is None else threshold, dtype=logits.dtype)
            return (logits > torch.log(t) - torch.log1p(-t)).to(logits.dtype)  # logit(t); 0 -> -inf, 1 -> inf
        noise = torch.zeros_like(logits)
        if self.gate_training.noise:
            u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
            noise = torch.log(u) - torch.log1p(-u)
        soft = torch.sigmoid((logits + noise) / self.gate_training.temperature)
        hard = (soft > 0.5).to(soft.dtype)
        return hard + (soft - soft.detach()) if self.gate_training.gradient == "straight-through" else hard

    def tokenize(
        self, images: Tensor, threshold: Tensor | float | None = None, decisions: Tensor | None = None
    ) -> TokenizerOutput:
        """Gate, embed and order the candidate tokens of images [B, C, H, W].

        Args:
            images: Normalised images.
            threshold: Gate threshold at inference (default: the config's).
            decisions: Fine decisions [B, R] that override the gate's (e.g. a random-gate baseline).
        """
        self.check_images(images)
        B = images.shape[0]
        logits = self.gate(images)
        fine_region = self.decide(logits, threshold) if decisions is None else decisions.to(images.dtype)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
        fine = self.patch_embed(images) + self.pos_embed[:, 1:]
        coarse = self.coarse_embed(images) + self.coarse_pos_embed()
        keep = fine_region @ self.keep_map.to(fine_region.dtype) + self.keep_base.to(fine_region.dtype)  # [B, M]
        candidates = torch.cat([cls, fine, coarse], dim=1)
        if keep.requires_grad:
            candidates = candidates * keep[..., None]  # x1.0 forward: the straight-through gradient's path
        hard = keep.detach().float()  # float32 whatever the model's dtype: bf16/fp16 cannot hold distinct keys
        M = hard.shape[1]
        # Static-shape stable partition: kept first, each part in candidate order (TopK exports as one ONNX op).
        key = hard * M + torch.arange(M, 0, -1, device=hard.device, dtype=hard.dtype)
        order = torch.topk(key, M, dim=1).indices
        tokens = candidates.gather(1, order[..., None].expand(-1, -1, candidates.shape[-1]))
        return TokenizerOutput(tokens, hard.sum(1).to(torch.int64), torch.sigmoid(logits), order)

    def encode_selection(self, out: TokenizerOutput) -> Tensor:
        """The encoder and head on the tokenizer's selection, packed to the batch's largest count."""
        return self.encode(*pack(out.tokens, out.counts))

    def forward(self, images: Tensor, threshold: Tensor | float | None = None) -> Tensor:
        return self.encode_selection(self.tokenize(images, threshold))

    def cell_index(self, out: TokenizerOutput) -> Tensor | None:
        """A dense head's row per fine cell (``MSViTSegmenter``); a classifier has none."""
        return None

    def graph_logits(self, tokens: Tensor, mask: Tensor | None = None, cells: Tensor | None = None) -> Tensor:
        """What the exported encoder graphs return for these tokens: a classifier's logits (``cells`` unused)."""
        return self.encode(tokens, mask)

    def fine_regions(self, out: TokenizerOutput) -> Tensor:
        """Which regions were tokenized fine [B, R], read back from the tokenizer's order and counts."""
        rows = torch.argsort(out.order, dim=1)[:, 1 + self.vit_config.num_patches :]  # row of each coarse candidate
        return rows >= out.counts[:, None]  # a region is fine iff its coarse token was not selected


def pack(tokens: Tensor, counts: Tensor) -> tuple[Tensor, Tensor | None]:
    """Cut the tokenizer's candidates [B, M, D] to the batch's largest count; a key mask only when counts differ.

    The decision is ``msvit_edge.bundle.selection``'s, the one every backend uses.
    """
    (call,) = select(counts.cpu().numpy())
    mask = call.mask()
    return tokens[:, : call.rows], None if mask is None else torch.from_numpy(mask).to(tokens.device)


def check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise MsvitEdgeError(f"gate threshold must be in [0, 1] (0 = all fine, 1 = all coarse), got {threshold}")
    return threshold
