"""Model configuration: plain dataclasses, importable without PyTorch (a Jetson reads them from a bundle manifest).

What a checkpoint and a bundle manifest describe is ``MSViTConfig``: the backbone (``ViTConfig``), the gate's
architecture (``GateConfig``), the default gate threshold and the task (``TASKS``: a classifier reads the CLS token, a
segmenter decodes every fine cell, ``msvit_edge.model.segmenter``). The class count is the backbone's
``num_classes`` either way (a segmenter's includes its background class). How training samples the gate's decisions
(``GateTraining``) belongs to a training run, not to the model, so it is never stored with the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from msvit_edge.errors import MsvitEdgeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What checkpoints and manifests written before GateTraining existed stored in "gate"; read and dropped (training
# settings) or moved (the threshold).
_LEGACY_GATE_KEYS = ("threshold", "temperature", "noise", "gradient")
CLASSIFICATION, SEGMENTATION = "classification", "segmentation"
TASKS = (CLASSIFICATION, SEGMENTATION)


class TokenRange(NamedTuple):
    """The token counts (CLS included) an MSViT can produce: every region coarse .. every region fine."""

    min: int
    max: int


@dataclass(frozen=True)
class ViTConfig:
    """Backbone hyper-parameters; the defaults are DeiT-S at 224 px."""

    img_size: int = 224
    patch_size: int = 16  # the FINE patch size; MSViT's coarse regions are 2x this
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    mean: tuple[float, ...] = IMAGENET_MEAN  # preprocessing, recorded so exports and engines normalise alike
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.img_size % (2 * self.patch_size):
            raise MsvitEdgeError(
                f"image size {self.img_size} is not divisible by the coarse region size {2 * self.patch_size} "
                f"(2 x patch size {self.patch_size})"
            )
        if self.embed_dim % self.num_heads:
            raise MsvitEdgeError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise MsvitEdgeError(f"mean/std need {self.in_chans} values, one per input channel")

    @property
    def grid(self) -> int:
        """Side of the fine patch grid."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Fine patches, i.e. tokens of the plain ViT without CLS."""
        return self.grid**2

    @property
    def num_regions(self) -> int:
        """Coarse regions (2x2 fine patches each): what the gate decides on."""
        return (self.grid // 2) ** 2

    @property
    def num_candidates(self) -> int:
        """Candidate tokens of the tokenizer: CLS, every fine patch and every coarse region."""
        return 1 + self.num_patches + self.num_regions

    @property
    def token_range(self) -> TokenRange:
        """All coarse (R + 1 tokens) .. all fine (4R + 1 tokens, the plain ViT's sequence)."""
        return TokenRange(self.num_regions + 1, self.num_patches + 1)


PRESETS: dict[str, ViTConfig] = {
    "vit_tiny_patch16_224": ViTConfig(embed_dim=192, num_heads=3),  # = deit_tiny_patch16_224
    "vit_small_patch16_224": ViTConfig(embed_dim=384, num_heads=6),  # = deit_small_patch16_224
    "vit_base_patch16_224": ViTConfig(embed_dim=768, num_heads=12),  # = deit_base_patch16_224
    # Fashion-MNIST scenes: 80 px canvas, 8 px fine / 16 px coarse patches, 10x10 = 100 fine tokens + CLS.
    "vit_demo_patch8_80": ViTConfig(
        img_size=80, patch_size=8, num_classes=10, embed_dim=128, depth=6, num_heads=4, mean=(0.5,) * 3, std=(0.5,) * 3
    ),
}


def preset(name: str, **overrides) -> ViTConfig:
    """A named backbone configuration, optionally with fields replaced (e.g. ``num_classes=10``)."""
    if name not in PRESETS:
        raise MsvitEdgeError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ViTConfig(**{**PRESETS[name].__dict__, **overrides})


@dataclass(frozen=True)
class GateConfig:
    """The gate's architecture: a per-region MLP (see ``msvit_edge.model.msvit.Gate``)."""

    hidden: int = 64  # a few % of the backbone's MACs even for DeiT-Ti
    layers: int = 4  # the paper's 4-layer MLP
    input: str = "detail"  # "detail": region minus its 2x2-block means (what coarse tokens lose); "pixels": raw

    def __post_init__(self) -> None:
        if self.input not in ("detail", "pixels"):
            raise MsvitEdgeError(f"gate input must be 'detail' or 'pixels', got {self.input!r}")


@dataclass(frozen=True)
class GateTraining:
    """How training samples the gate's decisions and how the task loss reaches the gate; inference ignores it."""

    temperature: float = 1.0  # Gumbel-sigmoid temperature
    noise: bool = True  # logistic noise; off makes training deterministic (e.g. DDP equivalence tests)
    # "flip" (the task loss's change when one sampled region flips scale) or the paper's "straight-through"
    gradient: str = "flip"

    def __post_init__(self) -> None:
        if self.gradient not in ("flip", "straight-through"):
            raise MsvitEdgeError(f"gate gradient must be 'flip' or 'straight-through', got {self.gradient!r}")


@dataclass(frozen=True)
class MSViTConfig:
    """What an MSViT checkpoint is: backbone, gate architecture, and the gate threshold it deploys with.

    ``threshold``: fine iff p > threshold (0 = all fine, 1 = all coarse). A deploy-time knob, no retraining;
    training calibrates its default to the fine-region budget. ``task``: one of ``TASKS``.
    """

    vit: ViTConfig = field(default_factory=ViTConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    threshold: float = 0.5
    task: str = CLASSIFICATION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise MsvitEdgeError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")

    def to_dict(self) -> dict:
        """As checkpoints and manifests store it. A classifier's has no "task": files stay as they were before
        segmentation existed, and a reader that does not know the key still reads every classifier."""
        d = asdict(self)
        if self.task == CLASSIFICATION:
            del d["task"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MSViTConfig:
        """The inverse of ``to_dict``; also reads files whose "gate" held the threshold and training settings."""
        vit = {k: tuple(v) if isinstance(v, list) else v for k, v in d["vit"].items()}
        gate = dict(d.get("gate", {}))
        legacy = {k: gate.pop(k) for k in _LEGACY_GATE_KEYS if k in gate}
        threshold = d.get("threshold", legacy.get("threshold", cls.threshold))
        return cls(ViTConfig(**vit), GateConfig(**gate), float(threshold), d.get("task", CLASSIFICATION))
