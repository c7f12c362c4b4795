"""One batch of one partition, from log records to committed read models (shared by the live
worker and replay).

Rule: `prepare` (decode, load state, project) runs once per batch; `commit` may be retried
any number of times with the same prepared batch: intent -> tables beside the archive's
segment -> DLQ -> done. Nothing is acknowledged to Kafka before `commit` returned.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from processors.archive import EventArchive
from processors.codec import decode
from processors.errors import PartitionTaken, UndecodableEvent
from processors.model import Decoded, Poison, SourceEvent
from processors.projection import Projected, project_batch
from processors.sink import ClickHouseSink
from processors.state import PartitionState
from processors.tables import Rows
from processors.telemetry import WorkerMetrics

DlqSender = Callable[[Sequence[Poison]], Awaitable[None]]
T = TypeVar("T")
log = logging.getLogger(__name__)


async def retry_batch(
    fn: Callable[[], Awaitable[T]],
    *,
    what: object,
    check: Callable[[], None],
    pause: Callable[[float], Awaitable[None]],
    backoff_max: float,
    on_failure: Callable[[], None] = lambda: None,
    on_success: Callable[[], None] = lambda: None,
) -> T:
    """Run one step of a batch (prepare or commit) until it succeeds, never acking a failure
    (both engines). `check()` runs before every try and raises to abandon the batch;
    PartitionTaken is not retried (the caller re-seeks); any other failure is logged (`what`
    formatted with %s then, so it may be an object that describes the batch lazily), calls
    `on_failure()` and waits `pause(delay)`, delay doubling from 50 ms up to `backoff_max`."""
    delay = 0.05
    while True:
        check()
        try:
            result = await fn()
        except PartitionTaken:
            raise
        except Exception as exc:  # noqa: BLE001 - any sink failure: retry, never ack
            on_failure()
            log.warning(
                "batch on %s failed (%s: %s); retrying in %.2fs",
                what,
                type(exc).__name__,
                exc,
                delay,
            )
            await pause(delay)
            delay = min(delay * 2, backoff_max)
        else:
            on_success()
            return result


def _from_offset(records: Sequence[SourceEvent], done: int) -> list[SourceEvent]:
    """The records at or after offset `done`, each offset once, in log order. A batch's
    offsets increase strictly; one that comes twice (records fetched on both sides of a
    seek) is the same record: projected twice, its points would be counted twice for good
    by the summary tables, whose rows add up (and by metric_points until a merge)."""
    out = [r for r in records if r.offset >= done]
    if all(a.offset < b.offset for a, b in itertools.pairwise(out)):
        return out
    once = sorted({r.offset: r for r in reversed(out)}.values(), key=lambda r: r.offset)
    log.warning(
        "%s[%d]: %d records of a batch came twice or out of order (offsets %d-%d); each"
        " is projected once",
        out[0].topic,
        out[0].partition,
        len(out) - len(once),
        once[0].offset,
        once[-1].offset,
    )
    return once


def split_by_bytes(records: Sequence[SourceEvent], max_bytes: int) -> list[list[SourceEvent]]:
    """Consecutive batches of at most `max_bytes` of values each (a record larger than that
    is a batch of its own). A fetch can hand over several times the byte budget (its record
    count is sized from a running mean of record sizes, and the first records may be small
    run events before 700 KB metric events): one batch of 77 MB (3.75 M points) made the
    `metric_points` insert exceed chDB's per-query memory cap, and its retries never ended."""
    out: list[list[SourceEvent]] = []
    size = 0
    for r in records:
        n = len(r.value or b"")
        if not out or size + n > max_bytes:
            out.append([])
            size = 0
        out[-1].append(r)
        size += n
    return out


def redo_batches(
    buf: list[SourceEvent],
    records: Sequence[SourceEvent],
    first: int,
    last: int,
    max_bytes: int,
) -> list[list[SourceEvent]] | None:
    """The batches of a fetch while a pending intent [`first`, `last`] (a batch a crash
    left half-written) is to be redone with its exact bounds, so that its inserts carry the
    tokens of the first attempt. `buf` gathers the range's records across fetches (the
    caller keeps it). None while the range is incomplete; else the redo batch, then the
    later records split by bytes.

    When the range's head is gone from the log (retention deleted it before the partition
    was picked up again: the records start after `first`), the batch cannot be redone with
    its bounds: what it wrote before the crash stays, its records still held are dropped,
    loudly, and the partition goes on after `last` (a batch over part of the range would
    be refused by the fence forever, and an empty one crashed the worker)."""
    if not buf and records and records[0].offset > first:
        held = [r.offset for r in records if r.offset <= last]
        log.error(
            "offsets %d-%d (a batch interrupted before it was done) cannot be redone: the log"
            " starts at %d now (retention?); what the batch wrote stays%s",
            first,
            last,
            records[0].offset,
            f", its offsets {held[0]}-{held[-1]} are skipped" if held else "",
        )
        return split_by_bytes([r for r in records if r.offset > last], max_bytes)
    buf.extend(r for r in records if r.offset <= last)
    rest = [r for r in records if r.offset > last]
    if not (buf and buf[-1].offset >= last) and not rest:
        return None
    return [list(buf), *split_by_bytes(rest, max_bytes)]


@dataclass
class PreparedBatch:
    topic: str
    partition: int
    records: Sequence[SourceEvent]
    projected: Projected

    @property
    def first(self) -> int:
        return self.records[0].offset

    @property
    def last(self) -> int:
        return self.records[-1].offset


RunKey = tuple[str, str, str]


def _keys(rows: Rows, table: str) -> Iterator[RunKey]:
    """(project, experiment id, run id) of each of `rows`' rows of `table`."""
    return zip(
        rows.column(table, "project"),
        rows.column(table, "experiment_id"),
        rows.column(table, "run_id"),
    )


async def refresh_chunk(proc: BatchProcessor) -> bool:
    """Rewrite a chunk of `proc`'s stale search documents in a thread (`refresh_pages`);
    whether it did. A failure is logged and left for the next time: the documents are a
    cache, searches read those runs from `run_search` meanwhile."""
    if not proc.stale_pages:
        return False
    try:
        await asyncio.to_thread(proc.refresh_pages)
    except Exception as exc:  # noqa: BLE001 - retried at the next refresh
        log.warning("search documents not refreshed (%s); retried later", exc)
        return False
    return True


class StaleRuns:
    """The runs (project, experiment id, run id) whose `run_page` search document is behind
    `run_search`, handed out smallest key first (`take`).

    Run ids are UUIDv7, so within an experiment the smallest key is the oldest run: the
    runs left stale are the newest, a contiguous tail of `run_search`'s key range, not a
    random sample of it. A chunk's rewrite then reads neighbouring granules (2,000 of 100 k
    runs: 63 ms instead of 112 for a random 2,000), and a search page whose runs are read
    from `run_search` because their documents are stale reads the tail's granules only (100
    runs: 23 ms instead of 61). A heap beside the set: adding a run already stale costs a set
    lookup, a new run (a larger key than those before it, usually) ~one comparison."""

    def __init__(self) -> None:
        self._keys: set[RunKey] = set()
        self._heap: list[RunKey] = []  # the same keys, as a heap

    def update(self, keys: Iterable[RunKey]) -> None:
        for key in keys:
            if key not in self._keys:
                self._keys.add(key)
                heapq.heappush(self._heap, key)

    def take(self, limit: int) -> list[RunKey]:
        """Remove and return up to `limit` runs, smallest keys first."""
        out = [heapq.heappop(self._heap) for _ in range(min(limit, len(self._heap)))]
        self._keys.difference_update(out)
        return out

    def clear(self) -> None:
        self._keys.clear()
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[RunKey]:
        return iter(self._keys)


async def _both(write: Awaitable[float], archive: Awaitable[str]) -> float:
    """The read models' inserts and the archive's segment (Avro encoding and an S3 PUT: a
    fifth of a catch-up batch's commit when they ran one after the other), side by side:
    they are independent and both idempotent (the segment's key is its offset range, the
    inserts carry deduplication tokens). Both are waited for, also when one fails, so a
    retried commit never runs beside the failed attempt's other half (a cancelled commit,
    at shutdown, leaves its threads to end on their own, as a lone insert did); the sink's
    error is raised first (a zombie's PartitionTaken stays what the retry sees)."""
    got = await asyncio.gather(write, archive, return_exceptions=True)
    for result in got:
        if isinstance(result, BaseException):
            raise result
    return cast(float, got[0])


class BatchProcessor:
    """Projects and commits batches into one database (`sink`); keeps per-partition state."""

    def __init__(
        self,
        sink: ClickHouseSink,
        *,
        archive: EventArchive | None = None,
        dlq: DlqSender | None = None,
        metrics: WorkerMetrics | None = None,
        lease_s: float = 1.0,
    ) -> None:
        self.sink = sink
        #: an ownership check (`sink.check_owner`) is trusted this long; a write after a
        #: longer gap (this process was frozen: GC, SIGSTOP, a paused VM) checks again first
        self.lease_s = lease_s
        #: per partition, when its ownership was last checked (batches a few ms apart share
        #: one check: a query of ~3 ms each time is a tenth of a small batch's cost)
        self.checked: dict[int, float] = {}
        self.archive = archive
        self.dlq = dlq
        self.metrics = metrics
        self.states: dict[int, PartitionState] = {}
        #: next offset not yet done per partition (from ClickHouse on first use)
        self.done: dict[int, int] = {}
        #: runs whose `run_page` search document is behind `run_search` (refresh_pages)
        self.stale_pages = StaleRuns()
        #: `run_search` rows written since this processor started (each a partial row that
        #: search's FINAL merges until the table is compacted; see `ProjectionWorker`)
        self.search_rows_written = 0
        #: called after each committed batch (`runstream serve` wakes the API's reads that
        #: wait for their writes to be projected); must not block
        self.on_done: list[Callable[[], None]] = []

    def forget(self, partition: int | None = None) -> None:
        """Drop cached state (partition revoked, batch abandoned, database switched)."""
        if partition is None:
            self.states.clear()
            self.done.clear()
            self.checked.clear()
        else:
            self.states.pop(partition, None)
            self.done.pop(partition, None)
            self.checked.pop(partition, None)

    def prepare(
        self, topic: str, partition: int, records: Sequence[SourceEvent]
    ) -> PreparedBatch | None:
        """Blocking: decode, load missing state from ClickHouse, project (pure).

        Records before the partition's stored position were projected already (a stale
        consumer, a zombie's redelivery): they are dropped; None when nothing is left.
        """
        done = self.done.get(partition)
        if done is None:
            resume = self.sink.positions(topic).get(partition)
            done = self.done[partition] = resume.offset if resume is not None else 0
        records = _from_offset(records, done)
        if not records:
            return None
        decoded: list[Decoded] = []
        poison: list[Poison] = []
        for rec in records:
            try:
                decoded.append(decode(rec))
            except UndecodableEvent as exc:
                poison.append(Poison(rec, str(exc), exc.reason))
        state = self.states.get(partition)
        if state is None or state.size() > 200_000:
            state = self.states[partition] = PartitionState(partition)
        self.sink.load_state(state, decoded, records[0].offset)
        projected = project_batch(decoded, state)
        projected.progress.poison[:0] = poison
        return PreparedBatch(topic, partition, records, projected)

    async def commit(self, batch: PreparedBatch) -> float:
        """Write the batch everywhere, then mark it done; returns the sink seconds."""
        t, p, first, last = batch.topic, batch.partition, batch.first, batch.last

        def fence() -> None:
            """Raise PartitionTaken unless this batch's partition is still ours (checked
            in ClickHouse at most every `lease_s`, across the partition's batches). The
            lease runs from before the check: a process frozen after the query (GC, SIGSTOP)
            must not wake up trusting a check older than its freeze."""
            if time.monotonic() - self.checked.get(p, -math.inf) > self.lease_s:
                self.checked.pop(p, None)
                asked = time.monotonic()
                self.sink.check_owner(t, p, first, last)
                self.checked[p] = asked

        def intent() -> None:
            fence()
            self.sink.mark_intent(t, p, first, last)

        def done() -> None:
            fence()
            self.sink.mark_done(t, p, first, last, len(batch.records))

        await asyncio.to_thread(intent)
        write = asyncio.to_thread(self.sink.write, t, p, first, last, batch.projected, fence)
        if self.archive is None:
            seconds = await write
        else:
            seconds = await _both(write, asyncio.to_thread(self.archive.put, t, p, batch.records))
        # after both: a retry after a failed half does not send the poison again
        if self.dlq is not None and batch.projected.progress.poison:
            await self.dlq(batch.projected.progress.poison)
        await asyncio.to_thread(done)
        self.done[p] = last + 1
        for listener in self.on_done:
            try:
                listener()
            except Exception:  # noqa: BLE001 - the batch is committed; a listener is a hint
                log.exception("batch-done listener failed")
        rows = batch.projected.rows
        self.search_rows_written += rows.count("run_search")
        written = set(_keys(rows, "run_page"))  # documents written with their rows
        self.stale_pages.update(k for k in _keys(rows, "run_search") if k not in written)
        self._count(batch, seconds)
        return seconds

    def refresh_pages(self, limit: int = 2000) -> int:
        """Blocking: rewrite the search documents of up to `limit` runs written since their
        last refresh, the oldest first (`StaleRuns`; migration 0003; one read of `run_search`
        of ~2,000 runs takes ~60-100 ms, so a bulk load does not stall the worker); returns
        how many. Outside any batch's commit: a document is a cache that reads check against
        `run_search`, so a failure here loses nothing (the runs stay stale and are tried
        again)."""
        keys = self.stale_pages.take(limit)
        try:
            self.sink.refresh_pages(keys)
        except BaseException:
            self.stale_pages.update(keys)
            raise
        return len(keys)

    def _count(self, batch: PreparedBatch, seconds: float) -> None:
        m, t, pr = self.metrics, batch.topic, batch.projected.progress
        if m is None:
            return
        m.events.labels(t).inc(pr.events)
        m.points.labels(t).inc(pr.points)
        m.duplicates.labels(t).inc(pr.duplicates)
        m.rejected.labels(t).inc(pr.rejected)
        m.batches.labels(t).inc()
        m.sink_seconds.labels(t).observe(seconds)
        for poison in pr.poison:
            m.dlq.labels(t, poison.reason).inc()
