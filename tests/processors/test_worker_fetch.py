"""The worker's fetch (pure logic, a stand-in consumer): a batch holds about
batch_max_bytes of record values whatever the consumer has buffered, and nothing it does
not take is lost (it stays buffered for the next fetch)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from processors.model import SourceEvent
from processors.pipeline import redo_batches
from processors.sink import Resume
from processors.worker import BACKLOG_FETCH_S, ProjectionWorker, WorkerSettings


class _Buffered:
    """aiokafka's getmany over records already fetched for 4 partitions."""

    def __init__(self, sizes: list[int], partitions: int = 4, spread: bool = True) -> None:
        self.parts = {p: deque() for p in range(partitions)}  # type: ignore[var-annotated]
        self.calls = 0
        for i, n in enumerate(sizes):
            p = i % partitions if spread else i * partitions // len(sizes)
            self.parts[p].append(SimpleNamespace(value=b"x" * n, offset=i, timestamp=0, key=b"k"))

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", p) for p in self.parts}

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[Any, list[Any]]:
        self.calls += 1
        out: dict[Any, list[Any]] = {}
        wanted = {tp.partition for tp in partitions} or set(self.parts)
        for p, q in self.parts.items():  # like aiokafka: one buffer after the other, up to N
            if p not in wanted:
                continue
            take = []
            while q and max_records > 0:
                take.append(q.popleft())
                max_records -= 1
            if take:
                out[TopicPartition("t", p)] = take
        return out

    def left(self) -> int:
        return sum(len(q) for q in self.parts.values())


def _offline_worker(**settings: Any) -> ProjectionWorker:
    """A worker never started (no ClickHouse, no Kafka): its loop's decisions alone."""
    return ProjectionWorker(
        None, bootstrap="unused", database="unused", settings=WorkerSettings(**settings)
    )


def _fetch(worker: ProjectionWorker, consumer: _Buffered) -> dict[int, list[Any]]:
    return asyncio.run(worker._fetch(consumer))  # type: ignore[arg-type]


def test_a_batch_is_about_batch_max_bytes_whatever_is_buffered() -> None:
    budget = 1 << 20
    worker = _offline_worker(batch_max_bytes=budget)
    record = 40_000
    consumer = _Buffered([record] * 400)  # 16 MB buffered, 16x the budget
    seen = 0
    for _ in range(30):
        batch = _fetch(worker, consumer)
        got = sum(len(r.value) for rs in batch.values() for r in rs)
        seen += sum(len(rs) for rs in batch.values())
        if not got:
            break
        assert got <= budget + record, got  # at most one record over
    assert seen == 400  # everything came, none twice
    assert consumer.left() == 0


def test_batches_stay_within_batch_max_bytes_when_record_sizes_jump() -> None:
    """Small run events first, then large metric events: the fetch, which sizes its record
    count from the records seen so far, takes many budgets at once; the batches projected
    still hold about batch_max_bytes each, every record once and in order. (A 77 MB batch
    of 3.75 M points made chDB's insert exceed its per-query memory cap, retried forever.)"""
    budget = 1 << 20
    worker = _offline_worker(batch_max_bytes=budget)
    big = 300_000
    consumer = _Buffered([200] * 4 + [big] * 80)
    fetched = _fetch(worker, consumer)
    assert sum(len(r.value) for rs in fetched.values() for r in rs) > 8 * budget  # the premise
    for partition, records in fetched.items():
        batches = worker._batches(partition, records)
        assert [r.offset for b in batches for r in b] == [r.offset for r in records]
        assert all(sum(len(r.value) for r in b) <= budget for b in batches)


def test_small_records_still_fill_a_batch_by_count() -> None:
    worker = _offline_worker(batch_size=500, batch_max_bytes=1 << 30)
    consumer = _Buffered([100] * 2000)
    batch = _fetch(worker, consumer)
    assert sum(len(rs) for rs in batch.values()) == 500


def test_partitions_holding_records_get_equal_shares_of_a_batch() -> None:
    """Catching up, aiokafka hands out one partition's buffer before the next's: the fetch
    takes a share from each partition holding records, so they advance together (a load's
    `run_search` parts then cover neighbouring run ids, not overlapping ones)."""
    worker = _offline_worker(batch_size=400, batch_max_bytes=1 << 30)
    consumer = _Buffered([100] * 4000, spread=False)  # partition 0's 1,000 first, then 1's ...
    for _ in range(3):
        batch = _fetch(worker, consumer)
        assert {p: len(rs) for p, rs in batch.items()} == {0: 100, 1: 100, 2: 100, 3: 100}
    assert [len(q) for q in consumer.parts.values()] == [700] * 4
    # records of one partition (in offset order, none skipped) still fill a batch
    consumer = _Buffered([100] * 1000, partitions=4, spread=False)
    for q in list(consumer.parts.values())[1:]:
        consumer.parts[0].extend(q)
        q.clear()
    batch = _fetch(worker, consumer)
    assert list(batch) == [0]
    assert [r.offset for r in batch[0]] == list(range(400))


def test_large_records_fill_a_batch_from_one_partition_the_partitions_in_turn() -> None:
    """A byte budget of a few records (large MetricsLogged events): a fetch takes them from
    one partition (batches and inserts stay large), the next fetch from the next one."""
    worker = _offline_worker(batch_size=400, batch_max_bytes=200)
    consumer = _Buffered([100] * 400, spread=False)
    _fetch(worker, consumer)  # the first learns the record size
    batches = [_fetch(worker, consumer) for _ in range(8)]
    assert all(len(b) == 1 and sum(map(len, b.values())) == 2 for b in batches)
    order = [next(iter(b)) for b in batches]
    assert order == [(order[0] + i) % 4 for i in range(8)]


class _OnePartition:
    """A stand-in consumer assigned partition 0 alone (the fetch then asks it as a whole)."""

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", 0)}


class _Trickle(_OnePartition):
    """A topic where one record arrives every `gap_s`; getmany waits like aiokafka's (up to
    its timeout for the next arrival) and logs the timeouts it was given."""

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self.timeouts: list[int] = []
        self.sent = 0

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[Any, list[Any]]:
        self.timeouts.append(timeout_ms)
        wait = 0.0 if self.sent == 0 else self.gap_s
        if wait * 1000 > timeout_ms:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        await asyncio.sleep(wait)
        self.sent += 1
        return {TopicPartition("t", 0): [SimpleNamespace(value=b"x", offset=self.sent)]}


def test_a_lone_record_waits_batch_linger_not_batch_timeout() -> None:
    """The first getmany may wait the whole batch_timeout; once records came, the fetch
    waits at most batch_linger for more (a write is projected ~20 ms after it arrives, not
    after the whole batch_timeout as with faust's take(n, within=t))."""
    worker = _offline_worker(batch_timeout=5.0, batch_linger=0.02)
    consumer = _Trickle(gap_s=0.5)
    batch = _fetch(worker, consumer)  # type: ignore[arg-type]
    assert [r.offset for rs in batch.values() for r in rs] == [1]
    assert consumer.timeouts[0] > 4000  # nothing buffered yet: wait up to batch_timeout
    assert len(consumer.timeouts) > 1
    assert max(consumer.timeouts[1:]) <= 20
    # records arriving within the linger join the batch
    consumer = _Trickle(gap_s=0.001)
    batch = _fetch(worker, consumer)  # type: ignore[arg-type]
    assert len([r for rs in batch.values() for r in rs]) > 1


class _Clocked(_OnePartition):
    """A topic where record k (1, 2, ...) arrives k-1 times `gap_s` after the first
    getmany, by the clock; getmany waits up to its timeout for the next arrival."""

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self.timeouts: list[int] = []
        self.start: float | None = None
        self.sent = 0

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[Any, list[Any]]:
        self.timeouts.append(timeout_ms)
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.sent * self.gap_s
        if due - now > timeout_ms / 1000:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        await asyncio.sleep(max(0.0, due - now))
        self.sent += 1
        return {TopicPartition("t", 0): [SimpleNamespace(value=b"x", offset=self.sent)]}


def test_a_batch_stops_lingering_once_a_read_waits_for_what_it_holds() -> None:
    """Where reads wait in the process for their writes (`runstream serve`), a batch holding
    everything a waiting read wants is committed at once instead of after batch_linger;
    without such a read it lingers as before, and records arriving meanwhile still join."""
    worker = _offline_worker(batch_timeout=5.0, batch_linger=1.0)
    asked: list[dict[int, int]] = []

    def awaited(fetched: dict[int, int]) -> bool:
        asked.append(dict(fetched))
        return fetched.get(0, -1) >= 1

    worker.awaited = awaited  # type: ignore[assignment]
    consumer = _Clocked(gap_s=0.5)
    t = time.monotonic()
    batch = _fetch(worker, consumer)  # type: ignore[arg-type]
    assert [r.offset for rs in batch.values() for r in rs] == [1]
    assert time.monotonic() - t < 0.4  # not the 1 s linger, nor the next record's 0.5 s
    assert asked == [{0: 1}]
    worker.awaited = lambda fetched: False
    consumer = _Clocked(gap_s=0.3)
    t = time.monotonic()
    batch = _fetch(worker, consumer)  # type: ignore[arg-type]
    assert [r.offset for rs in batch.values() for r in rs] == [1, 2, 3, 4]
    assert time.monotonic() - t >= 0.95  # the whole linger: no read waits
    assert max(consumer.timeouts[1:]) <= 2  # checked every HURRY_CHECK_S meanwhile


class _CountingSink:
    def __init__(self) -> None:
        self.compactions = 0

    def compact_search(self) -> None:
        self.compactions += 1


def _stepper(
    worker: ProjectionWorker, sink: _CountingSink, assigned: tuple[int, ...] = (0,)
) -> Callable[..., int]:
    """step(busy, now, rows=0): `rows` run_search rows written, then the loop's compaction
    decision; returns the merges so far."""
    worker._assigned = set(assigned)
    worker.processor.sink = sink  # type: ignore[assignment]

    def step(busy: bool, now: float, rows: int = 0) -> int:
        worker.processor.search_rows_written += rows
        asyncio.run(worker._compact_search(busy, now))
        return sink.compactions

    return step


def test_run_search_is_compacted_when_quiet_after_writes_and_not_more_often() -> None:
    """Merging run_search into one part (cheap FINAL for search) happens on the first quiet
    step after writes, never while batches keep coming, never without new writes, and not
    again before compact_interval."""
    step = _stepper(_offline_worker(compact_interval=30), _CountingSink(), (0, 1))

    assert step(False, 1.0) == 0  # quiet, nothing written yet
    assert step(True, 1.5) == 0
    assert step(False, 1.8) == 0  # batches came, but none wrote run_search
    assert step(True, 2.0, rows=3) == 0  # busy
    assert step(True, 3.0) == 0
    assert step(False, 4.0) == 1  # quiet after writes
    assert step(False, 5.0) == 1  # no new writes
    assert step(True, 6.0, rows=3) == 1
    assert step(False, 7.0) == 1  # new writes, but within compact_interval of the last
    assert step(False, 10_000.0) == 2  # the writes are still pending: compacted later
    assert step(False, 20_000.0) == 2


class _SlowSink(_CountingSink):
    def compact_search(self) -> None:
        super().compact_search()
        time.sleep(0.05)  # the merge's duration sets the next one's earliest time


def test_a_large_load_is_compacted_when_it_ends_not_compact_interval_later() -> None:
    """Once compact_after_rows run_search rows were written since the last merge, the next
    quiet step merges again 10 x the last merge's duration after it (here ~0.5 s), not
    compact_interval (30 s) later; fewer rows still wait for compact_interval."""
    step = _stepper(_offline_worker(compact_interval=30, compact_after_rows=1000), _SlowSink())

    assert step(True, 1.0, rows=10) == 0
    assert step(False, 2.0) == 1  # quiet after writes (the first merge has no wait)
    assert step(True, 2.1, rows=1000) == 1
    assert step(False, 2.3) == 1  # 1,000 rows since, but within 10 x the merge's ~0.05 s
    assert step(False, 3.0) == 2  # ... and then, long before 2 + 30 s
    assert step(True, 4.0, rows=999) == 2
    assert step(False, 5.0) == 2  # 999 rows since: compact_interval applies
    assert step(True, 6.0, rows=5000) == 2
    assert step(True, 7.0) == 2  # never while batches keep coming
    assert step(False, 8.0) == 3
    assert step(False, 9.0) == 3  # nothing written since


def test_only_the_owner_of_partition_0_compacts_the_shared_run_search() -> None:
    """Every worker of a cluster writes the one run_search table: the owner of partition 0
    merges it, the others never do (one merge is enough; N would redo it N times)."""
    owner, other = _offline_worker(), _offline_worker()
    owner._assigned, other._assigned = {0, 2}, {1, 3}
    for worker in (owner, other):
        worker.processor.sink = _CountingSink()  # type: ignore[assignment]
        worker.processor.search_rows_written = 10_000
        asyncio.run(worker._compact_search(False, 100.0))
    assert owner.processor.sink.compactions == 1  # type: ignore[attr-defined]
    assert other.processor.sink.compactions == 0  # type: ignore[attr-defined]
    other._assigned = {0, 1, 3}  # a rebalance gave it partition 0
    asyncio.run(other._compact_search(False, 200.0))
    assert other.processor.sink.compactions == 1  # type: ignore[attr-defined]


class _PruningSink:
    """Records `prune_positions` calls; fails while `fail` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = False

    def prune_positions(self, topic: str, above: int) -> int:
        self.calls.append((topic, above))
        if self.fail:
            raise RuntimeError("ClickHouse unavailable")
        return 3


def test_position_rows_are_pruned_every_interval_busy_or_not_by_the_owner_of_partition_0(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The position table grows by a row per batch while batches keep coming, so it is
    pruned busy or not, at most every position_prune_interval, by the owner of partition 0
    only; a failed prune is logged and tried again at the next interval."""
    owner = _offline_worker(position_prune_interval=60.0, positions_kept=500)
    other = _offline_worker(position_prune_interval=60.0, positions_kept=500)
    owner._assigned, other._assigned = {0, 2}, {1, 3}
    sinks = [_PruningSink(), _PruningSink()]
    for worker, sink in zip((owner, other), sinks):
        worker.processor.sink = sink  # type: ignore[assignment]

    def prune(worker: ProjectionWorker, now: float) -> int:
        return asyncio.run(worker._prune_positions(now))

    assert prune(owner, 1.0) == 3  # at the first step
    assert sinks[0].calls == [(owner.topic, 500)]
    assert prune(owner, 30.0) == 0  # within the interval
    assert prune(owner, 61.5) == 3
    assert len(sinks[0].calls) == 2
    assert prune(other, 1.0) == prune(other, 100.0) == 0
    assert sinks[1].calls == []
    sinks[0].fail = True
    with caplog.at_level("WARNING", logger="processors.compaction"):
        assert prune(owner, 130.0) == 0
    assert "not pruned (ClickHouse unavailable)" in caplog.text
    sinks[0].fail = False
    assert prune(owner, 150.0) == 0  # the next interval, not the next step
    assert prune(owner, 191.0) == 3
    other._assigned = {0, 1, 3}  # a rebalance gave it partition 0
    assert prune(other, 200.0) == 3


class _StaleRuns:
    def __init__(self) -> None:
        self.stale_pages = {("p", "e", "r")}
        self.refreshed = 0

    def refresh_pages(self) -> int:
        self.refreshed += 1
        return 1


def test_documents_are_refreshed_when_quiet_and_at_an_interval_while_busy() -> None:
    worker = _offline_worker(page_refresh_interval=1.0, page_refresh_min_gap=0.25)
    proc = _StaleRuns()
    worker.processor = proc  # type: ignore[assignment]

    def step(busy: bool, now: float) -> int:
        asyncio.run(worker._refresh_pages(busy, now))
        return proc.refreshed

    assert step(True, 5.0) == 1  # first: the interval since "never" has passed
    assert step(True, 5.5) == 1  # busy: at most once a second
    assert step(False, 5.6) == 2  # quiet: at once ...
    assert step(False, 5.7) == 2  # ... but not more than every 0.25 s
    assert step(False, 5.9) == 3
    assert step(True, 6.95) == 4
    # after a fetch that got nothing: at once, however recent the last chunk
    assert asyncio.run(worker._refresh_pages(False, 6.96, idle=True)) is True
    assert proc.refreshed == 5
    proc.stale_pages.clear()
    assert step(False, 9.0) == 5  # nothing stale
    assert asyncio.run(worker._refresh_pages(False, 9.5, idle=True)) is False


class _Backlog:
    """The documents of `runs` runs to rewrite, two per chunk (or every chunk failing)."""

    def __init__(self, runs: int, failing: bool = False) -> None:
        self.stale_pages = {("p", "e", f"r{i}") for i in range(runs)}
        self.failing = failing
        self.chunks = 0
        self.search_rows_written = 0
        self.sink = None  # the loop's other upkeep is not due here

    def refresh_pages(self) -> int:
        self.chunks += 1
        if self.failing:
            raise RuntimeError("chDB is away")
        for _ in range(min(2, len(self.stale_pages))):
            self.stale_pages.pop()
        return 2


class _Idle:
    async def stop(self) -> None:
        return None


def _idle_steps(proc: _Backlog, steps: int) -> list[float | None]:
    """Run the worker's loop over `steps` fetches that get nothing; their waits."""
    worker = _offline_worker(batch_timeout=0.2, page_refresh_min_gap=0.25)
    worker.processor = proc  # type: ignore[assignment]
    worker._consumer = _Idle()  # type: ignore[assignment]
    waits: list[float | None] = []

    async def step(wait: float | None = None) -> int:
        waits.append(wait)
        if len(waits) == steps:
            worker._stopping.set()
        return 0

    worker.step = step  # type: ignore[method-assign]
    asyncio.run(worker.run())
    return waits


def test_an_idle_worker_rewrites_a_backlog_of_documents_chunk_after_chunk() -> None:
    """A load's last runs: their documents are rewritten one chunk per fetch that looks
    for records without waiting, not one chunk per batch_timeout (100 k runs: 50 chunks)."""
    proc = _Backlog(runs=5)
    waits = _idle_steps(proc, steps=6)
    assert proc.chunks == 3
    assert not proc.stale_pages
    assert waits == [None, BACKLOG_FETCH_S, BACKLOG_FETCH_S, None, None, None]
    # a refresh that fails is not retried at once (no busy loop logging the same failure)
    proc = _Backlog(runs=5, failing=True)
    waits = _idle_steps(proc, steps=4)
    assert waits == [None] * 4
    assert proc.chunks == 3  # tried after each full wait (the 4th step stopped the loop)


class _Rebalancing(_OnePartition):
    """A consumer of partition 0 (records 37-46), newly assigned: its fetcher already holds
    37-45 from Kafka's committed offset when the worker seeks to ClickHouse's position (37):
    what was handed out before the seek comes again after it, as with aiokafka."""

    def __init__(self, first_getmany_done: Any) -> None:
        self.first_getmany_done = first_getmany_done
        self.sought = asyncio.Event()
        self.position = 37
        self.end = 47

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[Any, list[Any]]:
        if not self.first_getmany_done.is_set():
            self.first_getmany_done.set()  # lets the assignment's read of positions finish
            self.position = 46
            return {TopicPartition("t", 0): self._records(37, 46)}
        if not self.sought.is_set():  # the fetch of 46 is answered after the seek
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.sought.wait(), timeout_ms / 1000)
        recs, self.position = self._records(self.position, self.end), self.end
        return {TopicPartition("t", 0): recs} if recs else {}

    @staticmethod
    def _records(lo: int, hi: int) -> list[Any]:
        return [SimpleNamespace(value=b"x", offset=o, timestamp=0, key=None) for o in range(lo, hi)]

    def seek(self, tp: Any, offset: int) -> None:
        self.position = offset
        self.sought.set()

    def highwater(self, tp: Any) -> int:
        return self.end

    async def commit(self, offsets: Any) -> None:
        return None


class _Positions:
    """ClickHouse's positions, answered once `release` is set (a slow read)."""

    def __init__(self, release: Any) -> None:
        self.release = release

    def positions(self, topic: str) -> dict[int, Resume]:
        assert self.release.wait(10)
        return {0: Resume(37)}


class _Recorder:
    """BatchProcessor stand-in: records the offsets of every batch prepared."""

    def __init__(self, sink: _Positions) -> None:
        self.sink = sink
        self.batches: list[list[int]] = []
        self.stale_pages: set[Any] = set()

    def forget(self, partition: int | None = None) -> None:
        return None

    def prepare(self, topic: str, partition: int, records: list[Any]) -> Any:
        self.batches.append([r.offset for r in records])
        return SimpleNamespace(last=records[-1].offset)

    async def commit(self, batch: Any) -> float:
        return 0.0


def test_records_fetched_across_an_assignment_seek_are_not_processed_twice() -> None:
    """An assignment increments the epoch, then waits for ClickHouse's positions and seeks;
    a step that started in between fetched records from the old position and, after the
    seek, the same offsets again. The step must drop what it fetched (the epoch changes
    when the seeks are done), never project a batch holding an offset twice: the summary
    tables would count those points twice for good (metric_points until a merge)."""

    async def scenario() -> list[list[int]]:
        worker = _offline_worker(batch_timeout=5.0, batch_linger=5.0, pointer_check_interval=3600)
        worker._last_pointer_check = float("inf")
        release = threading.Event()
        consumer = _Rebalancing(release)
        worker._consumer = consumer  # type: ignore[assignment]
        recorder = _Recorder(_Positions(release))
        worker.processor = recorder  # type: ignore[assignment]
        worker.next_offsets[0] = 37

        assigning = asyncio.create_task(worker.on_assigned({0}))
        await asyncio.sleep(0)  # the assignment took the lock; epoch already incremented
        assert worker._lock.locked()
        for _ in range(3):
            await worker.step()
        await assigning
        return recorder.batches

    batches = asyncio.run(scenario())
    offsets = [o for b in batches for o in b]
    assert offsets == list(range(37, 47)), str(batches)


def test_a_failed_batch_is_named_by_its_offsets_records_and_bytes() -> None:
    from processors.model import SourceEvent
    from processors.worker import _Span, _Where

    recs = [SourceEvent("t", 1, o, 0, b"k", b"x" * 1000) for o in (7, 8, 9)]
    assert str(_Where("t[1]", _Span(recs))) == "t[1] (offsets 7-9, 3 records, 3,000 bytes)"
    assert str(_Where("t[1]", None)) == "t[1]"


def _recs(*offsets: int) -> list[SourceEvent]:
    return [SourceEvent("t", 0, o, 0, b"k", b"x" * 10) for o in offsets]


def _offsets(batches: list[list[SourceEvent]] | None) -> list[list[int]] | None:
    return None if batches is None else [[r.offset for r in b] for b in batches]


def test_a_pending_batch_is_redone_with_its_bounds_once_its_records_are_all_in() -> None:
    """A batch a crash left half-written (intent 3-6) is redone with exactly its bounds:
    its records are gathered across fetches, then come the later ones."""
    buf: list[SourceEvent] = []
    assert redo_batches(buf, _recs(3, 4), 3, 6, 1 << 20) is None  # incomplete: wait
    assert _offsets(redo_batches(buf, _recs(5, 6, 7, 8), 3, 6, 1 << 20)) == [
        [3, 4, 5, 6],
        [7, 8],
    ]


def test_a_pending_batch_whose_head_left_the_log_is_skipped_not_redone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Retention deleted the head of a pending batch (intent 3-6) before its partition was
    picked up again: the log now starts after 3. The batch cannot be redone with its bounds
    (a batch over part of it is refused by the fence forever; an empty one crashed the
    worker): the records after it go on, and the skip is logged as an error."""
    assert _offsets(redo_batches([], _recs(8, 9), 3, 6, 1 << 20)) == [[8, 9]]
    assert _offsets(redo_batches([], _recs(5, 6, 7), 3, 6, 1 << 20)) == [[7]]
    assert _offsets(redo_batches([], _recs(5, 6), 3, 6, 1 << 20)) == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 3
    assert "offsets 3-6" in errors[1]
    assert "offsets 5-6 are skipped" in errors[1]
