"""``msvit-edge eval``: accuracy against compute for a trained MSViT, with the baselines that make it meaningful.

One pass over the data runs every setting on each batch:
- ``msvit``: the gate at the checkpoint's default threshold;
- ``t=0.10`` ... : a threshold sweep (accuracy vs GMACs without retraining);
- ``all-fine`` (threshold 0: the plain ViT with the same weights) and ``all-coarse`` (threshold 1);
- ``random``: for each image, as many fine regions as ``msvit`` chose, but at random positions, so the token counts
  (and MACs) are exactly the same and only the gate's choice of WHERE differs.
On data sets that know where the object is (Fashion-MNIST scenes) the gate is scored against the object's box:
recall = share of object regions tokenized fine; precision = share of fine regions that touch the object.

A segmentation checkpoint (its config says so) is scored on label maps instead (``open_segmentation_dataset``): mIoU,
pixel accuracy and per-class IoU (``msvit_edge.bundle.metrics``), and the gate's boundary recall: the share of the
coarse regions holding a class boundary (``boundary_regions``) that it tokenized fine. Its overlays put the gate's
decisions, the predicted and the ground-truth masks side by side.

Outputs (written atomically into ``out``): ``report.json``, ``report.md``, ``tradeoff.png`` (accuracy vs GMACs) and
``overlays/*.png`` (images with their fine regions drawn).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from msvit_edge.bundle.preprocess import to_uint8
from msvit_edge.data import (
    IGNORE_INDEX,
    SceneConfig,
    open_dataset,
    open_segmentation_dataset,
    random_subset,
    region_overlap,
    split,
    unwrap,
)
from msvit_edge.errors import MsvitEdgeError, require
from msvit_edge.io import FolderKind, atomic_dir, check_output, write_json
from msvit_edge.measure.eval_report import (
    SegmentationTally,
    Tally,
    boundary_scores,
    markdown,
    object_scores,
    plot_tradeoff,
    summary,
)
from msvit_edge.measure.overlay import write_overlays, write_segmentation_overlays
from msvit_edge.model.checkpoint import load_model
from msvit_edge.model.config import SEGMENTATION
from msvit_edge.model.msvit import MSViT
from msvit_edge.training.train import resolve_device

__all__ = ["FOLDER", "SWEEP", "EvalConfig", "evaluate", "markdown", "object_regions"]  # cli imports markdown here

SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FOLDER = FolderKind(
    "an eval report", "report.json", lambda r: "settings" in r and "engines" not in r, ("report.*", "*.png", "overlays")
)


@dataclass
class EvalConfig:
    ckpt: str | None = None  # None: the embedded demo checkpoint
    data: str = "fashion-mnist-scenes"
    split: str = "test"  # or "train", or "val": the items the checkpoint's training held out for validation
    out: str = "runs/eval"
    thresholds: tuple[float, ...] = SWEEP
    batch_size: int = 250
    limit: int | None = None  # evaluate N items drawn at random (seeded): data sets may be sorted by class
    overlays: int = 8
    seed: int = 0  # random-gate baseline
    device: str = "cpu"
    force: bool = False
    skip_corrupt: bool = False  # ImageFolder: report and skip unreadable images instead of stopping
    ignore_index: int = IGNORE_INDEX  # segmentation: the mask label of unlabelled pixels

    def __post_init__(self) -> None:
        require(
            {f"--split must be one of train, test, val, got {self.split!r}": self.split in ("train", "test", "val")}
        )


def evaluate(cfg: EvalConfig) -> dict:
    """Evaluate as ``cfg`` says, write the report files, and return the report."""
    check_output(cfg.out, FOLDER, cfg.force)
    device = resolve_device(cfg.device)
    model, meta = load_model(cfg.ckpt)
    model.to(device)
    dataset = random_subset(_dataset(cfg, model, meta), cfg.limit)
    segmenting = model.config.task == SEGMENTATION
    on_object = None if segmenting else object_regions(dataset, model)
    settings = _settings(model, cfg.thresholds, oracle=on_object is not None)
    tallies = _run(model, dataset, settings, cfg, on_object)
    report = {
        "checkpoint": cfg.ckpt or "embedded demo",
        "trained_with": meta.get("train"),
        "task": model.config.task,
        "data": cfg.data,
        "split": cfg.split,
        "images": len(dataset),
        "config": asdict(cfg),
        "settings": {name: summary(model, name, t) for name, t in tallies.items()},
    }
    if on_object is not None:
        report |= object_scores(tallies, on_object)
    if segmenting:
        classes = getattr(unwrap(dataset)[0], "classes", ())
        names = [classes[k] if k < len(classes) else f"class {k}" for k in range(model.vit_config.num_classes)]
        report |= {"classes": names, "ignore_index": cfg.ignore_index}
        report |= boundary_scores(tallies, len(dataset) * model.num_regions)
    with atomic_dir(cfg.out, FOLDER, cfg.force) as tmp:
        write_json(tmp / "report.json", report)
        (tmp / "report.md").write_text(markdown(report))
        plot_tradeoff(report, tmp / "tradeoff.png")
        _overlays(model, dataset, tallies["msvit"], tmp / "overlays", cfg.overlays)
    return report


def _dataset(cfg: EvalConfig, model: MSViT, meta: dict) -> Dataset:
    """The split to evaluate; "val" rebuilds the validation items ``train`` held out, from its recorded settings."""
    if cfg.split != "val":
        return _open(cfg, model, cfg.split, None, cfg.skip_corrupt)
    run, where = meta.get("train"), cfg.ckpt or "the embedded demo checkpoint"
    if not run or run.get("val_size", 0) < 1:
        raise MsvitEdgeError("records no training run with a validation split, so --split val is unknown", where)
    if cfg.data != run["data"] and Path(cfg.data).resolve() != Path(run["data"]).resolve():
        raise MsvitEdgeError(f"was trained on {run['data']}; --split val needs that --data, not {cfg.data}", where)
    scene = SceneConfig(**run["scene"])  # and the same items: training's corrupt-image skipping decides the indices
    full = _open(cfg, model, "train", scene, run["skip_corrupt"])
    return split(full, run["val_size"], run["seed"])[1]


def _open(cfg: EvalConfig, model: MSViT, part: str, scene: SceneConfig | None, skip_corrupt: bool) -> Dataset:
    """Split ``part`` of ``cfg.data`` as the model's task reads it: labels, or label maps for a segmenter."""
    vit = model.vit_config
    if model.config.task == SEGMENTATION:
        return open_segmentation_dataset(
            cfg.data, part, vit.img_size, vit.mean, vit.std, vit.num_classes, cfg.ignore_index, scene
        )
    return open_dataset(cfg.data, part, vit.img_size, vit.mean, vit.std, scene, skip_corrupt=skip_corrupt)


def _settings(model: MSViT, thresholds: tuple[float, ...], oracle: bool) -> dict[str, float | str]:
    """Setting name -> gate threshold, or where its decisions come from ("random", "oracle").

    "random": the gate's number of fine regions per image at random positions. "oracle" (where the data set knows
    the object's box): fine exactly where a region touches the box -- not a gate, a diagnostic: the accuracy a
    perfectly semantic gate would buy at its token count. If it is no better than a random gate's, the backbone
    does not reward fine tokens on the object, and neither will the gate's training signal.
    """
    settings: dict[str, float | str] = {"msvit": model.config.threshold, "all-fine": 0.0, "all-coarse": 1.0}
    settings |= {"random": "random"} | ({"object-oracle": "oracle"} if oracle else {})
    return settings | {f"t={t:.2f}": t for t in thresholds}


@torch.no_grad()
def _run(
    model: MSViT, dataset: Dataset, settings: dict[str, float | str], cfg: EvalConfig, on_object: Tensor | None
) -> dict[str, Tally]:
    console = Console(stderr=True)  # a bar on a terminal only: elsewhere it would leave an empty line before an error
    model.eval()
    tallies = {name: _tally(model, cfg) for name in settings}
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size)
    for b, (images, labels) in enumerate(
        track(
            loader,
            description=f"eval {len(settings)} settings",
            transient=True,
            console=console,
            disable=not console.is_terminal,
        )
    ):
        images = images.to(cfg.device)
        gate_fine = None
        for name, how in settings.items():
            decisions = None
            if how == "random":
                decisions = _random_like(gate_fine, generator).to(cfg.device)
            elif how == "oracle":
                decisions = on_object[b * cfg.batch_size : b * cfg.batch_size + len(images)].to(cfg.device)
            threshold = None if isinstance(how, str) else how
            out = model.tokenize(images, threshold=threshold, decisions=decisions)
            fine = model.fine_regions(out)
            gate_fine = fine if name == "msvit" else gate_fine
            logits = model.encode_selection(out)  # [B, K], or pixel logits [B, K, S, S] for a segmenter
            if not torch.isfinite(logits).all():  # argmax would call NaN logits class 0: a silent wrong score
                where = cfg.ckpt or "the embedded demo checkpoint"
                raise MsvitEdgeError(f"gives NaN or infinite logits ({name}, batch {b}): NaN weights?", where)
            tallies[name].add(logits, labels, out.counts, fine)
    return tallies


def _tally(model: MSViT, cfg: EvalConfig) -> Tally:
    """An empty tally for one setting, of the model's task."""
    vit = model.vit_config
    if model.config.task != SEGMENTATION:
        return Tally()
    return SegmentationTally(
        num_classes=vit.num_classes, ignore_index=cfg.ignore_index, region=2 * vit.patch_size, keep=cfg.overlays
    )


def _random_like(fine: Tensor, generator: torch.Generator) -> Tensor:
    """Random decisions with the same number of fine regions per image as ``fine`` [B, R]."""
    k = fine.sum(1, keepdim=True).cpu()
    ranks = torch.rand(fine.shape, generator=generator).argsort(1).argsort(1)
    return ranks < k


def object_regions(dataset: Dataset, model: MSViT) -> Tensor | None:
    """Which regions touch the object's box [N, R] (bool), where the data set knows the box (scenes); else None."""
    base, indices = unwrap(dataset)
    if not hasattr(base, "box"):
        return None
    region = 2 * model.vit_config.patch_size
    return torch.from_numpy(
        np.stack([region_overlap(base.box(i), model.vit_config.img_size, region).ravel() for i in indices])
    )


def _overlays(model: MSViT, dataset: Dataset, tally: Tally, folder: Path, n: int) -> None:
    """The gate's decisions on the first ``n`` images, one PNG each (``overlay.write_overlays``, no sheet); for a
    segmenter, beside the predicted and the ground-truth masks."""
    vit, items = model.vit_config, [dataset[i] for i in range(min(n, len(dataset)))]
    pixels = [to_uint8(image[None].numpy(), vit.mean, vit.std)[0] for image, _ in items]
    fine = torch.cat(tally.fine)[: len(items)].numpy()
    if isinstance(tally, SegmentationTally):
        truth = [labels.numpy() for _, labels in items]
        write_segmentation_overlays(
            pixels, fine, tally.predicted, truth, 2 * vit.patch_size, folder, tally.ignore_index
        )
    else:
        write_overlays(pixels, fine, 2 * vit.patch_size, folder, sheet=False)
