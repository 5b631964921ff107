"""The ONNX graphs of a bundle: the PyTorch modules traced, ``torch.onnx`` export, simplification.

Two graphs, because data-dependent token selection inside a TensorRT engine breaks its transformer fusion and CUDA
graphs: a static-shape tokenizer (the gate's decision is a TopK partition, not a NonZero) and a dynamic-N encoder
(with and without a mask); and the same weights as a plain ViT, for ``bench``'s comparison.

A segmenter's graphs (``MSViTSegmenter``) add one static-shape input: the tokenizer also returns ``cells`` [B, G*G],
the row covering each fine cell, which both encoders take last; every graph's ``logits`` are per fine cell
[B, K, G, G] (``msvit_edge.bundle.dense`` upsamples them to pixels on the host).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from msvit_edge.bundle import io_description
from msvit_edge.bundle.manifest import Graph
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.export.config import OPSET, SIMPLIFIERS, ExportConfig
from msvit_edge.io import sha256
from msvit_edge.model.msvit import MSViT
from msvit_edge.model.segmenter import MSViTSegmenter

log = logging.getLogger(__name__)

PROTOBUF_LIMIT = 2**31 - 2**24  # an ONNX file is one protobuf (2 GiB at most); headroom for the graph itself


class TokenizerGraph(nn.Module):
    """MSViT.tokenize as a graph: (images, threshold) -> (tokens, counts, probs, order[, cells])."""

    def __init__(self, model: MSViT):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, threshold: Tensor) -> tuple[Tensor, ...]:
        out = self.model.tokenize(images, threshold=threshold)
        cells = self.model.cell_index(out)
        return tuple(out) if cells is None else (*out, cells)


class PlainViTGraph(nn.Module):
    """The same weights as a standard ViT (every token fine, no gate): images -> logits. ``bench`` times MSViT
    against it on the same backend and precision."""

    def __init__(self, model: MSViT):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.graph_logits(self.model.embed(images))


class EncoderGraph(nn.Module):
    """MSViT.encode as a graph: tokens (+ mask) -> logits."""

    def __init__(self, model: MSViT):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.model.encode(tokens, mask)


class DenseEncoderGraph(nn.Module):
    """MSViTSegmenter.encode_cells as a graph: tokens, cells -> logits per fine cell."""

    def __init__(self, model: MSViTSegmenter):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, cells: Tensor) -> Tensor:
        return self.model.encode_cells(tokens, None, cells)


class MaskedDenseEncoderGraph(DenseEncoderGraph):
    """The same with the key mask: tokens, mask, cells -> logits per fine cell."""

    def forward(self, tokens: Tensor, mask: Tensor, cells: Tensor) -> Tensor:
        return self.model.encode_cells(tokens, mask, cells)


def export_graphs(model: MSViT, folder: Path, cfg: ExportConfig) -> dict[str, Graph]:
    """Write tokenizer.onnx, encoder.onnx, encoder_masked.onnx and vit.onnx; returns their manifest entries."""
    vit, B = model.vit_config, Dim("batch", min=1, max=cfg.max_batch)
    lo, hi = vit.token_range
    N = Dim("tokens", min=lo, max=hi)
    # example values strictly inside the dynamic ranges: 0/1 or a bound would be specialised into the graph
    images = torch.zeros(2, vit.in_chans, vit.img_size, vit.img_size)
    tokens, mask = torch.zeros(2, (lo + hi) // 2, vit.embed_dim), torch.ones(2, (lo + hi) // 2, dtype=torch.bool)
    specs = {
        "tokenizer": (
            TokenizerGraph(model),
            (images, torch.tensor(0.5)),
            ["images", "threshold"],
            ["tokens", "counts", "probs", "order"],
            {"images": {0: B}, "threshold": None},
        ),
        "encoder": (EncoderGraph(model), (tokens,), ["tokens"], ["logits"], {"tokens": {0: B, 1: N}}),
        "vit": (PlainViTGraph(model), (images,), ["images"], ["logits"], {"images": {0: B}}),
        "encoder_masked": (
            EncoderGraph(model),
            (tokens, mask),
            ["tokens", "mask"],
            ["logits"],
            {"tokens": {0: B, 1: N}, "mask": {0: B, 1: N}},
        ),
    }
    if isinstance(model, MSViTSegmenter):
        specs = _dense_specs(specs, model, vit.num_patches, B)
    # weights beside each graph (name.onnx.data) only when they cannot fit in one protobuf
    external = sum(t.numel() * t.element_size() for t in model.state_dict().values()) >= PROTOBUF_LIMIT
    graphs = {}
    for name, (module, args, inputs, outputs, dynamic) in specs.items():
        path = folder / f"{name}.onnx"
        data = f"{path.name}.data" if external else None
        onnx_export(module, args, path, inputs, outputs, dynamic, external)
        nodes = simplify(path, cfg.simplifier, data)
        entry = io_description(path) | {"file": path.name, "nodes": nodes, "sha256": sha256(path)}
        entry |= {"data": data, "data_sha256": sha256(folder / data)} if data else {}
        graphs[name] = Graph.from_dict(name, entry)
        files = [path.name, *([data] if data else [])]
        size = sum((folder / f).stat().st_size for f in files)
        log.info(f"  {' + '.join(files)}: {nodes} nodes, {size / 1e6:.2f} MB ({cfg.simplifier})")
    return graphs


def _dense_specs(specs: dict, model: MSViTSegmenter, cells: int, B: Dim) -> dict:
    """A segmenter's graphs: the tokenizer also returns ``cells``, both encoders take it last (rows 0..1, inside any
    traced token count)."""
    index = torch.zeros(2, cells, dtype=torch.int64)
    tok, enc, vit, masked = (specs[k] for k in ("tokenizer", "encoder", "vit", "encoder_masked"))
    out = {"tokenizer": (*tok[:3], [*tok[3], "cells"], tok[4]), "vit": vit}
    for name, spec, graph in (("encoder", enc, DenseEncoderGraph), ("encoder_masked", masked, MaskedDenseEncoderGraph)):
        out[name] = (graph(model), (*spec[1], index), [*spec[2], "cells"], spec[3], spec[4] | {"cells": {0: B}})
    return out


def onnx_export(
    module: nn.Module,
    args: tuple,
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict,
    external: bool = False,
) -> None:
    # torch.onnx logs a warning per torchvision op it cannot register; torchvision is deliberately absent
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            external_data=external,
            verbose=False,
        )
    program.save(str(path), external_data=external)


def simplify(path: Path, simplifier: str, data: str | None = None) -> int:
    """Simplify ``path`` in place, keeping symbolic dims (never overwrite_input_shapes); returns the node count.

    ``data``: write the weights to this file beside the graph (a model over 2 GB); the side files the graph came with
    are replaced.
    """
    import onnx  # lazy: onnx is heavy
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, uses_external_data  # lazy

    model = onnx.load(str(path), load_external_data=False)
    sides = {path.parent / ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    load_external_data_for_model(model, str(path.parent))
    if simplifier == "onnxslim":
        import onnxslim  # lazy: heavy, and only for this simplifier

        model = onnxslim.slim(model)
    elif simplifier == "onnxsim":
        import onnxsim  # lazy: heavy, and only for this simplifier

        model, ok = onnxsim.simplify(model, check_n=0)
        if not ok:
            raise MsvitEdgeError("onnxsim could not simplify the graph", path)
    elif simplifier != "none":
        raise MsvitEdgeError(f"unknown simplifier {simplifier!r}; choose one of {', '.join(SIMPLIFIERS)}")
    for side in sides:
        side.unlink()  # onnx.save writes into an existing data file rather than replacing it
    if data:
        onnx.save(model, str(path), save_as_external_data=True, location=data)
        onnx.checker.check_model(str(path))  # by path: the checker cannot take an in-memory model over 2 GB
    else:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return len(model.graph.node)
