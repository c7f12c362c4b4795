"""`processors.pipeline.StaleRuns`: the runs whose search documents are to be rewritten,
handed out smallest key first (the oldest runs: run ids are UUIDv7), each at most once
however often it was written, and again once written after it was handed out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processors.pipeline import StaleRuns
from schemas.ids import new_event_id


def test_the_oldest_runs_go_first_and_the_newest_stay() -> None:
    runs = [("p", "e", new_event_id()) for _ in range(10)]  # created in this order
    stale = StaleRuns()
    stale.update(reversed(runs))
    stale.update(runs[3:5])  # written again while stale: still one entry each
    assert len(stale) == 10
    assert stale.take(4) == runs[:4]
    assert runs[3] not in stale
    assert runs[4] in stale
    stale.update([runs[0]])  # written again after its refresh: stale again
    assert stale.take(3) == [runs[0], runs[4], runs[5]]
    assert sorted(stale) == runs[6:]
    stale.clear()
    assert not stale
    assert stale.take(5) == []


_key = st.tuples(
    st.sampled_from("pq"), st.sampled_from("ef"), st.text("0123456789abcdef", max_size=3)
)


@given(st.lists(st.one_of(st.lists(_key, max_size=8), st.integers(0, 6)), max_size=30))
def test_it_behaves_as_a_sorted_set(ops: list[list[tuple[str, str, str]] | int]) -> None:
    """Any sequence of writes (a list of keys) and takes (a count) against a set model."""
    stale, model = StaleRuns(), set[tuple[str, str, str]]()
    for op in ops:
        if isinstance(op, int):
            want = sorted(model)[:op]
            assert stale.take(op) == want
            model.difference_update(want)
        else:
            stale.update(op)
            model.update(op)
        assert len(stale) == len(model)
        assert set(stale) == model
