"""Selection decides every encoder call: rows, bucket, mask, and which images, for both batching modes."""

from __future__ import annotations

import numpy as np
import pytest

from msvit_edge.bundle.buckets import BucketPlan, plan_buckets
from msvit_edge.bundle.selection import bucket_index, select
from msvit_edge.errors import MsvitEdgeError


@pytest.fixture
def plan() -> BucketPlan:
    # counts 17..65 (the tiny test model); buckets end at 30, 45 and 65
    return plan_buckets([20] * 5 + [30] * 5 + [40] * 5 + [50] * 5, 3, lambda n: n * n, 17, 65)


def test_plan_fixture_has_the_buckets_the_tests_assume(plan):
    assert [(b.min, b.max) for b in plan.buckets] == [(17, 30), (31, 50), (51, 65)]


def test_equal_counts_need_no_mask_and_mixed_counts_do():
    (call,) = select(np.array([40, 40]))
    assert call.rows == 40 and call.mask() is None and call.bucket is None
    (call,) = select(np.array([40, 25]))
    assert call.rows == 40
    np.testing.assert_array_equal(call.mask().sum(1), [40, 25])


def test_batch_one_padded_to_its_bucket_needs_the_mask(plan):
    (call,) = select(np.array([33]), plan, pad_to_bucket=True)
    assert (call.rows, call.bucket) == (50, 1)
    mask = call.mask()
    assert mask.shape == (1, 50) and mask.sum() == 33 and mask[0, :33].all()


def test_a_count_that_fills_its_bucket_needs_no_mask(plan):
    (call,) = select(np.array([50]), plan, pad_to_bucket=True)
    assert call.rows == 50 and call.mask() is None


def test_padding_or_splitting_without_a_plan_is_refused():
    with pytest.raises(ValueError, match="needs the bucket plan"):
        select(np.array([20]), None, pad_to_bucket=True)
    with pytest.raises(ValueError, match="needs the bucket plan"):
        select(np.array([20]), None, batching="split")


def test_split_makes_one_call_per_bucket_covering_every_image_once(plan):
    counts = np.array([20, 64, 33, 29, 50, 17])
    calls = select(counts, plan, batching="split")
    assert [c.bucket for c in calls] == [0, 1, 2]
    assert sorted(np.concatenate([c.index for c in calls]).tolist()) == list(range(len(counts)))
    assert [c.index.tolist() for c in calls] == [[0, 3, 5], [2, 4], [1]]
    assert [c.rows for c in calls] == [29, 50, 64]  # each padded only to its own largest count
    padded = select(counts, plan, pad_to_bucket=True, batching="split")
    assert [c.rows for c in padded] == [30, 50, 65]


def test_pad_mode_runs_everything_at_the_largest_bucket(plan):
    (call,) = select(np.array([20, 64, 33]), plan, pad_to_bucket=True)
    assert (call.rows, call.bucket) == (65, 2) and call.index.tolist() == [0, 1, 2]


def test_bucket_index_is_the_plans_index_for_every_count(plan):
    counts = np.arange(17, 66)
    assert bucket_index(counts, plan).tolist() == [plan.index(int(c)) for c in counts]


@pytest.mark.parametrize("outside", [16, 66])
def test_a_count_outside_the_plan_is_refused_as_the_plan_refuses_it(plan, outside):
    with pytest.raises(MsvitEdgeError) as want:
        plan.index(outside)
    with pytest.raises(MsvitEdgeError) as got:
        select(np.array([20, outside]), plan, batching="split")
    assert str(got.value) == str(want.value)


def test_one_image_is_one_call_whichever_the_batching(plan):
    for pad in (False, True):
        (split,), (padded,) = (select(np.array([33]), plan, pad, b) for b in ("split", "pad"))
        assert (split.index.tolist(), split.rows, split.bucket) == (padded.index.tolist(), padded.rows, padded.bucket)
