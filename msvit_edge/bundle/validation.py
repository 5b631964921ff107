"""Validation of any pipeline against the bundle's PyTorch reference, with a tolerance per precision. Torch-free.

``export`` (FP32 ONNX Runtime), ``build`` (every backend and precision) and ``bench`` share it, and ``verdict`` is
the one pass/fail rule all three apply. ``agreement`` is the one place that counts how often two runs' answers on
the same images agree (top-1, token counts, largest logit difference): validation, bench and the precision
comparisons all read their numbers from it. The pipeline runs the bundle's validation images at batch 1 and batched
(mixed counts, so the key mask is exercised); the report holds, per mode: token counts identical or not, the logits'
error statistics (Polygraphy's comparison, plus cosine similarity and top-1 agreement) and the minimum tolerance
that would have passed.

Tolerances (``TOLERANCES``): FP32 must match within ``atol`` 1e-4 with identical top-1. FP16 and INT8 change the
logits by design, so they are held to top-1 agreement with PyTorch (what a user sees) and a bound on the top-1
accuracy drop; their max abs diff is reported, not enforced. Token counts must always be identical: the tokenizer
stays FP32 at every precision, and its gate decides the shapes the encoder engine runs.

A segmentation bundle (``Reference.dense``: cell logits [N, K, G, G], label maps [N, S, S]) is held to
``DENSE_TOLERANCES`` the same way, per pixel: its agreement is the share of pixels whose class is PyTorch's (labels
from the upsampled logits, ``msvit_edge.bundle.dense``), its accuracy the mIoU against the reference label maps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from msvit_edge.bundle import Reference, dense
from msvit_edge.errors import MsvitEdgeError

MODES = ("batch1", "batched")
DENSE_METRIC = "miou"  # a segmentation report's accuracy["metric"] (validation's, bench's)


def is_dense(accuracy: dict) -> bool:
    """Whether a report's ``accuracy`` (validation's or bench's) is a segmentation source's."""
    return accuracy.get("metric") == DENSE_METRIC


LATENCY_ONLY_MIN_COSINE = 0.95  # random-weight INT8 logits measured 0.995 at DeiT-S size; a broken graph falls far


@dataclass(frozen=True)
class Tolerance:
    """What a precision must meet against PyTorch on the reference images."""

    atol: float | None  # max abs logit difference (None: reported only)
    min_agreement: float  # share of images whose top-1 class equals PyTorch's
    max_accuracy_drop: float  # top-1 accuracy (0..1) may fall at most this far below PyTorch's


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, min_agreement=1.0, max_accuracy_drop=0.0),
    "fp16": Tolerance(atol=None, min_agreement=0.99, max_accuracy_drop=0.01),
    "int8": Tolerance(atol=None, min_agreement=0.95, max_accuracy_drop=0.03),
}
# segmentation: per-pixel agreement, mIoU drop (issue 23's bounds); FP32 may flip a pixel where two logits tie in 1e-4
DENSE_TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, min_agreement=0.999, max_accuracy_drop=0.001),
    "fp16": Tolerance(atol=None, min_agreement=0.99, max_accuracy_drop=0.002),
    "int8": Tolerance(atol=None, min_agreement=0.98, max_accuracy_drop=0.01),
}


def tolerance(precision: str, is_dense: bool = False) -> Tolerance:
    """The precision's tolerance for a classifier's answers, or a segmentation bundle's (``is_dense``)."""
    return (DENSE_TOLERANCES if is_dense else TOLERANCES)[precision]


def compare(actual: np.ndarray, expected: np.ndarray) -> dict:
    """Error statistics of ``actual`` against ``expected`` (Polygraphy's), cosine similarity and top-1 agreement.

    ``min_atol`` / ``min_rtol``: the smallest atol (rtol 0) or rtol (atol 0) that would have passed, as Polygraphy
    prints them.
    """
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.logger import G_LOGGER

    runs = [
        IterationResult({"out": np.asarray(a, np.float32)}, runner_name=n) for a, n in ((actual, "a"), (expected, "e"))
    ]
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # Polygraphy logs every mismatch; the report says it once
        r = SimpleCompareFunc(atol=np.inf, rtol=np.inf, check_error_stat="quantile", error_quantile=0.99)(*runs)["out"]
    a, e = (np.asarray(x, np.float64).reshape(len(x), -1) for x in (actual, expected))
    cosine = (a * e).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(e, axis=1), 1e-30)
    out = {
        "max_abs": float(r.max_absdiff),
        "mean_abs": float(r.mean_absdiff),
        "p99_abs": float(r.quantile_absdiff),
        "max_rel": float(r.max_reldiff),
        "min_cosine": float(cosine.min()),
        "min_atol": float(r.max_absdiff),
        "min_rtol": float(r.max_reldiff),
    }
    if np.ndim(actual) == 2 and a.shape[1] > 1:  # class logits; dense ones are compared per pixel (``agreement``)
        out["top1_agreement"] = float((a.argmax(1) == e.argmax(1)).mean())
    return out


@dataclass(frozen=True)
class Agreement:
    """How often one run's answers match another's on the same images (see ``agreement``)."""

    images: int
    top1_agreement: float  # share of images whose top-1 class is the same
    counts_differ: int  # images whose token count differs
    counts_agreement: float  # share of images whose token count is the same
    max_abs: float  # largest absolute logit difference
    top1: float | None = None  # top-1 accuracy against the labels (with labels); dense: pixel accuracy
    reference_top1: float | None = None  # the expected run's top-1 accuracy against the labels (with labels)
    miou: float | None = None  # dense, with labels: mIoU of the actual run
    reference_miou: float | None = None  # and of the expected one

    @property
    def counts_equal(self) -> bool:
        return self.counts_differ == 0


def agreement(
    actual,
    expected,
    labels: np.ndarray | None = None,
    where: np.ndarray | None = None,
    size: int | None = None,
    pixels: tuple[np.ndarray, np.ndarray] | None = None,
) -> Agreement:
    """Top-1 agreement, token-count agreement and the largest logit difference of ``actual`` against ``expected``.

    Args:
        actual: Anything with ``logits`` [N, K] and ``counts`` [N] (a pipeline's output, a ``Reference``).
        expected: The same, for the run it is held to.
        labels: Int [N]: both runs' top-1 accuracy too. Dense logits [N, K, G, G]: label maps [N, S, S] (pixel
            accuracy and mIoU; agreement per pixel at that size).
        where: Bool [N]: only these images (at least one).
        size: Dense logits without labels: the pixel size their agreement is counted at.
        pixels: Dense logits: both runs' pixel labels of all N images, where the caller has them (upsampling costs).
    """
    keep = slice(None) if where is None else where
    a_logits, e_logits = np.asarray(actual.logits)[keep], np.asarray(expected.logits)[keep]
    a_counts, e_counts = np.asarray(actual.counts)[keep], np.asarray(expected.counts)[keep]
    if a_logits.ndim == 4 and pixels is None:
        if size is None and labels is None:
            raise ValueError("dense logits are compared per pixel: pass the label maps or the pixel size")
        pixels = (dense.pixel_labels(np.asarray(r.logits), size or np.shape(labels)[-1]) for r in (actual, expected))
    if a_logits.ndim == 4:
        a_top1, e_top1 = (np.asarray(p)[keep] for p in pixels)
    else:
        a_top1, e_top1 = a_logits.argmax(1), e_logits.argmax(1)
    out = Agreement(
        images=len(a_logits),
        top1_agreement=float((a_top1 == e_top1).mean()),
        counts_differ=int((a_counts != e_counts).sum()),
        counts_agreement=float((a_counts == e_counts).mean()),
        max_abs=float(np.abs(a_logits - e_logits).max()),
    )
    if labels is None:
        return out
    y = np.asarray(labels)[keep]
    if a_logits.ndim == 4:
        a, e = (dense.scores(t, y, a_logits.shape[1]) for t in (a_top1, e_top1))
        return replace(out, top1=a.pixel_accuracy, reference_top1=e.pixel_accuracy, miou=a.miou, reference_miou=e.miou)
    return replace(out, top1=float((a_top1 == y).mean()), reference_top1=float((e_top1 == y).mean()))


def validate(pipeline, reference: Reference, images: np.ndarray, threshold: float, batch: int = 32) -> dict:
    """Run ``pipeline`` (active) on the reference images at batch 1 and at ``batch``; compare with PyTorch.

    Args:
        pipeline: An activated ``msvit_edge.engines.pipeline.Pipeline`` (anything with its ``run_batched``).
        reference: The bundle's PyTorch answers.
        images: The reference images preprocessed for the tokenizer (``bundle.preprocess(reference.images)``).
        threshold: The gate threshold the reference was made with.
        batch: Batch size of the batched mode, capped at the largest batch the plan's profiles hold.
    """
    plan = getattr(pipeline, "plan", None)
    batch = min(batch, plan.batch[2]) if plan is not None else batch
    report: dict = {"images": len(images), "batch": batch}
    size = reference.labels.shape[-1]
    theirs = dense.pixel_labels(reference.logits, size) if reference.dense else None  # once, not per mode
    for mode, calls in zip(MODES, (1, batch), strict=True):
        out = pipeline.run_batched(images, threshold, calls)
        pixels = None if theirs is None else (dense.pixel_labels(out.logits, size), theirs)
        agree = agreement(out, reference, reference.labels, pixels=pixels)
        report[mode] = {
            "counts_equal": agree.counts_equal,
            "counts_differ": agree.counts_differ,
            "logits": compare(out.logits, reference.logits),
            "probs": compare(out.probs, reference.probs),
            "top1": agree.top1,
        }
        if reference.dense:
            report[mode]["logits"]["pixel_agreement"] = agree.top1_agreement
            report[mode] |= {"pixel_accuracy": agree.top1, "miou": agree.miou, "reference_miou": agree.reference_miou}
    if reference.dense:  # held to the mIoU
        accuracy = {"metric": DENSE_METRIC, "reference": report["batch1"]["reference_miou"]}
        report["accuracy"] = accuracy | {"engine": min(report[mode]["miou"] for mode in MODES)}
        return report
    report["accuracy"] = {
        "reference": float((reference.logits.argmax(1) == reference.labels).mean()),
        "engine": min(report[mode]["top1"] for mode in MODES),
    }
    return report


def verdict(
    logits: dict,
    counts_differ: int,
    images: int,
    tolerance: Tolerance,
    latency_only: bool = False,
    top1: tuple[float, float] | None = None,
) -> str | None:
    """Why an engine's answers miss ``tolerance`` against PyTorch's, or None when they pass: the one pass/fail rule
    of export, build and bench.

    Args:
        logits: ``compare(engine logits, PyTorch logits)``.
        counts_differ: Images whose token count differs from PyTorch's (always a failure).
        images: How many images were compared.
        tolerance: The precision's (``tolerance(precision, is_dense)``).
        latency_only: A random-weights bundle, whose near-equal logits make top-1 agreement and accuracy
            meaningless: its logits are held to a cosine similarity with PyTorch's (``LATENCY_ONLY_MIN_COSINE``).
        top1: (engine, PyTorch) top-1 accuracy against the labels, where the drop is checked (dense logits, known by
            ``logits["pixel_agreement"]``: their mIoU).
    """
    if latency_only:
        tolerance = replace(tolerance, min_agreement=0.0, max_accuracy_drop=1.0)
    if counts_differ:
        return f"token counts differ from PyTorch's on {counts_differ} of {images} images"
    if tolerance.atol is not None and not logits["max_abs"] <= tolerance.atol:  # written so that NaN fails too
        return f"logits max abs diff {logits['max_abs']:.3e} > {tolerance.atol:g} (max rel {logits['max_rel']:.3e})"
    if latency_only and not logits["min_cosine"] >= LATENCY_ONLY_MIN_COSINE:
        return (
            f"logits' cosine similarity with PyTorch's falls to {logits['min_cosine']:.4f}, below "
            f"{LATENCY_ONLY_MIN_COSINE} (random weights: top-1 agreement is not checked)"
        )
    is_dense = "pixel_agreement" in logits
    what = "pixel labels agree with PyTorch's" if is_dense else "top-1 agrees with PyTorch"
    agree = logits["pixel_agreement"] if is_dense else logits.get("top1_agreement", 1.0)
    if not agree >= tolerance.min_agreement:
        return (
            f"{what} on {100 * agree:.2f}% of {'pixels' if is_dense else 'images'}, below "
            f"{100 * tolerance.min_agreement:.2f}% (logits max abs diff {logits['max_abs']:.3e})"
        )
    metric = "mIoU" if is_dense else "top-1"
    if top1 is not None and not top1[1] - top1[0] <= tolerance.max_accuracy_drop + 1e-12:
        return (
            f"{metric} {100 * top1[0]:.2f}% is {100 * (top1[1] - top1[0]):.2f} points below PyTorch's "
            f"{100 * top1[1]:.2f}% (allowed {100 * tolerance.max_accuracy_drop:.2f})"
        )
    return None


def check(report: dict, tolerance: Tolerance, what: str = "engine", latency_only: bool = False) -> None:
    """Raise ``MsvitEdgeError`` with the numbers when a ``validate`` report misses ``tolerance`` (``verdict``)."""
    top1 = report["accuracy"]["engine"], report["accuracy"]["reference"]
    for mode in MODES:
        v = report[mode]
        reason = verdict(v["logits"], v["counts_differ"], report["images"], tolerance, latency_only, top1)
        if reason is not None:
            raise MsvitEdgeError(f"validation failed ({mode}): {what} {reason}")


def criterion(tolerance: Tolerance, latency_only: bool = False, is_dense: bool = False) -> str:
    """What ``verdict`` held an engine to, in words (build and bench print it beside a pass)."""
    if latency_only:
        return f"identical token counts and logits' cosine similarity >= {LATENCY_ONLY_MIN_COSINE} (random weights)"
    agree, metric = ("per-pixel agreement", "mIoU") if is_dense else ("top-1 agreement", "top-1")
    parts = ["identical token counts"]
    if tolerance.atol is not None:
        parts.append(f"logits within {tolerance.atol:g}")
    parts.append(f"{agree} >= {100 * tolerance.min_agreement:g}%")
    if tolerance.max_accuracy_drop:
        parts.append(f"{metric} drop <= {100 * tolerance.max_accuracy_drop:g} points")
    return ", ".join(parts)


def describe(report: dict, what: str = "engine") -> str:
    """The report as console lines."""
    acc = report["accuracy"]
    dense_report = is_dense(acc)
    metric, agree = ("mIoU", "pixel_agreement") if dense_report else ("top-1", "top1_agreement")
    lines = [
        f"validation: {what} vs PyTorch on {report['images']} reference images "
        f"({metric} {100 * acc['engine']:.2f}% vs {100 * acc['reference']:.2f}%)"
    ]
    for mode in MODES:
        lg = report[mode]["logits"]
        lines.append(
            f"  {mode}: counts {'identical' if report[mode]['counts_equal'] else 'DIFFER'}; logits max abs "
            f"{lg['max_abs']:.2e}, mean abs {lg['mean_abs']:.2e}, max rel {lg['max_rel']:.2e}, min cosine "
            f"{lg['min_cosine']:.6f}, {metric.replace('mIoU', 'per-pixel')} agreement "
            f"{100 * lg.get(agree, 1.0):.2f}%; minimum tolerance: atol={lg['min_atol']:.2e} OR "
            f"rtol={lg['min_rtol']:.2e}"
        )
    return "\n".join(lines)


def tolerance_dict(precision: str, is_dense: bool = False) -> dict:
    return asdict(tolerance(precision, is_dense))
