"""Model configuration: plain dataclasses, importable without PyTorch (a Jetson reads them from a bundle manifest)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from msvit_edge.errors import MsvitEdgeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        return self.grid**2


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
    hidden: int = 64  # a few % of the backbone's MACs even for DeiT-Ti
    layers: int = 4  # the paper's 4-layer MLP
    threshold: float = 0.5  # inference: fine iff p > threshold; a deploy-time knob, no retraining
    temperature: float = 1.0  # Gumbel-sigmoid temperature in training
    noise: bool = True  # logistic noise in training; off makes training deterministic (e.g. DDP equivalence tests)
    # training: "flip" (the task loss's change when one sampled region flips scale) or the paper's "straight-through"
    gradient: str = "flip"
    input: str = "detail"  # "detail": region minus its 2x2-block means (what coarse tokens lose); "pixels": raw

    def __post_init__(self) -> None:
        if self.input not in ("detail", "pixels"):
            raise MsvitEdgeError(f"gate input must be 'detail' or 'pixels', got {self.input!r}")
        if self.gradient not in ("flip", "straight-through"):
            raise MsvitEdgeError(f"gate gradient must be 'flip' or 'straight-through', got {self.gradient!r}")


@dataclass(frozen=True)
class MSViTConfig:
    vit: ViTConfig = field(default_factory=ViTConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MSViTConfig:
        vit = {k: tuple(v) if isinstance(v, list) else v for k, v in d["vit"].items()}
        return cls(ViTConfig(**vit), GateConfig(**d.get("gate", {})))
