"""PyTorch backend: the reference every other backend is compared with.

``TorchPipeline`` runs an ``MSViT`` through the same pipeline glue as the engines; ``TorchRunner`` is a Polygraphy
runner over any ``nn.Module`` graph (tokenizer or encoder), so Polygraphy's ``Comparator`` can set PyTorch against
ONNX Runtime or TensorRT runners.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from torch import Tensor, nn

from msvit_edge.buckets import BucketPlan
from msvit_edge.engines.pipeline import Pipeline, Tokenized
from msvit_edge.msvit import MSViT
from msvit_edge.selection import Selection


class TorchPipeline(Pipeline):
    """An ``MSViT`` on numpy in, numpy out; tokens stay on ``device`` between the stages."""

    def __init__(
        self, model: MSViT, plan: BucketPlan | None = None, pad_to_bucket: bool = False, device: str = "cpu", **kw
    ):
        super().__init__(plan, pad_to_bucket, **kw)
        self.model, self.device = model.eval().to(device), torch.device(device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def tokenize(self, images: np.ndarray, threshold: float) -> Tokenized:
        out = self.model.tokenize(torch.from_numpy(images).to(self.device), threshold=threshold)
        return Tokenized(out.tokens, out.counts.cpu().numpy(), out.probs.cpu().numpy())

    def cut(self, tokens: Tensor, selection: Selection) -> Tensor:
        index = torch.from_numpy(selection.index).to(tokens.device)
        rows = tokens[:, : selection.rows] if len(selection.index) == len(tokens) else tokens[index, : selection.rows]
        return rows.contiguous()

    @torch.no_grad()
    def encode(self, tokens: Tensor, selection: Selection) -> np.ndarray:
        mask = selection.mask()
        mask_t = None if mask is None else torch.from_numpy(mask).to(self.device)
        return self.model.encode(tokens, mask_t).float().cpu().numpy()


class TorchRunner(BaseRunner):
    """Polygraphy runner for a PyTorch module whose positional inputs and outputs are named.

    Args:
        module: The module; called with the inputs in ``inputs`` order.
        inputs: Input name -> (numpy dtype, shape); a dynamic dim is a name or None (as in a bundle's manifest).
        output_names: Names of the module's outputs, in order.
        name: Runner name in Polygraphy's reports.
    """

    def __init__(
        self,
        module: nn.Module,
        inputs: dict[str, tuple[str, Sequence]],
        output_names: Sequence[str],
        name: str = "pytorch",
    ):
        super().__init__(name=name, prefix="pytorch-runner")
        self.module, self.inputs_meta, self.output_names = module.eval(), dict(inputs), list(output_names)

    def activate_impl(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        pass

    def get_input_metadata_impl(self):
        from polygraphy.common import TensorMetadata

        metadata = TensorMetadata()
        for name, (dtype, shape) in self.inputs_meta.items():
            metadata.add(name, dtype=np.dtype(dtype), shape=list(shape))
        return metadata

    @torch.no_grad()
    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict:
        start = time.perf_counter()
        outputs = self.module(*(torch.from_numpy(np.asarray(feed_dict[n])) for n in self.inputs_meta))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        self.inference_time = time.perf_counter() - start  # Polygraphy requires it
        return OrderedDict((n, o.numpy()) for n, o in zip(self.output_names, outputs, strict=True))
