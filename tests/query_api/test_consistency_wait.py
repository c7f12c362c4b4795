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


def test_positions_the_worker_publishes_answer_the_wait_without_a_read() -> None:
    """`runstream serve`'s worker publishes, after each batch, the next offset of every
    partition it projects: a wait for those partitions returns on the publish that reaches
    it, with no read of the position table (a query on the chDB the worker is writing)."""
    store, ticks = _Positions(0), Ticks()
    waits = Projections(store, "t", timeout_s=30, ticks=ticks, ticked_poll_s=30)  # type: ignore[arg-type]
    ticks.publish("db", {0: 5, 1: 3})  # partition 0 projected through offset 4
    waits.wait({0: 4, 1: 2})
    assert store.reads == 0

    def batch_done() -> None:
        ticks.publish("db", {0: 10})

    timer = threading.Timer(0.05, batch_done)
    timer.start()
    t = time.monotonic()
    waits.wait({0: 9})
    timer.join()
    assert store.reads == 0
    assert time.monotonic() - t < 15
    assert ticks.projected("db") == {0: 9, 1: 2}


def test_published_positions_hold_for_their_database_only() -> None:
    """What the worker projected into one database says nothing about another (a replay
    switched the read models): waits there read the position table, and the worker's first
    publish into another database starts from nothing."""
    store, ticks = _Positions(9), Ticks()
    waits = Projections(store, "t", timeout_s=30, ticks=ticks, ticked_poll_s=30)  # type: ignore[arg-type]
    ticks.publish("other", {0: 100})
    waits.wait({0: 9})
    assert store.reads == 1  # the API reads "db": the publish for "other" does not count
    ticks.publish("db", {1: 7})
    assert ticks.projected("db") == {1: 6}
    assert ticks.projected("other") == {}


def test_a_partition_the_worker_did_not_publish_is_read_and_a_stalled_one_read_again() -> None:
    store, ticks = _Positions(9), Ticks()
    waits = Projections(store, "t", timeout_s=5, ticks=ticks, ticked_poll_s=0.05)  # type: ignore[arg-type]
    ticks.publish("db", {1: 3})
    waits.wait({0: 9})  # partition 0 never published: read at once
    assert store.reads == 1
    ticks.publish("db", {0: 4})  # published, behind the wanted offset, no batch coming
    store.offset = 12  # the position table has it (another writer)
    t = time.monotonic()
    waits.wait({0: 12})  # read after the poll
    assert store.reads == 2
    assert time.monotonic() - t >= 0.04


def test_the_worker_learns_which_offsets_blocked_reads_wait_for() -> None:
    """`Ticks.awaited(fetched)`: whether a blocked read waits for nothing beyond what the
    worker published or holds in its current batch (it then commits without lingering);
    a read that returned waits for nothing."""
    store, ticks = _Positions(0), Ticks()
    waits = Projections(store, "t", timeout_s=30, ticks=ticks, ticked_poll_s=30)  # type: ignore[arg-type]
    assert not ticks.awaited({0: 100})  # no read waits
    ticks.publish("db", {1: 6})  # partition 1 projected through 5
    reader = threading.Thread(target=waits.wait, args=({0: 9, 1: 5},))
    reader.start()
    deadline = time.monotonic() + 10
    while not ticks.awaited({0: 9}):
        assert time.monotonic() < deadline, "the blocked read was never seen"
        time.sleep(0.005)
    assert not ticks.awaited({0: 8})  # offset 9 not fetched yet
    assert not ticks.awaited({1: 50})  # partition 0 not fetched at all
    ticks.publish("db", {0: 10})
    reader.join(10)
    assert not reader.is_alive()
    assert not ticks.awaited({0: 9, 1: 5})  # it returned: nothing waits
