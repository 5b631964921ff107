"""The shared validation: statistics, the per-precision tolerance policy, and errors that carry the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from msvit_edge.bundle.validation import TOLERANCES, Tolerance, check, compare, describe
from msvit_edge.errors import MsvitEdgeError


def report(max_abs=0.0, agreement=1.0, counts_differ=0, engine=0.8, reference=0.8) -> dict:
    logits = {"max_abs": max_abs, "mean_abs": max_abs / 2, "max_rel": max_abs, "min_cosine": 1.0}
    logits |= {"min_atol": max_abs, "min_rtol": max_abs, "top1_agreement": agreement}
    mode = {"counts_equal": counts_differ == 0, "counts_differ": counts_differ, "logits": logits}
    return {"images": 8, "batch1": mode, "batched": mode, "accuracy": {"reference": reference, "engine": engine}}


def test_compare_finds_the_one_changed_logit_and_the_flipped_top1():
    expected = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], np.float32)
    actual = expected.copy()
    actual[1, 2] = 2.5  # image 1's top-1 moves from class 1 to class 2
    stats = compare(actual, expected)
    assert stats["max_abs"] == pytest.approx(1.5) and stats["min_atol"] == stats["max_abs"]
    assert stats["max_rel"] == pytest.approx(1.5)
    assert stats["top1_agreement"] == 0.5
    assert stats["min_cosine"] < 0.99 and compare(expected, expected)["min_cosine"] == pytest.approx(1.0)


def test_fp32_needs_the_atol_and_nan_fails_it():
    check(report(max_abs=5e-5), TOLERANCES["fp32"])
    with pytest.raises(MsvitEdgeError, match=r"\(batch1\): engine logits max abs diff 2\.000e-04 > 0.0001"):
        check(report(max_abs=2e-4), TOLERANCES["fp32"])
    with pytest.raises(MsvitEdgeError, match="max abs diff nan"):
        check(report(max_abs=float("nan")), TOLERANCES["fp32"])


def test_int8_is_held_to_agreement_and_accuracy_not_atol():
    check(report(max_abs=0.3, agreement=0.99, engine=0.79), TOLERANCES["int8"])
    with pytest.raises(MsvitEdgeError, match=r"top-1 agrees with PyTorch on 90\.00% of images, below 95\.00%"):
        check(report(max_abs=0.3, agreement=0.9), TOLERANCES["int8"])
    with pytest.raises(MsvitEdgeError, match=r"top-1 70\.00% is 10\.00 points below PyTorch's 80\.00%"):
        check(report(agreement=0.99, engine=0.7), TOLERANCES["int8"], what="int8 engine")


def test_count_mismatch_fails_every_precision_with_numbers():
    for tolerance in TOLERANCES.values():
        with pytest.raises(MsvitEdgeError, match=r"token counts differ from PyTorch's on 2 of 8 images"):
            check(report(counts_differ=2), tolerance)


def test_describe_prints_the_minimum_tolerance():
    text = describe(report(max_abs=3e-5), "ONNX Runtime int8")
    assert text.startswith("validation: ONNX Runtime int8 vs PyTorch on 8 reference images")
    assert "minimum tolerance: atol=3.00e-05 OR rtol=3.00e-05" in text


def test_a_looser_tolerance_is_what_makes_a_report_pass():
    r = report(max_abs=1e-3, agreement=1.0)
    with pytest.raises(MsvitEdgeError):
        check(r, TOLERANCES["fp32"])
    check(r, Tolerance(atol=1e-3, min_agreement=1.0, max_accuracy_drop=0.0))


def test_random_weights_are_held_to_cosine_similarity_not_top1():
    r = report(max_abs=0.1, agreement=0.8, engine=0.0, reference=0.0)
    for mode in ("batch1", "batched"):
        r[mode]["logits"]["min_cosine"] = 0.996
    with pytest.raises(MsvitEdgeError, match=r"top-1 agrees with PyTorch on 80\.00%"):
        check(r, TOLERANCES["int8"])
    check(r, TOLERANCES["int8"], latency_only=True)
    r["batch1"]["logits"]["min_cosine"] = 0.5
    with pytest.raises(MsvitEdgeError, match=r"cosine similarity with PyTorch's falls to 0\.5000, below 0\.95"):
        check(r, TOLERANCES["int8"], latency_only=True)
    r["batch1"] |= {"counts_equal": False, "counts_differ": 3}
    with pytest.raises(MsvitEdgeError, match="token counts differ"):
        check(r, TOLERANCES["int8"], latency_only=True)


def test_the_batched_mode_runs_at_a_batch_the_plans_profiles_hold():
    """A bundle exported with --max-batch 8 has profiles up to batch 8: validation must not feed it 32 images."""
    from msvit_edge.bundle import Reference
    from msvit_edge.bundle.buckets import Bucket, BucketPlan
    from msvit_edge.bundle.validation import validate
    from msvit_edge.engines.pipeline import Pipeline as RealPipeline
    from msvit_edge.engines.pipeline import PipelineOutput

    class Pipeline:
        plan = BucketPlan((Bucket(17, 65, 65, 1.0),), {40: 1}, 0.0, (1, 1, 8))
        run_batched = RealPipeline.run_batched  # the one batch loop, over this stand-in's calls

        def __init__(self):
            self.batches: list[int] = []

        def __call__(self, images, threshold):
            self.batches.append(len(images))
            n = len(images)
            return PipelineOutput(np.eye(n, 3, dtype=np.float32), np.full(n, 40), np.zeros((n, 4), np.float32), [])

    images = np.zeros((20, 3, 32, 32), np.float32)
    ref = Reference(
        np.zeros((20, 32, 32, 3), np.uint8),
        np.zeros(20, np.int64),
        np.zeros((20, 3), np.float32),
        np.full(20, 40),
        np.zeros((20, 4), np.float32),
    )
    pipe = Pipeline()
    report = validate(pipe, ref, images, 0.5)
    assert report["batch"] == 8 and max(pipe.batches) == 8 and pipe.batches.count(1) == 20


def test_agreement_counts_top1_counts_and_the_largest_logit_difference():
    from types import SimpleNamespace

    from msvit_edge.bundle.validation import agreement

    expected = SimpleNamespace(logits=np.array([[3.0, 1.0], [0.0, 2.0], [1.0, 0.0]]), counts=np.array([17, 20, 33]))
    actual = SimpleNamespace(logits=np.array([[3.0, 1.5], [2.5, 2.0], [1.0, 0.0]]), counts=np.array([17, 21, 33]))
    agree = agreement(actual, expected, labels=np.array([0, 1, 1]))
    assert (agree.images, agree.top1_agreement, agree.counts_differ) == (3, pytest.approx(2 / 3), 1)
    assert agree.counts_agreement == pytest.approx(2 / 3) and not agree.counts_equal
    assert agree.max_abs == 2.5 and agree.top1 == pytest.approx(1 / 3) and agree.reference_top1 == pytest.approx(2 / 3)
    first = agreement(actual, expected, where=np.array([True, False, True]))
    assert (first.images, first.top1_agreement, first.max_abs, first.top1) == (2, 1.0, 0.5, None)
    assert first.counts_equal
