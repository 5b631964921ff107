"""Does a source still classify like PyTorch: top-1 against the labels; with a PyTorch reference, top-1 agreement,
logit error and token-count agreement, overall and per bucket; and the verdict (its precision's tolerance, as
``build`` applies it, then the CI gates)."""

from __future__ import annotations

import numpy as np

from msvit_edge.bundle import validation
from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.engines.pipeline import PipelineOutput
from msvit_edge.measure.config import BenchConfig
from msvit_edge.measure.images import Images


def accuracy(out: PipelineOutput, images: Images, plan: BucketPlan) -> dict:
    """Top-1 against labels; with a reference, agreement, logit error and count agreement overall and per bucket."""
    result = {"top1": float((out.logits.argmax(1) == images.labels).mean()), "n": len(out.logits)}
    ref = images.reference
    if ref is None:
        return result | {"reference": None}
    agree = validation.agreement(out, ref, images.labels)
    buckets = np.array([plan.index(int(c)) for c in ref.counts])
    return result | {
        "reference_top1": agree.reference_top1,
        "agreement": agree.top1_agreement,
        "counts_agreement": agree.counts_agreement,
        "counts_differ": agree.counts_differ,
        "logits": validation.compare(out.logits, ref.logits),
        "per_bucket": [_bucket(out, images, buckets == k) for k in range(len(plan.buckets))],
    }


def _bucket(out: PipelineOutput, images: Images, where: np.ndarray) -> dict:
    """The images whose reference token count falls in one bucket."""
    if not where.any():
        return {"images": 0}
    agree = validation.agreement(out, images.reference, images.labels, where)
    return {
        "images": agree.images,
        "top1": agree.top1,
        "agreement": agree.top1_agreement,
        "counts_agreement": agree.counts_agreement,
        "max_abs": agree.max_abs,
    }


def verdict(acc: dict, info: dict, cfg: BenchConfig) -> str | None:
    """Why the source fails: its precision's tolerance against PyTorch (``validation.verdict``, as build applies
    it) or a CI gate; None when it passes or there is no PyTorch reference to hold it to."""
    reason = None
    if "logits" in acc:  # compared with PyTorch's answers on the same images
        tolerance, top1 = validation.TOLERANCES[info["precision"]], (acc["top1"], acc["reference_top1"])
        reason = validation.verdict(
            acc["logits"], acc["counts_differ"], acc["n"], tolerance, info["latency_only"], top1
        )
    if reason is None and cfg.min_accuracy is not None and not acc["top1"] >= cfg.min_accuracy:
        reason = f"top-1 {100 * acc['top1']:.2f}% is below --min-accuracy {100 * cfg.min_accuracy:.2f}%"
    if reason is None and cfg.min_agreement is not None and not acc.get("agreement", 0.0) >= cfg.min_agreement:
        reason = f"top-1 agreement with PyTorch is below --min-agreement {100 * cfg.min_agreement:.2f}%"
    return reason


def accuracy_line(acc: dict, info: dict) -> str:
    """The console line: top-1 on n images beside PyTorch's (none for random weights, as the table shows none),
    agreement with PyTorch, and the criterion ``verdict`` held the source to."""
    if info["latency_only"]:
        line = f"  accuracy: none (random weights, a latency-only bundle); {acc['n']} images"
    else:
        line = f"  accuracy: top-1 {_pct(acc['top1'])} on {acc['n']} images"
        line += "" if acc.get("reference_top1") is None else f" (PyTorch {_pct(acc['reference_top1'])})"
    if "logits" not in acc:
        return line + "; no PyTorch reference to compare with"
    if info["latency_only"]:
        line += f"; logits' cosine similarity with PyTorch's >= {acc['logits']['min_cosine']:.4f}"
    else:
        line += f"; top-1 agreement with PyTorch {_pct(acc['agreement'])}"
    tolerance = validation.TOLERANCES[info["precision"]]
    return line + f"; held to: {validation.criterion(tolerance, info['latency_only'])}"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"
