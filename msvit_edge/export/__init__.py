"""``msvit-edge export``: a trained MSViT -> an export bundle (see ``msvit_edge.bundle``), validated in ONNX Runtime.

Two graphs, because data-dependent token selection inside a TensorRT engine breaks its transformer fusion and CUDA
graphs: a static-shape tokenizer (the gate's decision is a TopK partition, not a NonZero) and a dynamic-N encoder.
Buckets for TensorRT profiles are planned from the gate's token-count histogram on calibration images.

Every step is checked before the bundle appears: the ONNX pipeline in ONNX Runtime must reproduce PyTorch's token
counts exactly and its FP32 logits within ``msvit_edge.bundle.validation``'s FP32 tolerance; otherwise the export fails
with the numbers and writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from msvit_edge.bundle import FOLDER, SCHEMA_VERSION, Bundle, Reference, io_description, validation
from msvit_edge.bundle.buckets import BucketPlan, plan_buckets
from msvit_edge.bundle.preprocess import preprocess, to_uint8
from msvit_edge.bundle.preprocess import record as preprocessing_record
from msvit_edge.data import data_name, open_dataset, random_subset
from msvit_edge.errors import MsvitEdgeError, require
from msvit_edge.io import atomic_dir, check_output, sha256, write_json
from msvit_edge.machine.environment import package_version
from msvit_edge.model.checkpoint import demo_checkpoint, load_checkpoint
from msvit_edge.model.config import MSViTConfig, preset
from msvit_edge.model.flops import encoder_macs
from msvit_edge.model.msvit import MSViT, check_threshold

log = logging.getLogger(__name__)

OPSET = 20  # ModelOpt calibrates at 20; TensorRT 10.x parses it; no ONNX Attention op (opset 23) to trip ORT
SIMPLIFIERS = ("onnxslim", "onnxsim", "none")
PROTOBUF_LIMIT = 2**31 - 2**24  # an ONNX file is one protobuf (2 GiB at most); headroom for the graph itself


@dataclass
class ExportConfig:
    out: str = "bundle"
    ckpt: str | None = None  # None: the embedded demo checkpoint (or a random-weights preset)
    preset: str | None = None  # with random_weights: a model of this preset, for latency only
    random_weights: bool = False
    fine_fraction: float | None = None  # set the threshold so this share of calibration regions is fine
    buckets: int = 5  # one TensorRT profile each; why 5: docs/measurements.md
    calib: str = "fashion-mnist-scenes"  # images whose token counts plan the buckets (training split)
    calib_images: int = 2000
    val_images: int = 128  # validation images (test split) stored with PyTorch's answers
    threshold: float | None = None  # gate threshold baked into the manifest (default: the checkpoint's)
    simplifier: str = "onnxslim"
    max_batch: int = 64
    force: bool = False
    skip_corrupt: bool = False  # ImageFolder --calib: report and skip unreadable images and non-image files

    def __post_init__(self) -> None:
        checks = {
            f"--simplifier must be one of {', '.join(SIMPLIFIERS)}, got {self.simplifier!r}": self.simplifier
            in SIMPLIFIERS,
            f"--buckets must be >= 1, got {self.buckets}": self.buckets >= 1,
            f"--calib-images must be >= 1, got {self.calib_images}": self.calib_images >= 1,
            f"--val-images must be >= 1, got {self.val_images}": self.val_images >= 1,
            f"max_batch must be >= 2 (the batch dim is traced at 2), got {self.max_batch}": self.max_batch >= 2,
            "--random-weights needs --preset (which model to build)": self.preset is not None
            or not self.random_weights,
            "--preset builds a model with random weights: add --random-weights (or pass --ckpt)": self.preset is None
            or self.random_weights,
            "--ckpt and --random-weights exclude each other": not (self.ckpt and self.random_weights),
            "--fine-fraction and --threshold exclude each other": self.fine_fraction is None or self.threshold is None,
            f"--fine-fraction must be in (0, 1), got {self.fine_fraction}": self.fine_fraction is None
            or 0 < self.fine_fraction < 1,
        }
        require(checks)


class TokenizerGraph(nn.Module):
    """MSViT.tokenize as a graph: (images, threshold) -> (tokens, counts, probs, order)."""

    def __init__(self, model: MSViT):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, threshold: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(self.model.tokenize(images, threshold=threshold))


class PlainViTGraph(nn.Module):
    """The same weights as a standard ViT (every token fine, no gate): images -> logits. ``bench`` times MSViT
    against it on the same backend and precision."""

    def __init__(self, model: MSViT):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.encode(self.model.embed(images))


class EncoderGraph(nn.Module):
    """MSViT.encode as a graph: tokens (+ mask) -> logits."""

    def __init__(self, model: MSViT):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.model.encode(tokens, mask)


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
    reference = make_reference(model, cfg.calib, cfg.val_images, threshold, cfg.skip_corrupt)
    with atomic_dir(cfg.out, FOLDER, cfg.force) as tmp:
        graphs = export_graphs(model, tmp, cfg)
        reference.save(tmp / "reference.npz")
        manifest = build_manifest(model, source, plan, threshold, graphs, cfg, calib_sha256)
        write_json(tmp / "manifest.json", manifest)
        manifest["validation"] = validate_bundle(Bundle(tmp), reference)
        write_json(tmp / "manifest.json", manifest)
        log.info(validation.describe(manifest["validation"], "ONNX Runtime"))
        validation.check(manifest["validation"], validation.TOLERANCES["fp32"], "ONNX Runtime")
    log.info(f"bundle: {cfg.out}")
    return Bundle(cfg.out)


def load_model(cfg: ExportConfig) -> tuple[MSViT, Path | str]:
    """The model to export and where it came from: a checkpoint, the demo, or a random-weights preset."""
    if cfg.random_weights:
        torch.manual_seed(0)
        return MSViT(MSViTConfig(preset(cfg.preset))).eval(), f"random weights ({cfg.preset})"
    ckpt = Path(cfg.ckpt) if cfg.ckpt else demo_checkpoint()
    return load_checkpoint(ckpt)[0], ckpt


def choose_threshold(model: MSViT, cfg: ExportConfig) -> float:
    """The gate threshold: given, the checkpoint's, or the one that makes ``fine_fraction`` of the calibration
    images' regions fine (a random-weights model has no trained threshold)."""
    if cfg.fine_fraction is None:
        return check_threshold(model.config.threshold if cfg.threshold is None else cfg.threshold)
    probs = gate_probs(model, cfg.calib, cfg.calib_images, cfg.skip_corrupt)
    return float(np.quantile(probs, 1 - cfg.fine_fraction))


# ---- buckets and reference -------------------------------------------------------------------------------------


def dataset(model: MSViT, data: str, split: str, n: int, skip_corrupt: bool = False) -> Dataset:
    """``n`` images of ``data`` drawn at random, at the model's size (scenes are rendered at it)."""
    vit = model.vit_config
    return random_subset(open_dataset(data, split, vit.img_size, vit.mean, vit.std, skip_corrupt=skip_corrupt), n)


@torch.no_grad()
def gate_probs(model: MSViT, data: str, n: int, skip_corrupt: bool = False) -> np.ndarray:
    """The gate's fine probabilities [n, R] on ``n`` training images."""
    loader = DataLoader(dataset(model, data, "train", n, skip_corrupt), batch_size=250)
    return torch.cat([model.gate(x).sigmoid() for x, _ in loader]).numpy()


@torch.no_grad()
def token_counts(
    model: MSViT, data: str, split: str, n: int, threshold: float, skip_corrupt: bool = False
) -> tuple[np.ndarray, str]:
    """The gate's token counts on ``n`` images of a data set, drawn at random, and the sha256 of those images."""
    loader = DataLoader(dataset(model, data, split, n, skip_corrupt), batch_size=250)
    digest, counts = hashlib.sha256(), []
    for x, _ in loader:
        digest.update(x.numpy().tobytes())
        counts.append(model.tokenize(x, threshold=threshold).counts)
    return torch.cat(counts).numpy(), digest.hexdigest()


def plan_for(model: MSViT, cfg: ExportConfig, threshold: float) -> tuple[BucketPlan, str]:
    """The bucket plan from the calibration images' token counts, and those images' sha256."""
    counts, digest = token_counts(model, cfg.calib, "train", cfg.calib_images, threshold, cfg.skip_corrupt)
    vit = model.vit_config
    macs = functools.partial(encoder_macs, vit)
    return plan_buckets(counts, cfg.buckets, macs, *vit.token_range, (1, 1, cfg.max_batch)), digest


def describe_plan(plan: BucketPlan) -> str:
    rows = [
        f"  bucket {i}: tokens {b.min}..{b.max} (opt {b.opt}), {100 * b.share:.1f}% of calibration images"
        for i, b in enumerate(plan.buckets)
    ]
    head = (
        f"buckets: {len(plan.buckets)} from {sum(plan.histogram.values())} calibration images, tokens mean "
        f"{plan.mean_count:.1f} (min {min(plan.histogram)}, max {max(plan.histogram)}); expected padding overhead "
        f"{100 * plan.expected_overhead:.2f}%"
    )
    histogram = " ".join(f"{n}:{k}" for n, k in sorted(plan.histogram.items()))
    wrapped = textwrap.wrap(histogram, 116, initial_indent="  histogram (tokens:images) ", subsequent_indent="    ")
    return "\n".join([head, *rows, *wrapped])


@torch.no_grad()
def make_reference(model: MSViT, data: str, n: int, threshold: float, skip_corrupt: bool = False) -> Reference:
    """PyTorch's answers on ``n`` test-split images, stored as uint8 so every backend starts from the same pixels."""
    vit = model.vit_config
    images, labels = next(iter(DataLoader(dataset(model, data, "test", n, skip_corrupt), batch_size=n)))
    pixels = to_uint8(images.numpy(), vit.mean, vit.std)
    x = torch.from_numpy(preprocess(pixels, vit.mean, vit.std))
    out = model.tokenize(x, threshold=threshold)
    logits = torch.cat([model.encode(out.tokens[i : i + 1, : out.counts[i]]) for i in range(len(x))])
    return Reference(pixels, labels.numpy().astype(np.int64), logits.numpy(), out.counts.numpy(), out.probs.numpy())


# ---- graphs ----------------------------------------------------------------------------------------------------


def export_graphs(model: MSViT, folder: Path, cfg: ExportConfig) -> dict[str, dict]:
    """Write tokenizer.onnx, encoder.onnx, encoder_masked.onnx and vit.onnx; returns their I/O descriptions."""
    from torch.export import Dim

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
    # weights beside each graph (name.onnx.data) only when they cannot fit in one protobuf
    external = sum(t.numel() * t.element_size() for t in model.state_dict().values()) >= PROTOBUF_LIMIT
    graphs = {}
    for name, (module, args, inputs, outputs, dynamic) in specs.items():
        path = folder / f"{name}.onnx"
        data = f"{path.name}.data" if external else None
        onnx_export(module, args, path, inputs, outputs, dynamic, external)
        nodes = simplify(path, cfg.simplifier, data)
        graphs[name] = io_description(path) | {"file": path.name, "nodes": nodes, "sha256": sha256(path)}
        graphs[name] |= {"data": data, "data_sha256": sha256(folder / data)} if data else {}
        files = [path.name, *([data] if data else [])]
        size = sum((folder / f).stat().st_size for f in files)
        log.info(f"  {' + '.join(files)}: {nodes} nodes, {size / 1e6:.2f} MB ({cfg.simplifier})")
    return graphs


def onnx_export(
    module: nn.Module,
    args: tuple,
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict,
    external: bool = False,
) -> None:
    import warnings

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
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    sides = {path.parent / ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    load_external_data_for_model(model, str(path.parent))
    if simplifier == "onnxslim":
        import onnxslim

        model = onnxslim.slim(model)
    elif simplifier == "onnxsim":
        import onnxsim

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


# ---- manifest and validation -----------------------------------------------------------------------------------


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
    graphs: dict,
    cfg: ExportConfig,
    calib_sha256: str,
) -> dict:
    vit = model.vit_config
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model.config.to_dict(),
        "source": {"random_weights": cfg.preset}
        if cfg.random_weights
        else {"checkpoint": Path(ckpt).name, "sha256": sha256(ckpt)},  # a name: paths are the exporting machine's
        "latency_only": cfg.random_weights,  # random weights: accuracy means nothing, latency is real
        "opset": OPSET,
        "graphs": graphs,
        "buckets": plan.to_dict(),
        "threshold": threshold,
        "tokens": vit.token_range._asdict() | {"candidates": vit.num_candidates},
        "preprocessing": preprocessing_record(vit.img_size, vit.mean, vit.std),
        "export": export_record(cfg, calib_sha256),
        "versions": {
            name: package_version(name)
            for name in ("msvit-edge", "torch", "onnx", "onnxruntime", cfg.simplifier)
            if name != "none"
        }
        | {"python": platform.python_version()},
    }


def validate_bundle(bundle: Bundle, reference: Reference) -> dict:
    """The bundle's FP32 graphs in ONNX Runtime against PyTorch's reference (``msvit_edge.bundle.validation``)."""
    from msvit_edge.engines.ort import OnnxRuntimePipeline

    with OnnxRuntimePipeline(bundle) as pipe:
        return validation.validate(pipe, reference, bundle.preprocess(reference.images), bundle.threshold)
