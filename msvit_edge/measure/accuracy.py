"""Does a source still classify like PyTorch: top-1 against the labels; with a PyTorch reference, top-1 agreement,
logit error and token-count agreement, overall and per bucket; and the verdict (its precision's tolerance, as
``build`` applies it, then the CI gates).

A segmentation source (``dense_accuracy``) is scored on label maps instead: mIoU, pixel accuracy and per-class IoU,
and the gate's boundary recall (the share of coarse regions holding a class boundary that it tokenized fine), its own
and PyTorch's; per-pixel agreement with PyTorch; held the same way by its mIoU and per-pixel agreement, to the dense
tolerance (``validation.DENSE_TOLERANCES``). Cell logits [N, K, G, G] become pixel labels through
``msvit_edge.bundle.dense``, in chunks: never the pixel logits of every image at once."""

from __future__ import annotations

import numpy as np

from msvit_edge.bundle import dense, validation
from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.metrics import boundary_recall
from msvit_edge.engines.pipeline import PipelineOutput
from msvit_edge.measure.config import BenchConfig
from msvit_edge.measure.images import Images


def accuracy(out: PipelineOutput, images: Images, plan: BucketPlan, threshold: float) -> dict:
    """Top-1 against labels; with a reference, agreement, logit error and count agreement overall and per bucket.
    Label maps: mIoU, pixel accuracy, per-class IoU and boundary recall instead (``dense_accuracy``; the gate's
    decisions at ``threshold``)."""
    if images.dense:
        return dense_accuracy(out, images, plan, threshold)
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


SCORES = ("miou", "pixel_accuracy", "iou", "boundary_recall")  # each also as reference_<name>, PyTorch's


def scores(logits: np.ndarray, labels: np.ndarray, fine: np.ndarray, boundary: np.ndarray) -> dict:
    """One run's mIoU, pixel accuracy, per-class IoU (None: a class neither labelled nor predicted) and boundary
    recall (None: no region holds a boundary), with the counts the recall comes from."""
    s = dense.scores(dense.pixel_labels(logits, labels.shape[-1]), labels, logits.shape[1])
    hits, total = boundary_recall(fine, boundary)
    return {
        "miou": _number(s.miou),
        "pixel_accuracy": _number(s.pixel_accuracy),
        "iou": [_number(v) for v in s.iou],
        "boundary_recall": hits / total if total else None,
        "boundary_fine": hits,
        "boundary_regions": total,
    }


def dense_accuracy(out: PipelineOutput, images: Images, plan: BucketPlan, threshold: float) -> dict:
    """A segmentation source's scores against the label maps and, with a reference, PyTorch's (``reference_``),
    per-pixel agreement, logit error and count agreement, overall and per bucket. A region is fine where its gate
    probability exceeds ``threshold``, as the tokenizer decides (logits above logit(threshold))."""
    result = {"metric": validation.DENSE_METRIC, "n": len(out.logits)}
    result |= scores(out.logits, images.labels, dense.fine_regions(out.probs, threshold), images.boundary)
    ref = images.reference
    if ref is None:
        return result | {"reference": None}
    theirs = scores(ref.logits, images.labels, dense.fine_regions(ref.probs, threshold), images.boundary)
    result |= {f"reference_{k}": theirs[k] for k in SCORES}
    agree = validation.agreement(out, ref, size=images.labels.shape[-1])
    buckets = np.array([plan.index(int(c)) for c in ref.counts])
    return result | {
        "agreement": agree.top1_agreement,  # per pixel
        "counts_agreement": agree.counts_agreement,
        "counts_differ": agree.counts_differ,
        "logits": validation.compare(out.logits, ref.logits) | {"pixel_agreement": agree.top1_agreement},
        "per_bucket": [_dense_bucket(out, images, buckets == k) for k in range(len(plan.buckets))],
    }


def _dense_bucket(out: PipelineOutput, images: Images, where: np.ndarray) -> dict:
    """A segmentation source's images whose reference token count falls in one bucket."""
    if not where.any():
        return {"images": 0}
    agree = validation.agreement(out, images.reference, images.labels, where)
    return {
        "images": agree.images,
        "miou": _number(agree.miou),
        "pixel_accuracy": _number(agree.top1),
        "agreement": agree.top1_agreement,
        "counts_agreement": agree.counts_agreement,
        "max_abs": agree.max_abs,
    }


def _number(value: float | None) -> float | None:
    """JSON has no NaN: an undefined score is null."""
    return None if value is None or np.isnan(value) else float(value)


def verdict(acc: dict, info: dict, cfg: BenchConfig) -> str | None:
    """Why the source fails: its precision's tolerance against PyTorch (``validation.verdict``, as build applies
    it) or a CI gate; None when it passes or there is no PyTorch reference to hold it to."""
    reason, is_dense = None, acc.get("metric") == validation.DENSE_METRIC
    metric, score = ("mIoU", "miou") if is_dense else ("top-1", "top1")
    if "logits" in acc:  # compared with PyTorch's answers on the same images
        tolerance = validation.tolerance(info["precision"], is_dense)
        top1 = (acc[score], acc[f"reference_{score}"])
        reason = validation.verdict(
            acc["logits"],
            acc["counts_differ"],
            acc["n"],
            tolerance,
            info["latency_only"],
            None if None in top1 else top1,
        )
    if reason is None and cfg.min_accuracy is not None and not (acc[score] or 0.0) >= cfg.min_accuracy:
        reason = f"{metric} {_pct(acc[score] or 0.0)} is below --min-accuracy {_pct(cfg.min_accuracy)}"
    if reason is None and cfg.min_agreement is not None and not acc.get("agreement", 0.0) >= cfg.min_agreement:
        what = "per-pixel agreement" if is_dense else "top-1 agreement"
        reason = f"{what} with PyTorch is below --min-agreement {100 * cfg.min_agreement:.2f}%"
    return reason


def accuracy_line(acc: dict, info: dict) -> str:
    """The console line: top-1 on n images beside PyTorch's (none for random weights, as the table shows none),
    agreement with PyTorch, and the criterion ``verdict`` held the source to."""
    is_dense = acc.get("metric") == validation.DENSE_METRIC
    if info["latency_only"]:
        line = f"  accuracy: none (random weights, a latency-only bundle); {acc['n']} images"
    elif is_dense:
        line = f"  accuracy: {dense_scores(acc)} on {acc['n']} images"
    else:
        line = f"  accuracy: top-1 {_pct(acc['top1'])} on {acc['n']} images"
        line += "" if acc.get("reference_top1") is None else f" (PyTorch {_pct(acc['reference_top1'])})"
    if "logits" not in acc:
        return line + "; no PyTorch reference to compare with"
    if info["latency_only"]:
        line += f"; logits' cosine similarity with PyTorch's >= {acc['logits']['min_cosine']:.4f}"
    else:
        line += f"; {'per-pixel' if is_dense else 'top-1'} agreement with PyTorch {_pct(acc['agreement'])}"
    tolerance = validation.tolerance(info["precision"], is_dense)
    return line + f"; held to: {validation.criterion(tolerance, info['latency_only'], is_dense)}"


def dense_scores(acc: dict) -> str:
    """ "mIoU 41.20% (PyTorch 41.20%), pixel accuracy ..., boundary recall ...": the source's, beside PyTorch's."""
    names = {"miou": "mIoU", "pixel_accuracy": "pixel accuracy", "boundary_recall": "boundary recall"}
    words = []
    for key, name in names.items():
        theirs = f"reference_{key}"
        words.append(f"{name} {_pct(acc[key])}" + (f" (PyTorch {_pct(acc[theirs])})" if theirs in acc else ""))
    return ", ".join(words)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
