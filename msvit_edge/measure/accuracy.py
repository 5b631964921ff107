"""Does a source still classify like PyTorch: top-1 against the labels; with a PyTorch reference, top-1 agreement,
logit error and token-count agreement, overall and per bucket; and the verdict (its precision's tolerance, as
``build`` applies it, then the CI gates).

A segmentation source is scored on label maps instead: mIoU, pixel accuracy and per-class IoU,
and the gate's boundary recall (the share of coarse regions holding a class boundary that it tokenized fine), its own
and PyTorch's; per-pixel agreement with PyTorch; held the same way by its mIoU and per-pixel agreement, to the dense
tolerance (``validation.DENSE_TOLERANCES``). Cell logits [N, K, G, G] become pixel labels through
``msvit_edge.bundle.dense``, in chunks: never the pixel logits of every image at once."""

from __future__ import annotations

import numpy as np

from msvit_edge.bundle import dense, validation
from msvit_edge.bundle.buckets import BucketPlan
from msvit_edge.bundle.metrics import boundary_recall, json_number
from msvit_edge.engines.pipeline import PipelineOutput
from msvit_edge.measure.config import BenchConfig
from msvit_edge.measure.images import Images


def accuracy(out: PipelineOutput, images: Images, plan: BucketPlan, threshold: float) -> dict:
    """Top-1 against labels; with a reference, agreement, logit error and count agreement overall and per bucket.
    Label maps: mIoU, pixel accuracy, per-class IoU and boundary recall instead (the gate's decisions at
    ``threshold``, as the tokenizer decides), PyTorch's as ``reference_<score>``, and per-pixel agreement."""
    ref, pixels = images.reference, None
    if images.dense:  # each run's pixel labels once: upsampling is what a dense comparison costs
        pixels = dense.pixel_labels(out.logits, images.labels.shape[-1]), images.reference_pixels
        result = {"metric": validation.DENSE_METRIC, "n": len(out.logits)}
        result |= scores(pixels[0], out.logits.shape[1], images, dense.fine_regions(out.probs, threshold))
    else:
        result = {"top1": float((out.logits.argmax(1) == images.labels).mean()), "n": len(out.logits)}
    if ref is None:
        return result | {"reference": None}
    agree = validation.agreement(out, ref, None if images.dense else images.labels, pixels=pixels)
    logits = validation.compare(out.logits, ref.logits)
    if images.dense:
        theirs = scores(pixels[1], ref.logits.shape[1], images, dense.fine_regions(ref.probs, threshold))
        result |= {f"reference_{k}": theirs[k] for k in SCORES}
        logits |= {"pixel_agreement": agree.top1_agreement}
    else:
        result["reference_top1"] = agree.reference_top1
    buckets = np.array([plan.index(int(c)) for c in ref.counts])
    return result | {
        "agreement": agree.top1_agreement,  # a segmenter's: per pixel
        "counts_agreement": agree.counts_agreement,
        "counts_differ": agree.counts_differ,
        "logits": logits,
        "per_bucket": [_bucket(out, images, buckets == k, pixels) for k in range(len(plan.buckets))],
    }


def _bucket(out: PipelineOutput, images: Images, where: np.ndarray, pixels: tuple | None) -> dict:
    """The images whose reference token count falls in one bucket."""
    if not where.any():
        return {"images": 0}
    agree = validation.agreement(out, images.reference, images.labels, where, pixels=pixels)
    if images.dense:
        score = {"miou": json_number(agree.miou), "pixel_accuracy": json_number(agree.top1)}
    else:
        score = {"top1": agree.top1}
    return {
        "images": agree.images,
        **score,
        "agreement": agree.top1_agreement,
        "counts_agreement": agree.counts_agreement,
        "max_abs": agree.max_abs,
    }


SCORES = ("miou", "pixel_accuracy", "iou", "boundary_recall")  # each also as reference_<name>, PyTorch's


def scores(pixels: np.ndarray, classes: int, images: Images, fine: np.ndarray) -> dict:
    """One run's mIoU, pixel accuracy, per-class IoU (None: a class neither labelled nor predicted) and boundary
    recall (None: no region holds a boundary), with the counts the recall comes from, from its pixel labels."""
    s = dense.scores(pixels, images.labels, classes)
    hits, total = boundary_recall(fine, images.boundary)
    return {
        "miou": json_number(s.miou),
        "pixel_accuracy": json_number(s.pixel_accuracy),
        "iou": [json_number(v) for v in s.iou],
        "boundary_recall": hits / total if total else None,
        "boundary_fine": hits,
        "boundary_regions": total,
    }


def verdict(acc: dict, info: dict, cfg: BenchConfig) -> str | None:
    """Why the source fails: its precision's tolerance against PyTorch (``validation.verdict``, as build applies
    it) or a CI gate; None when it passes or there is no PyTorch reference to hold it to."""
    reason, is_dense = None, validation.is_dense(acc)
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
    is_dense = validation.is_dense(acc)
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
