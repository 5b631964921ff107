"""torch-tensorrt backend (optional extra): the PyTorch pipeline with its encoder compiled by torch-tensorrt.

torch-tensorrt's dynamo path gives each input one (min, opt, max) range, not several profiles, so this compiles
the masked encoder once per bucket, each with its bucket's ``torch_tensorrt.Input`` ranges (the same shapes as the
TensorRT engine's profiles), and the selection's bucket picks the module. The tokenizer stays eager PyTorch: its
gate decides the shapes and stays FP32. The plain ViT of the same weights (``plain_vit``, bench's baseline) is
compiled the same way, over the plan's batch range, on first use.

FP32 only, TF32 off (as the TensorRT build's ``--noTF32``): FP16 and INT8 are built by the tensorrt backend from the
precision pass's graphs, with their precision read back and validated; nothing here compiles or checks them.

x86 with CUDA only in practice: torch-tensorrt pins one torch minor and one TensorRT minor, and has no Jetson Orin
release after 2.8.

Classifiers only: a segmenter (``MSViTSegmenter``) is refused in one line. Its encoders take the tokenizer's
``cells`` and return cell logits; the tensorrt backend builds those from the bundle's graphs, with profiles that hold
``cells``, and ONNX Runtime runs them anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch
from torch import Tensor, nn

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.selection import Selection
from msvit_edge.engines.pytorch import TorchPipeline
from msvit_edge.engines.trt_shapes import EngineShapes, ProfileShapes
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.model.msvit import MSViT
from msvit_edge.model.segmenter import MSViTSegmenter


def import_torch_tensorrt() -> ModuleType:
    """The ``torch_tensorrt`` module, or a one-line error that says how to install it."""
    try:
        import torch_tensorrt  # lazy: an optional extra, x86 with CUDA only
    except ImportError as e:
        raise MsvitEdgeError(
            f"this needs torch-tensorrt ({e}): pip install '.[torch-tensorrt]' in the msvit-edge clone on x86 with"
            " CUDA (it pins one torch and one TensorRT version; no Jetson Orin release after 2.8)"
            "; run msvit-edge doctor"
        ) from None
    return torch_tensorrt


def bucket_inputs(plan: BucketPlan, embed_dim: int) -> list[ProfileShapes]:
    """Per bucket, (min, opt, max) shapes of the masked encoder's ``tokens`` and ``mask``.

    The TensorRT profiles' shapes, but for the batch's opt: torch.export specialises a dim traced at 1, and
    torch-tensorrt traces at opt, so opt batch is at least 2.
    """
    return EngineShapes.standard(_traceable(plan), embed_dim, (3, 1, 1)).profiles("encoder_masked")


def vit_inputs(plan: BucketPlan, image_shape: tuple[int, int, int]) -> ProfileShapes:
    """(min, opt, max) shapes of the plain ViT's ``images``: the TensorRT ``vit.plan`` profile, opt batch >= 2."""
    return EngineShapes.standard(_traceable(plan), 1, image_shape).profiles("vit")[0]


def _traceable(plan: BucketPlan) -> BucketPlan:
    """The plan with its opt batch raised to 2 where its batch range allows (a batch range of 1 stays 1)."""
    lo, opt, hi = plan.batch
    return dataclasses.replace(plan, batch=(lo, min(max(2, opt), hi), hi))


class _MaskedEncoder(nn.Module):
    def __init__(self, model: MSViT):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        return self.model.encode(tokens, mask)


class _PlainViT(nn.Module):
    def __init__(self, model: MSViT):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.encode(self.model.embed(images))


class TorchTensorRTPipeline(TorchPipeline):
    """``TorchPipeline`` whose encoder runs a torch-tensorrt module per bucket (compiled on ``activate``).

    What changes from ``TorchPipeline``: the encoder always takes the key mask (all True where nothing is padded),
    so one compiled module per bucket serves masked and unmasked calls.

    Args:
        model: The model.
        plan: The bucket plan (one compiled module per bucket).
        device: A CUDA device.
        pad_to_bucket: See ``Pipeline``.
        batching: See ``Pipeline``.
    """

    def __init__(self, model: MSViT, plan: BucketPlan, device: str = "cuda", pad_to_bucket: bool = False, **kw):
        if isinstance(model, MSViTSegmenter):  # first: no GPU is needed to know
            raise MsvitEdgeError(
                f"torch-tensorrt compiles classifiers only, not this segmenter ({model.vit_config.num_classes} classes "
                "per fine cell): use the tensorrt or onnxruntime backend"
            )
        if torch.device(device).type != "cuda" or not torch.cuda.is_available():
            raise MsvitEdgeError(f"torch-tensorrt needs a CUDA GPU (device {device!r}); use the torch backend")
        if plan is None:
            raise MsvitEdgeError("torch-tensorrt compiles one module per bucket: it needs the bucket plan")
        super().__init__(model, plan, pad_to_bucket, device, **kw)
        self.compiled: dict[int, nn.Module] = {}
        self.compiled_vit: nn.Module | None = None

    def activate(self) -> None:
        ttrt = import_torch_tensorrt()
        encoder = _MaskedEncoder(self.model).eval()
        for index, shapes in enumerate(bucket_inputs(self.plan, self.model.vit_config.embed_dim)):
            tokens, mask = shapes["tokens"], shapes["mask"]
            inputs = [
                ttrt.Input(min_shape=tokens[0], opt_shape=tokens[1], max_shape=tokens[2], dtype=torch.float32),
                ttrt.Input(min_shape=mask[0], opt_shape=mask[1], max_shape=mask[2], dtype=torch.bool),
            ]
            # FP32 is torch-tensorrt's default precision, but its default also lets TF32 in
            self.compiled[index] = ttrt.compile(encoder, ir="dynamo", inputs=inputs, disable_tf32=True)

    def deactivate(self) -> None:
        self.compiled, self.compiled_vit = {}, None

    def plain_vit(self) -> Callable[[np.ndarray], np.ndarray]:
        """The plain ViT compiled by torch-tensorrt over the plan's batch range (compiled here, on the first call)."""
        if self.compiled_vit is None:
            ttrt = import_torch_tensorrt()
            cfg = self.model.vit_config
            lo, opt, hi = vit_inputs(self.plan, (cfg.in_chans, cfg.img_size, cfg.img_size))["images"]
            inputs = [ttrt.Input(min_shape=lo, opt_shape=opt, max_shape=hi, dtype=torch.float32)]
            vit = _PlainViT(self.model).eval()
            self.compiled_vit = ttrt.compile(vit, ir="dynamo", inputs=inputs, disable_tf32=True)
        return super().plain_vit()

    def _vit(self, images: Tensor) -> Tensor:
        return self.compiled_vit(images)

    @torch.no_grad()
    def encode(self, tokens: Tensor, selection: Selection, cells: np.ndarray | None = None) -> np.ndarray:
        mask = selection.mask()  # cells: always None here (a segmenter is refused)
        if mask is None:
            mask_t = torch.ones(tokens.shape[:2], dtype=torch.bool, device=self.device)
        else:
            mask_t = torch.from_numpy(mask).to(self.device)
        return self.compiled[selection.bucket](tokens, mask_t).float().cpu().numpy()
