"""``msvit-edge export``: a trained MSViT -> an export bundle (see ``msvit_edge.bundle``), validated in ONNX Runtime.

Two graphs, because data-dependent token selection inside a TensorRT engine breaks its transformer fusion and CUDA
graphs: a static-shape tokenizer (the gate's decision is a TopK partition, not a NonZero) and a dynamic-N encoder.
Buckets for TensorRT profiles are planned from the gate's token-count histogram on calibration images.

Every step is checked before the bundle appears: the ONNX pipeline in ONNX Runtime must reproduce PyTorch's token
counts exactly and its FP32 logits within ``msvit_edge.bundle.validation``'s FP32 tolerance; otherwise the export fails
with the numbers and writes nothing.

The steps, one module each: ``config`` (``ExportConfig``), ``planning`` (the model, its threshold and the bucket
plan), ``reference`` (PyTorch's stored answers, and the bundle held to them), ``graphs`` (ONNX export and
simplification) and ``manifest`` (the bundle manifest record).
"""

from __future__ import annotations

import dataclasses
import logging

from msvit_edge.bundle import FOLDER, Bundle, validation
from msvit_edge.export.config import OPSET, SIMPLIFIERS, ExportConfig
from msvit_edge.export.graphs import (
    PROTOBUF_LIMIT,
    EncoderGraph,
    PlainViTGraph,
    TokenizerGraph,
    export_graphs,
    onnx_export,
    simplify,
)
from msvit_edge.export.manifest import build_manifest, export_record
from msvit_edge.export.planning import (
    choose_threshold,
    dataset,
    describe_plan,
    gate_probs,
    load_model,
    plan_for,
    token_counts,
)
from msvit_edge.export.reference import make_reference, validate_bundle
from msvit_edge.io import atomic_dir, check_output, sha256
from msvit_edge.model.checkpoint import load_checkpoint

__all__ = [
    "OPSET",
    "PROTOBUF_LIMIT",
    "SIMPLIFIERS",
    "EncoderGraph",
    "ExportConfig",
    "PlainViTGraph",
    "TokenizerGraph",
    "build_manifest",
    "choose_threshold",
    "dataset",
    "describe_plan",
    "export",
    "export_graphs",
    "export_record",
    "gate_probs",
    "load_checkpoint",
    "load_model",
    "make_reference",
    "onnx_export",
    "plan_for",
    "sha256",
    "simplify",
    "token_counts",
    "validate_bundle",
]
log = logging.getLogger(__name__)


def export(cfg: ExportConfig) -> Bundle:
    """Export as ``cfg`` says; returns the validated bundle."""
    check_output(cfg.out, FOLDER, cfg.force)
    model, source = load_model(cfg)
    model.set_export(True)
    threshold = choose_threshold(model, cfg)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    log.info(f"export: {source} ({params:.2f}M params), threshold {threshold:.4g}")
    plan, calib_sha256 = plan_for(model, cfg, threshold)
    log.info(describe_plan(plan))
    reference = make_reference(
        model, cfg.calib, cfg.val_images, threshold, cfg.skip_corrupt, cfg.random_weights, cfg.ignore_index
    )
    with atomic_dir(cfg.out, FOLDER, cfg.force) as tmp:
        graphs = export_graphs(model, tmp, cfg)
        reference.save(tmp / "reference.npz")
        manifest = build_manifest(model, source, plan, threshold, graphs, cfg, calib_sha256)
        manifest.write(tmp / "manifest.json")
        report = validate_bundle(Bundle(tmp), reference)
        dataclasses.replace(manifest, validation=report).write(tmp / "manifest.json")
        log.info(validation.describe(report, "ONNX Runtime"))
        validation.check(report, validation.tolerance("fp32", reference.dense), "ONNX Runtime")
    log.info(f"bundle: {cfg.out}")
    return Bundle(cfg.out)
