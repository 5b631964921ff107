"""What ``eval`` reports: each setting's per-image results (``Tally``) summarised as top-1, token counts and GMACs,
the gate's fine regions scored against the object's box, and the report's Markdown page and trade-off plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from msvit_edge.model.flops import encoder_macs, msvit_macs, patch_embed_macs, vit_macs
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


def summary(model: MSViT, name: str, tally: Tally) -> dict:
    """One setting's top-1, token-count statistics and GMACs per image."""
    counts = torch.cat(tally.counts).numpy()
    return {
        "top1": float(torch.cat(tally.correct).mean()),
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
    vit = model.vit_config
    if name == "all-fine":
        return vit_macs(vit)
    if name == "all-coarse":
        return patch_embed_macs(vit, model.num_regions) + encoder_macs(vit, tokens)
    return msvit_macs(vit, model.config.gate, tokens)


def object_scores(tallies: dict[str, Tally], on_object: Tensor) -> dict:
    """Each setting's fine regions against the object's box, and the gate's precision against a random gate's."""
    scores = {}
    for name in tallies:
        fine = torch.cat(tallies[name].fine)
        hits = (fine & on_object).sum().item()
        scores[name] = {"recall": hits / on_object.sum().item(), "precision": hits / max(1, fine.sum().item())}
    lift = scores["msvit"]["precision"] / max(1e-9, scores["random"]["precision"])
    return {"object": scores | {"precision_vs_random": lift, "object_region_share": float(on_object.float().mean())}}


def markdown(report: dict) -> str:
    """The report as a Markdown page."""
    lines = [
        f"# MSViT evaluation: {report['checkpoint']} on {report['data']} ({report['split']}, "
        f"{report['images']} images)",
        "",
        "| setting | top-1 | mean tokens | tokens p10/p50/p90 | token ratio | GMACs/image |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in report["settings"].items():
        p = "/".join(f"{v:.0f}" for v in s["tokens_p10_p50_p90"])
        lines.append(
            f"| {name} | {100 * s['top1']:.2f}% | {s['tokens_mean']:.1f} (sd {s['tokens_std']:.1f}) | {p} "
            f"| {s['token_ratio']:.3f} | {s['gmacs']:.4f} |"
        )
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


def plot_tradeoff(report: dict, path: Path) -> None:
    """Accuracy vs GMACs: the threshold sweep with the default threshold and the baselines marked."""
    import matplotlib  # lazy: slow to import, and only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["settings"]
    sweep = sorted((v["gmacs"], 100 * v["top1"]) for k, v in s.items() if k.startswith("t="))
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
            ax.plot(s[name]["gmacs"], 100 * s[name]["top1"], style, markersize=10, label=name)
    ax.set(xlabel="GMACs per image", ylabel="top-1 (%)", title="Accuracy vs compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
