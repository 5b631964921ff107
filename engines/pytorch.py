"""PyTorch backend: the reference every other backend is compared with.

``TorchPipeline`` runs an ``MSViT`` through the same pipeline glue as the engines; ``CudaGraphTorchPipeline`` replays
its encoder as one CUDA graph per bucket and batch size on a GPU. Each pipeline's ``plain_vit`` is the plain ViT of
the same weights run the way that pipeline runs its encoder (eager, or one CUDA graph per batch size), the baseline
``bench`` times MSViT against.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.engine_folder import EngineDir
from msvit_edge.bundle.selection import Selection
from msvit_edge.bundle.validation import tolerance
from msvit_edge.engines.pipeline import Pipeline, Tokenized
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import sha256
from msvit_edge.model.checkpoint import EMBEDDED, demo_checkpoint, load_checkpoint
from msvit_edge.model.config import MSViTConfig
from msvit_edge.model.factory import create_model
from msvit_edge.model.msvit import MSViT


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
        cells = self.model.cell_index(out)  # a segmenter's; None for a classifier
        host = None if cells is None else cells.cpu().numpy()
        return Tokenized(out.tokens, out.counts.cpu().numpy(), out.probs.cpu().numpy(), host)

    def cut(self, tokens: Tensor, selection: Selection) -> Tensor:
        index = torch.from_numpy(selection.index).to(tokens.device)
        rows = tokens[:, : selection.rows] if len(selection.index) == len(tokens) else tokens[index, : selection.rows]
        return rows.contiguous()

    @torch.no_grad()
    def encode(self, tokens: Tensor, selection: Selection, cells: np.ndarray | None = None) -> np.ndarray:
        mask = selection.mask()
        mask_t = None if mask is None else torch.from_numpy(mask).to(self.device)
        cells_t = None if cells is None else torch.from_numpy(cells).to(self.device)
        return self.model.graph_logits(tokens, mask_t, cells_t).float().cpu().numpy()

    def plain_vit(self) -> Callable[[np.ndarray], np.ndarray]:
        """The plain ViT of the same weights on this device: every patch fine, no gate (images -> logits)."""
        return self._plain_vit

    @torch.no_grad()
    def _plain_vit(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        return self._vit(x).float().cpu().numpy()

    def _vit(self, images: Tensor) -> Tensor:
        """Images [b, C, H, W] -> logits [b, K] through every fine token (``PlainViTGraph`` of the export)."""
        return self.model.graph_logits(self.model.embed(images))


class _Graph(NamedTuple):
    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, ...]  # static inputs: (tokens [b, bucket max, D], bool mask[, cells]) or (images,)
    logits: Tensor  # [b, K] (a segmenter's [b, K, G, G]), the graph's static output


class CudaGraphTorchPipeline(TorchPipeline):
    """``TorchPipeline`` whose encoder replays a CUDA graph, one per (bucket, batch size), captured on first use.

    What changes from ``TorchPipeline``: every encoder call runs at its bucket's maximum with the key mask (a graph
    replays fixed shapes; all True where nothing is padded), so one graph serves every count in its bucket. At batch
    1 an eager ViT on a GPU waits on kernel launches more than on the GPU; a replay launches them all at once. The
    plain ViT (``plain_vit``) is one CUDA graph per batch size too: against an eager plain ViT, the launches saved
    by the graphs would count as MSViT's speedup. The tokenizer stays eager: its gate decides the shapes.

    Args:
        model: The model.
        plan: The bucket plan (the graphs' shapes).
        device: A CUDA device.
        batching: ``pad`` or ``split`` (see ``msvit_edge.bundle.selection``).
        warmup: Eager runs on a side stream before each capture (cuBLAS and attention kernels pick their
            workspaces outside the graph).
    """

    def __init__(
        self, model: MSViT, plan: BucketPlan, device: str = "cuda", batching: str | None = None, warmup: int = 3
    ):
        require_cuda_graphs(device)
        if plan is None:
            raise MsvitEdgeError("CUDA graphs need the bucket plan: one graph per bucket")
        super().__init__(model, plan, pad_to_bucket=True, device=device, batching=batching)
        self.warmup, self.graphs, self.vit_graphs, self.pool = warmup, {}, {}, None

    def deactivate(self) -> None:
        self.graphs, self.vit_graphs, self.pool = {}, {}, None

    @torch.no_grad()
    def encode(self, tokens: Tensor, selection: Selection, cells: np.ndarray | None = None) -> np.ndarray:
        key = (selection.bucket, len(selection.index))
        if key not in self.graphs:
            static = (torch.zeros_like(tokens), torch.ones(tokens.shape[:2], dtype=torch.bool, device=self.device))
            if cells is not None:
                static += (torch.zeros(cells.shape, dtype=torch.int64, device=self.device),)
            self.graphs[key] = self._capture(self.model.graph_logits, static)
        graph = self.graphs[key]
        graph.inputs[0].copy_(tokens)
        if cells is not None:
            graph.inputs[2].copy_(torch.from_numpy(cells))
        mask = selection.mask()
        if mask is None:
            graph.inputs[1].fill_(True)
        else:
            graph.inputs[1].copy_(torch.from_numpy(mask))
        graph.graph.replay()
        return graph.logits.float().cpu().numpy()

    @torch.no_grad()
    def _plain_vit(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
        if len(x) not in self.vit_graphs:
            self.vit_graphs[len(x)] = self._capture(self._vit, (torch.zeros_like(x, device=self.device),))
        graph = self.vit_graphs[len(x)]
        graph.inputs[0].copy_(x)
        graph.graph.replay()
        return graph.logits.float().cpu().numpy()

    def _capture(self, fn: Callable[..., Tensor], inputs: tuple[Tensor, ...]) -> _Graph:
        """Capture ``fn`` on static ``inputs`` (the PyTorch CUDA-graph recipe: warm up on a side stream first)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):  # one memory pool for all graphs: they never run at once
            logits = fn(*inputs)
        self.pool = graph.pool()
        return _Graph(graph, inputs, logits)


def require_cuda_graphs(device: str) -> None:
    """Refuse, in one line, a device where CUDA graphs cannot run."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise MsvitEdgeError(
            f"CUDA graphs need a CUDA GPU (device {device!r}, torch.cuda.is_available() is "
            f"{torch.cuda.is_available()}): use the torch backend without CUDA graphs"
        )


def torch_pipeline(
    source: Bundle | EngineDir, model: MSViT | None = None, device: str = "cpu", ckpt: str | None = None, **kw
) -> TorchPipeline:
    """``open_pipeline``'s ``torch`` backend: the bundle's own PyTorch model, eager, on ``device``.

    Args:
        source: The bundle (not an engine directory: PyTorch runs no engine).
        model: The model, when the caller has it; else ``bundle_model`` finds it (``ckpt``, the
            demo checkpoint or a random-weights preset) and checks it against the bundle's reference.
        device: ``cpu`` or a CUDA device.
        ckpt: The checkpoint the bundle was exported from (a bundle records its sha256, not where it lay).
        kw: ``pad_to_bucket``, ``batching``: see ``Pipeline``.
    """
    bundle = _bundle_only(source, "torch")
    return TorchPipeline(model or bundle_model(bundle, ckpt), bundle.plan, device=device, **kw)


def cuda_graph_pipeline(
    source: Bundle | EngineDir,
    model: MSViT | None = None,
    device: str = "cuda",
    batching: str | None = None,
    ckpt: str | None = None,
) -> CudaGraphTorchPipeline:
    """``open_pipeline``'s ``torch-cudagraphs`` backend: ``torch_pipeline`` with ``CudaGraphTorchPipeline``."""
    bundle = _bundle_only(source, "torch-cudagraphs")
    require_cuda_graphs(device)  # before the model is looked for: the usual reason this fails
    model = model or bundle_model(bundle, ckpt)
    return CudaGraphTorchPipeline(model, bundle.plan, device=device, batching=batching)


def _bundle_only(source: Bundle | EngineDir, backend: str) -> Bundle:
    if not isinstance(source, Bundle):
        raise MsvitEdgeError(f"the {backend} backend runs a bundle's model, not an engine directory", source.path)
    return source


def bundle_model(bundle: Bundle, ckpt: str | Path | None = None) -> MSViT:
    """The ``MSViT`` the bundle was exported from (``ckpt``, or an embedded demo checkpoint whose sha256 matches),
    checked against the bundle's stored reference."""
    source = bundle.record.source
    if "random_weights" in source:
        torch.manual_seed(0)  # as export built it
        model = create_model(MSViTConfig.from_dict(bundle.record.model)).eval()
    else:
        embedded = [demo_checkpoint(task) for task in EMBEDDED]
        model = load_checkpoint(_checkpoint(source, [*([Path(ckpt)] if ckpt else []), *embedded]))[0]
    _check_reproduces(model, bundle)
    return model


def _checkpoint(source: dict, candidates: list[Path]) -> Path:
    """The first candidate with the recorded sha256 (older bundles recorded a path: it is tried last)."""
    for path in (*candidates, Path(source["checkpoint"])):
        if path.is_file() and sha256(path) == source["sha256"]:
            return path
    raise MsvitEdgeError(
        f"the checkpoint this bundle was exported from ({Path(source['checkpoint']).name}, sha256 "
        f"{source['sha256'][:12]}...) is not here: pass it with --ckpt"
    )


def answers(model, bundle: Bundle, x: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's logits, counts and gate probabilities on preprocessed images ``x`` at the bundle's threshold."""
    out = TorchPipeline(model).run_batched(x, bundle.threshold, batch)
    return out.logits, out.counts, out.probs


def _check_reproduces(model, bundle: Bundle) -> None:
    stored = bundle.reference()
    logits, counts, _ = answers(model, bundle, bundle.preprocess(stored.images[:16]))
    diff = float(np.abs(logits - stored.logits[:16]).max())
    if not (np.array_equal(counts, stored.counts[:16]) and diff <= tolerance("fp32").atol):  # the same weights
        raise MsvitEdgeError(f"the model found for this bundle does not reproduce its reference (max abs {diff:.2e})")
