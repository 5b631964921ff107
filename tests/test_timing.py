from __future__ import annotations

from msvit_edge.measure.timing import interleaved


def test_candidates_alternate_and_warmup_is_not_timed():
    calls, syncs = [], []
    times = interleaved(
        {"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))},
        repeats=3,
        warmup=2,
        sync=lambda: syncs.append(1),
    )
    assert calls == [(n, i) for i in range(5) for n in "ab"]
    assert len(times["a"]) == len(times["b"]) == 3 and len(syncs) == 10
