"""What ``eval`` reports: each setting's results (``Tally``; ``SegmentationTally`` for a segmenter) summarised as
top-1 (or mIoU, pixel accuracy, per-class IoU and boundary recall), token counts and GMACs, the gate's fine regions
scored against the object's box, and the report's Markdown page and trade-off plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from msvit_edge.bundle.metrics import boundary_recall, confusion_matrix, json_number, segmentation_scores
from msvit_edge.data import IGNORE_INDEX, boundary_regions
from msvit_edge.model.config import SEGMENTATION
from msvit_edge.model.flops import coarse_pool_macs, encoder_macs, msvit_macs, patch_embed_macs, vit_macs
from msvit_edge.model.msvit import MSViT


@dataclass
class Tally:
    """Per-image results of one setting, concatenated over batches."""

    correct: list[Tensor] = field(default_factory=list)
    counts: list[Tensor] = field(default_factory=list)
    fine: list[Tensor] = field(default_factory=list)  # [B, R] fine decisions

    def add(self, logits: Tensor, labels: Tensor, counts: Tensor, fine: Tensor) -> None:
        self.correct.append((logits.argmax(1).cpu() == labels).float())
        self.counts.append(counts.cpu().float())
        self.fine.append(fine.cpu())

    def scores(self) -> dict:
        return {"top1": float(torch.cat(self.correct).mean())}


@dataclass
class SegmentationTally(Tally):
    """A segmenter's results: the pixels' confusion matrix, the boundary regions (``boundary_regions`` of the label
    maps) and how many of them were tokenized fine, and the first ``keep`` predicted label maps (for overlays)."""

    num_classes: int = 0
    ignore_index: int = IGNORE_INDEX
    region: int = 16  # px side of a coarse region, the gate's unit
    keep: int = 0
    confusion: np.ndarray | None = None  # [K, K] pixels, row: labelled class, column: predicted
    boundary: tuple[int, int] = (0, 0)  # (boundary regions tokenized fine, boundary regions)
    predicted: list[np.ndarray] = field(default_factory=list)

    def add(self, logits: Tensor, labels: Tensor, counts: Tensor, fine: Tensor) -> None:
        self.counts.append(counts.cpu().float())
        self.fine.append(fine.cpu())
        pred, truth = logits.argmax(1).cpu().numpy(), labels.cpu().numpy()  # [B, S, S]
        confusion = confusion_matrix(pred, truth, self.num_classes, self.ignore_index)
        self.confusion = confusion if self.confusion is None else self.confusion + confusion
        edges = boundary_regions(truth, self.region, self.ignore_index).reshape(len(truth), -1)  # [B, R]
        hits, total = boundary_recall(fine.cpu().numpy(), edges)
        self.boundary = (self.boundary[0] + hits, self.boundary[1] + total)
        self.predicted += list(pred[: max(0, self.keep - len(self.predicted))])

    def scores(self) -> dict:
        s = segmentation_scores(self.confusion)
        (hits, total), fine = self.boundary, int(torch.cat(self.fine).sum())
        return {
            "miou": json_number(s.miou),
            "pixel_accuracy": json_number(s.pixel_accuracy),
            "iou": [json_number(v) for v in s.iou],  # null: a class neither labelled nor predicted
            "boundary_recall": hits / total if total else None,  # share of boundary regions tokenized fine
            "boundary_precision": hits / fine if fine else None,  # share of fine regions that hold a boundary
            "boundary_fine": hits,
            "boundary_regions": total,
            "confusion": self.confusion.tolist(),
        }


def summary(model: MSViT, name: str, tally: Tally) -> dict:
    """One setting's scores (``Tally.scores``), token-count statistics and GMACs per image."""
    counts = torch.cat(tally.counts).numpy()
    return tally.scores() | {
        "tokens_mean": float(counts.mean()),
        "tokens_std": float(counts.std()),
        "tokens_min": int(counts.min()),
        "tokens_max": int(counts.max()),
        "tokens_p10_p50_p90": [float(np.percentile(counts, q)) for q in (10, 50, 90)],
        "token_ratio": float(counts.mean() / model.vit_config.token_range.max),
        "gmacs": float(np.mean([_macs(model, name, n) for n in counts])) / 1e9,
    }


def _macs(model: MSViT, name: str, tokens: float) -> float:
    """MACs per image as each setting would be deployed: all-fine/all-coarse need no gate or second embedding."""
    vit, task = model.vit_config, model.config.task
    if name == "all-fine":
        return vit_macs(vit, task=task)
    if name == "all-coarse":
        return patch_embed_macs(vit, model.num_regions) + coarse_pool_macs(vit) + encoder_macs(vit, tokens, task)
    return msvit_macs(vit, model.config.gate, tokens, task)


def object_scores(tallies: dict[str, Tally], on_object: Tensor) -> dict:
    """Each setting's fine regions against the object's box, and the gate's precision against a random gate's."""
    scores = {}
    for name in tallies:
        fine = torch.cat(tallies[name].fine)
        hits = (fine & on_object).sum().item()
        scores[name] = {"recall": hits / on_object.sum().item(), "precision": hits / max(1, fine.sum().item())}
    lift = scores["msvit"]["precision"] / max(1e-9, scores["random"]["precision"])
    return {"object": scores | {"precision_vs_random": lift, "object_region_share": float(on_object.float().mean())}}


def boundary_scores(tallies: dict[str, SegmentationTally], regions: int) -> dict:
    """The gate's boundary recall against a random gate's at the same token counts, and how common boundaries are."""
    recall = {name: tally.boundary[0] / max(1, tally.boundary[1]) for name, tally in tallies.items()}
    return {
        "boundary": {
            "recall_vs_random": recall["msvit"] / recall["random"] if recall["random"] else None,
            "boundary_region_share": tallies["msvit"].boundary[1] / max(1, regions),
        }
    }


def markdown(report: dict) -> str:
    """The report as a Markdown page."""
    lines = [
        f"# MSViT evaluation: {report['checkpoint']} on {report['data']} ({report['split']}, "
        f"{report['images']} images)",
        "",
    ]
    if report.get("task") == SEGMENTATION:
        return "\n".join(lines + _segmentation_lines(report)) + "\n"
    lines += [
        "| setting | top-1 | mean tokens | tokens p10/p50/p90 | token ratio | GMACs/image |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in report["settings"].items():
        lines.append(f"| {name} | {100 * s['top1']:.2f}% | {_token_cells(s)} |")
    if "object" in report:
        o = report["object"]
        lines += ["", "| gate | object recall | object precision |", "|---|---|---|"]
        lines += [f"| {n} | {o[n]['recall']:.3f} | {o[n]['precision']:.3f} |" for n in report["settings"] if n in o]
        lines += [
            "",
            f"Fine regions touch the object {o['precision_vs_random']:.2f}x as often as a random gate's "
            f"(object regions are {100 * o['object_region_share']:.1f}% of all regions).",
        ]
    return "\n".join(lines) + "\n"


def _segmentation_lines(report: dict) -> list[str]:
    """A segmenter's settings table, its boundary sentence and the per-class IoU of the main settings."""
    lines = [
        "| setting | mIoU | pixel accuracy | boundary recall | mean tokens | tokens p10/p50/p90 | token ratio "
        "| GMACs/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in report["settings"].items():
        lines.append(
            f"| {name} | {_percent(s['miou'])} | {_percent(s['pixel_accuracy'])} | {_share(s['boundary_recall'])} "
            f"| {_token_cells(s)} |"
        )
    b, main = report["boundary"], [n for n in ("msvit", "all-fine", "all-coarse", "random") if n in report["settings"]]
    lines += [
        "",
        f"Boundary recall: the share of the coarse regions holding a class boundary (here "
        f"{100 * b['boundary_region_share']:.1f}% of all regions) that got fine tokens. The gate's over a random "
        f"gate's at the same token counts: {_ratio(b['recall_vs_random'])}.",
        "",
        "| class | " + " | ".join(main) + " |",
        "|---|" + "---|" * len(main),
    ]
    for k, name in enumerate(report["classes"]):
        lines.append(f"| {name} | " + " | ".join(_percent(report["settings"][n]["iou"][k]) for n in main) + " |")
    return lines


def _token_cells(s: dict) -> str:
    """The token and cost cells both settings tables end in: mean tokens, p10/p50/p90, token ratio, GMACs/image."""
    p = "/".join(f"{v:.0f}" for v in s["tokens_p10_p50_p90"])
    return f"{s['tokens_mean']:.1f} (sd {s['tokens_std']:.1f}) | {p} | {s['token_ratio']:.3f} | {s['gmacs']:.4f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def plot_tradeoff(report: dict, path: Path) -> None:
    """Accuracy vs GMACs: the threshold sweep with the default threshold and the baselines marked."""
    import matplotlib  # lazy: slow to import, and only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, metric = report["settings"], "miou" if report.get("task") == SEGMENTATION else "top1"
    sweep = sorted((v["gmacs"], 100 * (v[metric] or 0)) for k, v in s.items() if k.startswith("t="))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(*zip(*sweep, strict=True), "o-", color="tab:blue", label="MSViT threshold sweep")
    for name, style in (
        ("msvit", "*"),
        ("all-fine", "s"),
        ("all-coarse", "v"),
        ("random", "x"),
        ("object-oracle", "D"),
    ):
        if name in s:
            ax.plot(s[name]["gmacs"], 100 * (s[name][metric] or 0), style, markersize=10, label=name)
    ylabel = "mIoU (%)" if metric == "miou" else "top-1 (%)"
    ax.set(xlabel="GMACs per image", ylabel=ylabel, title="Accuracy vs compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
