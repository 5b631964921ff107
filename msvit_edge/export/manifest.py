"""The bundle manifest an export writes (``msvit_edge.bundle.manifest.BundleManifest``): names and digests, never
where files lay on the exporting machine."""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path

from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.manifest import BundleManifest, Graph, Preprocessing
from msvit_edge.bundle.preprocess import record as preprocessing_record
from msvit_edge.data import data_name
from msvit_edge.export.config import OPSET, ExportConfig
from msvit_edge.io import sha256
from msvit_edge.machine.environment import package_version
from msvit_edge.model.msvit import MSViT


def export_record(cfg: ExportConfig, calib_sha256: str) -> dict:
    """The export's settings as the manifest keeps them: file and folder names and digests, not where they lay on
    the exporting machine (``calib_sha256``: of the images that planned the buckets)."""
    record = {k: v for k, v in asdict(cfg).items() if k not in ("out", "force")}
    return record | {
        "ckpt": None if cfg.ckpt is None else Path(cfg.ckpt).name,
        "calib": data_name(cfg.calib),
        "calib_sha256": calib_sha256,
    }


def build_manifest(
    model: MSViT,
    ckpt: Path | str,
    plan: BucketPlan,
    threshold: float,
    graphs: dict[str, Graph],
    cfg: ExportConfig,
    calib_sha256: str,
) -> BundleManifest:
    """The manifest of an export (without its validation, which needs the bundle written first)."""
    vit = model.vit_config
    return BundleManifest(
        model=model.config.to_dict(),
        graphs=graphs,
        buckets=plan,
        threshold=threshold,
        preprocessing=Preprocessing.from_dict(preprocessing_record(vit.img_size, vit.mean, vit.std)),
        latency_only=cfg.random_weights,  # random weights: accuracy means nothing, latency is real
        # a name: paths are the exporting machine's
        source={"random_weights": cfg.preset}
        if cfg.random_weights
        else {"checkpoint": Path(ckpt).name, "sha256": sha256(ckpt)},
        opset=OPSET,
        tokens=vit.token_range._asdict() | {"candidates": vit.num_candidates},
        export=export_record(cfg, calib_sha256),
        versions={
            name: package_version(name)
            for name in ("msvit-edge", "torch", "onnx", "onnxruntime", cfg.simplifier)
            if name != "none"
        }
        | {"python": platform.python_version()},
    )
