"""Read-your-writes waits (pure logic: a stand-in store reports the projection position)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from query_api.consistency import Projections, Ticks
from query_api.errors import ConsistencyTimeout


class _Positions:
    """What `projection_position` would answer; counts the reads."""

    db = "db"
    generation: tuple[str, str] | None = ("db", "uuid-1")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.reads = 0

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[int, int]]:
        self.reads += 1
        return [(0, self.offset)]


def test_a_wait_wakes_on_each_committed_batch_instead_of_polling() -> None:
    """With the worker in the process (`runstream serve`), a waiting read re-reads the
    position when a batch is committed (a tick), not on a timer: one read before, one after."""
    store, ticks = _Positions(4), Ticks()
    waits = Projections(store, "t", timeout_s=30, ticks=ticks, ticked_poll_s=30)  # type: ignore[arg-type]

    def batch_done() -> None:
        store.offset = 9
        ticks.bump()

    timer = threading.Timer(0.05, batch_done)
    timer.start()
    t = time.monotonic()
    waits.wait({0: 9})
    timer.join()
    assert store.reads == 2
    assert time.monotonic() - t < 15  # woke on the tick, long before its fallback re-read


def test_a_tick_that_comes_between_the_read_and_the_wait_is_not_missed() -> None:
    store, ticks = _Positions(4), Ticks()
    waits = Projections(store, "t", timeout_s=30, ticks=ticks, ticked_poll_s=30)  # type: ignore[arg-type]
    real_rows = store.rows

    def rows_then_commit(sql: str, params: dict[str, Any]) -> list[tuple[int, int]]:
        out = real_rows(sql, params)
        if store.reads == 1:  # the batch lands right after this read answered "behind"
            store.offset = 9
            ticks.bump()
        return out

    store.rows = rows_then_commit  # type: ignore[method-assign]
    t = time.monotonic()
    waits.wait({0: 9})
    assert store.reads == 2
    assert time.monotonic() - t < 15


def test_a_ticked_wait_is_still_bounded() -> None:
    store, ticks = _Positions(4), Ticks()
    waits = Projections(store, "t", timeout_s=0.2, ticks=ticks, ticked_poll_s=0.05)  # type: ignore[arg-type]
    with pytest.raises(ConsistencyTimeout, match="did not reach"):
        waits.wait({0: 9})
    assert store.reads >= 2  # re-read on its fallback poll while no batch came


def test_offsets_known_to_be_projected_are_not_read_again() -> None:
    """Marks outlive their wait (a run written an hour ago still has one): once the position
    read in a database passed them, later waits for them return without a query; a newer
    offset reads again; another database generation (a replay switched, a database made
    again under its name) starts from nothing."""
    store = _Positions(9)
    waits = Projections(store, "t", timeout_s=0.2, poll_s=0.01)  # type: ignore[arg-type]
    waits.wait({0: 5})
    assert store.reads == 1
    waits.wait({0: 9})
    waits.wait({0: 3})
    assert store.reads == 1
    with pytest.raises(ConsistencyTimeout):
        waits.wait({0: 10})
    assert store.reads > 1
    reads = store.reads
    store.generation = ("db", "uuid-2")
    store.offset = 2  # the new generation is behind what the old one had reached
    with pytest.raises(ConsistencyTimeout):
        waits.wait({0: 5})
    assert store.reads > reads
    store.generation = None  # unknown generation: always read
    store.offset = 20
    reads = store.reads
    waits.wait({0: 5})
    waits.wait({0: 5})
    assert store.reads == reads + 2
