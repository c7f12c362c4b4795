"""The faust engine's timer upkeep (pure logic: a projector never started, a stand-in
processor): the search documents of a load's last runs are rewritten chunk after chunk once
the topic is quiet, one chunk a tick while batches come, and a batch waits for one chunk at
most."""

from __future__ import annotations

import asyncio
from typing import Any

from processors.compaction import PositionPruning, SearchCompaction
from processors.faust_app import FaustProjector


class _Stale:
    """The documents of `runs` runs to rewrite, two per chunk; `during` runs inside a chunk."""

    def __init__(self, runs: int, failing: bool = False) -> None:
        self.stale_pages = {("p", "e", f"r{i}") for i in range(runs)}
        self.failing = failing
        self.chunks = 0
        self.search_rows_written = 0
        self.sink = None  # no merge or prune is due here
        self.during: Any = None

    def refresh_pages(self) -> int:
        self.chunks += 1
        if self.during is not None:
            self.during()
        if self.failing:
            if self.chunks > 10:  # a loop retrying a failure for ever: end it, fail the test
                self.stale_pages.clear()
            raise RuntimeError("chDB is away")
        for _ in range(min(2, len(self.stale_pages))):
            self.stale_pages.pop()
        return 2


def _projector(proc: _Stale, committed: int = 0, seen: int = 0) -> FaustProjector:
    p = FaustProjector.__new__(FaustProjector)  # no app, no ClickHouse: the timer's logic
    p.processor = proc  # type: ignore[assignment]
    p.topic = "t"
    p.next_offsets = {}
    p.compaction = SearchCompaction(30.0, 5_000)
    p.pruning = PositionPruning(60.0, 1_000)
    p._committed, p._committed_seen = committed, seen
    return p


def _tick(p: FaustProjector) -> None:
    async def tick() -> None:
        p._lock = asyncio.Lock()
        await p._maintain()

    asyncio.run(tick())


def test_a_quiet_tick_rewrites_every_stale_document_chunk_after_chunk() -> None:
    proc = _Stale(runs=7)
    _tick(_projector(proc))
    assert proc.chunks == 4
    assert not proc.stale_pages


def test_while_batches_come_a_tick_rewrites_one_chunk() -> None:
    proc = _Stale(runs=7)
    p = _projector(proc, committed=3, seen=2)  # a batch committed since the last tick
    _tick(p)
    assert proc.chunks == 1
    assert len(proc.stale_pages) == 5
    _tick(p)  # nothing committed since: quiet, the rest follows
    assert proc.chunks == 4
    assert not proc.stale_pages


def test_a_batch_committed_during_the_rewrite_ends_it_at_that_chunk() -> None:
    proc = _Stale(runs=9)
    p = _projector(proc)

    def commit() -> None:
        if proc.chunks == 2:
            p._committed += 1

    proc.during = commit
    _tick(p)
    assert proc.chunks == 2
    assert len(proc.stale_pages) == 5


def test_a_failing_rewrite_is_tried_once_a_tick() -> None:
    proc = _Stale(runs=7, failing=True)
    _tick(_projector(proc))
    assert proc.chunks == 1
