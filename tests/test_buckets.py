"""The bucket planner is exact (checked against brute force), covers every possible count, and refuses bad K."""

from __future__ import annotations

import itertools
import random

import pytest

from msvit_edge.bundle.buckets import BucketPlan, plan_buckets
from msvit_edge.errors import MsvitEdgeError

LO, HI = 26, 101  # the demo model: 25 regions


def cost(n: int) -> float:
    return 12 * n * 128**2 + 2 * n * n * 128


def padded_cost(counts: list[int], ends: list[int]) -> float:
    """Brute-force reference: each image pays for the end of the first bucket that holds it; the last ends at HI."""
    ends = [*ends[:-1], HI]
    return sum(cost(next(e for e in ends if c <= e)) for c in counts)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_plan_is_optimal_against_brute_force(seed, k):
    rng = random.Random(seed)
    counts = [LO + 3 * rng.choice(range(26)) for _ in range(rng.randint(20, 60))]
    values = sorted(set(counts))
    if k > len(values):
        pytest.skip("fewer distinct counts than buckets")
    # interior ends are best placed at observed counts; the largest observed count may end a bucket too, leaving an
    # overflow-only last bucket up to HI
    best = min(padded_cost(counts, [*ends, HI]) for ends in itertools.combinations(values, k - 1))
    plan = plan_buckets(counts, k, cost, LO, HI)
    got = padded_cost(counts, [b.max for b in plan.buckets])
    assert got == pytest.approx(best, rel=1e-12)
    assert plan.expected_overhead == pytest.approx(got / sum(cost(c) for c in counts) - 1, rel=1e-9)


def test_an_overflow_only_last_bucket_is_considered():
    plan = plan_buckets([26] * 50 + [29] * 50, 2, cost, LO, HI)  # review case: [26] + [27..101] costs 148% more
    assert [(b.min, b.max) for b in plan.buckets] == [(26, 29), (30, 101)]
    assert plan.buckets[1].share == 0 and plan.expected_overhead == pytest.approx(
        100 * cost(29) / (50 * cost(26) + 50 * cost(29)) - 1
    )
    assert len(plan_buckets([26, 29], 3, cost, LO, HI).buckets) == 3  # K may exceed the distinct counts by one


def test_buckets_are_contiguous_and_cover_every_possible_count():
    counts = [26] * 50 + [29] * 30 + [41] * 10 + [50] * 5 + [74] * 5
    plan = plan_buckets(counts, 3, cost, LO, HI)
    assert plan.buckets[0].min == LO and plan.buckets[-1].max == HI
    for a, b in itertools.pairwise(plan.buckets):
        assert b.min == a.max + 1
    assert all(b.min <= b.opt == b.max for b in plan.buckets)
    assert sum(b.share for b in plan.buckets) == pytest.approx(1.0)
    assert [plan.index(n) for n in (26, 101)] == [0, 2]
    assert all(plan.buckets[plan.index(c)].min <= c <= plan.buckets[plan.index(c)].max for c in range(LO, HI + 1))
    assert plan.histogram == {26: 50, 29: 30, 41: 10, 50: 5, 74: 5}


def test_more_buckets_never_cost_more_and_one_bucket_is_all_fine():
    rng = random.Random(0)
    counts = [LO + 3 * min(25, int(rng.expovariate(0.3))) for _ in range(500)]
    overheads = [plan_buckets(counts, k, cost, LO, HI).expected_overhead for k in range(1, 7)]
    assert overheads == sorted(overheads, reverse=True)
    assert overheads[0] == pytest.approx(len(counts) * cost(HI) / sum(map(cost, counts)) - 1)


def test_plan_round_trips_through_json_dict():
    plan = plan_buckets([26, 29, 29, 35, 50], 2, cost, LO, HI)
    assert BucketPlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize(
    "counts, k, message",
    [
        ([26, 29, 29], 4, "cannot plan 4 buckets from 2 distinct token counts .* between 1 and 3"),
        ([26, 101], 3, "cannot plan 3 buckets from 2 distinct token counts .* between 1 and 2"),
        ([26, 29], 0, "cannot plan 0 buckets"),
        ([], 1, "no calibration token counts"),
        ([20, 29], 1, "outside the model's range"),
    ],
)
def test_bad_requests_are_clear_errors(counts, k, message):
    with pytest.raises(MsvitEdgeError, match=message):
        plan_buckets(counts, k, cost, LO, HI)


def test_index_outside_range_is_an_error():
    plan = plan_buckets([26, 50], 2, cost, LO, HI)
    with pytest.raises(MsvitEdgeError, match="outside the plan's range"):
        plan.index(102)


def test_each_bucket_is_one_profile_over_the_batch_range_and_a_graph_without_tokens_gets_one():
    plan = plan_buckets([26] * 50 + [29] * 50, 2, cost, LO, HI, batch=(1, 4, 16))
    assert plan.ranges() == [{0: (1, 4, 16), 1: (26, 29, 29)}, {0: (1, 4, 16), 1: (30, 101, 101)}]
    assert plan.ranges(tokens=False) == [{0: (1, 4, 16)}]
