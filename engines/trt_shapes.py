"""The shapes every TensorRT engine is built for: each stage's inputs, and one optimisation profile per bucket.

``EngineShapes.profiles`` is the one function that turns a bundle's inputs and bucket plan into (min, opt, max)
shapes: the Python build (``trt_build``), its trtexec lines (``trt_trtexec``) and torch-tensorrt's per-bucket
inputs (``torch_tensorrt``) all take them from here, and the ranges themselves from ``BucketPlan.ranges``.

The inputs come from the bundle's manifest (``from_bundle``), so a segmentation bundle's ``cells`` [batch, G*G]
(int64, the encoders' last input) gets its batch range in every bucket's profile, beside the tokens, with no rule
of its own: an input whose only dynamic dim is the batch is ranged like the tokens' batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from msvit_edge.bundle import GRAPHS, Bundle
from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.errors import MsvitEdgeError

Shape = tuple[int, ...]
ProfileShapes = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)

COMPARISON = "vit"  # the plain ViT of the same weights: optional, built only for bench's speedup


def stages(graphs: dict) -> list[str]:
    """The engines to build for ``graphs``: every MSViT stage, then the plain ViT where it is given."""
    return [*GRAPHS, *([COMPARISON] if COMPARISON in graphs else [])]


@dataclass(frozen=True)
class EngineShapes:
    """The shapes every engine is built for: each stage's inputs and the bucket plan.

    A dynamic dim (a name, as in a bundle manifest) on axis 0 is the batch, on axis 1 the tokens; static inputs
    (the tokenizer's threshold) get no profile entry.
    """

    plan: BucketPlan
    inputs: dict[str, dict[str, list[int | str]]]  # stage -> input name -> shape

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> EngineShapes:
        graphs = bundle.record.graphs
        return cls(bundle.plan, {s: {t.name: list(t.shape) for t in graphs[s].inputs} for s in stages(graphs)})

    @classmethod
    def standard(cls, plan: BucketPlan, embed_dim: int, image_shape: tuple[int, int, int]) -> EngineShapes:
        """The bundle contract's inputs (``msvit_edge.bundle``) for a model of this width and image size."""
        tokens = ["batch", "tokens", embed_dim]
        return cls(
            plan,
            {
                "tokenizer": {"images": ["batch", *image_shape], "threshold": []},
                "encoder": {"tokens": tokens},
                "encoder_masked": {"tokens": tokens, "mask": ["batch", "tokens"]},
                COMPARISON: {"images": ["batch", *image_shape]},
            },
        )

    def profiles(self, stage: str) -> list[ProfileShapes]:
        """The stage's optimisation profiles: one per bucket when it takes tokens, else one over the batch."""
        if stage not in self.inputs:
            raise MsvitEdgeError(f"no input shapes for the {stage} graph: the bundle's manifest does not list it")
        inputs = self.inputs[stage]
        has_tokens = any(len(s) > 1 and isinstance(s[1], str) for s in inputs.values())
        return [
            {n: _range(n, s, axes) for n, s in inputs.items() if _dynamic(s)} for axes in self.plan.ranges(has_tokens)
        ]


def _dynamic(shape: list[int | str]) -> bool:
    return any(isinstance(d, str) for d in shape)


def _range(name: str, shape: list[int | str], axes: dict[int, tuple[int, int, int]]) -> tuple:
    """(min, opt, max) shapes of one input: ``axes`` ranges its dynamic dims (batch, tokens), the rest is static."""
    out = []
    for i in range(3):
        dims = []
        for axis, d in enumerate(shape):
            if isinstance(d, str) and axes.get(axis) is None:
                raise MsvitEdgeError(f"input {name!r} has a dynamic dim {d!r} on axis {axis}: only batch and tokens")
            dims.append(axes[axis][i] if isinstance(d, str) else int(d))
        out.append(tuple(dims))
    return tuple(out)
