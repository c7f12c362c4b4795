"""The projection as a faust-streaming agent (alternative engine to `ProjectionWorker`).

`make_app(client, bootstrap=…, database=…)` returns a `faust.App` with one agent that does
`async for events in stream.take_events(n, within=t)` (faust's `take()` yielding the events,
so the partition/offset of each value is known) and hands each partition's slice to the same
`BatchProcessor` as the aiokafka worker. `run_faust_worker(...)` runs it until SIGTERM/SIGINT.

What faust needed to be as correct as the aiokafka worker (faust-streaming 0.15.3):

- `take()`/`take_events()` ack the whole batch in a `finally:` around their `yield`: the
  agent never lets an exception out of the loop body; a failing sink is retried inside it
  (exponential backoff) until it succeeds or the batch is no longer ours (rebalance started
  = `app.rebalancing_count` changed, or the app is stopping). An abandoned batch is acked by
  faust although it was not written; that is harmless because of the next point.
- The position lives in ClickHouse with the state. faust seeks to the Kafka-committed
  offsets itself (`Consumer.perform_seek()`, called by the table recovery at the end of every
  rebalance and by `getmany` while the flow is stopped), so that method is wrapped on the
  app's consumer: after faust's seek, every assigned partition is sought to its ClickHouse
  position (and faust's read-offset filter reset). Kafka's committed offsets stay advisory.
- A pending intent (crash between `intent` and `done`) is redone with exactly its
  boundaries: each partition's events are split at the intent's last offset and buffered
  across `take` batches until the range is complete (faust's `take` knows nothing of it).
- Events fetched under an older consumer generation are skipped (faust's stream does this;
  the agent checks again for events already inside `take`'s buffer), records before the
  partition's position are dropped, and each slice is sorted/deduplicated by offset.
- No tables, no changelog or leader topics (`topic_disable_leader`), no web server, nothing
  declared on the broker (`topic_allow_declare=False`), `store="memory://"`.

Not covered (the aiokafka worker does these): following a blue/green pointer switch while
running (the active database is resolved once at `make_app`; restart after a replay switch),
lag gauges, static membership.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import faust

from processors import heap
from processors.archive import EventArchive
from processors.codec import DLQ_TOPIC, EVENTS_TOPIC
from processors.compaction import COMPACTING_PARTITION, PositionPruning, SearchCompaction
from processors.errors import PartitionTaken
from processors.migrate import migrate
from processors.model import Poison, SourceEvent
from processors.pipeline import (
    BatchProcessor,
    PreparedBatch,
    redo_batches,
    refresh_chunk,
    retry_batch,
    split_by_bytes,
)
from processors.sink import ClickHouseSink, Resume
from processors.telemetry import WorkerMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class FaustSettings:
    """Tuning of the faust engine; the defaults start and rebalance in seconds locally."""

    app_id: str = "runstream-processors-faust"
    #: events per take(); faust bounds batches by count only, so memory is about
    #: (batch_size + stream_buffer_maxsize) x message size (the byte cap splits inserts only)
    batch_size: int = 5_000
    batch_max_bytes: int = 16 * 1024 * 1024
    batch_timeout: float = 0.2
    session_timeout: float = 6.0
    heartbeat_interval: float = 0.5
    commit_interval: float = 1.0
    request_timeout: float = 30.0
    retry_backoff_max: float = 5.0
    stream_buffer_maxsize: int = 4096
    #: the search documents of the runs written are rewritten this often (migration 0003),
    #: and `run_search` merged if due (`processors.compaction`; "quiet": no batch since the
    #: last time)
    page_refresh_interval: float = 1.0
    compact_interval: float = 30.0
    compact_after_rows: int = 5_000
    position_prune_interval: float = 60.0
    positions_kept: int = 1_000


class _App(faust.App):
    """faust's App whose consumer's `perform_seek` (faust: "seek to the committed offsets",
    run by the table recovery after every assignment and by `getmany` while the flow is
    stopped) continues with `after_seek`: the seek to the positions stored in ClickHouse.
    Wrapped where the consumer is created, so no rebalance can happen before it."""

    after_seek: Callable[[], Awaitable[None]] | None = None

    def _new_consumer(self) -> Any:
        consumer: Any = super()._new_consumer()
        faust_seek = consumer.perform_seek

        async def perform_seek() -> None:
            await faust_seek()  # faust's bookkeeping (committed offsets), then ours wins
            if self.after_seek is not None:
                await self.after_seek()

        consumer.perform_seek = perform_seek
        return consumer


class _Abandon(Exception):
    """The batch is no longer ours (a rebalance started, or the app is stopping)."""


class _Taken(_Abandon):
    """Another worker wrote this partition past the batch (PartitionTaken)."""


class FaustProjector:
    """Owns the faust app and the projection state; `make_app` returns `.app`."""

    def __init__(
        self,
        client: Any,
        *,
        bootstrap: str,
        database: str,
        topic: str = EVENTS_TOPIC,
        dlq_topic: str = DLQ_TOPIC,
        archive: EventArchive | None = None,
        metrics: WorkerMetrics | None = None,
        settings: FaustSettings | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        self.client = client
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.settings = s = settings or FaustSettings()
        self.metrics = metrics or WorkerMetrics()
        base = ClickHouseSink(client, database)
        migrate(client, base.database)
        active = base.active_database()
        if active != base.database:
            migrate(client, active)
        self.processor = BatchProcessor(
            ClickHouseSink(client, active),
            archive=archive,
            dlq=self._send_dlq,
            metrics=self.metrics,
        )
        #: next offset to project per assigned partition (from ClickHouse at each seek)
        self.next_offsets: dict[int, int] = {}
        self._redo: dict[int, int] = {}
        self._redo_buf: dict[int, list[SourceEvent]] = defaultdict(list)
        self._lock = asyncio.Lock()
        if data_dir is None:
            data_dir = tempfile.mkdtemp(prefix="runstream-faust-")
        self.app = _App(
            s.app_id,
            broker=f"kafka://{bootstrap}",
            datadir=str(data_dir),
            store="memory://",
            web_enabled=False,
            autodiscover=False,
            topic_disable_leader=True,
            topic_allow_declare=False,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.session_timeout,
            broker_heartbeat_interval=s.heartbeat_interval,
            broker_commit_interval=s.commit_interval,
            broker_request_timeout=s.request_timeout,
            broker_rebalance_timeout=s.session_timeout,
            stream_buffer_maxsize=s.stream_buffer_maxsize,
            producer_acks=-1,
        )
        source = self.app.topic(topic, key_serializer="raw", value_serializer="raw")
        self.app.agent(source, name=f"{s.app_id}.project")(self._agent)
        self.app.after_seek = self._seek_to_positions
        self.compaction = SearchCompaction(s.compact_interval, s.compact_after_rows)
        self.pruning = PositionPruning(s.position_prune_interval, s.positions_kept)
        #: batches committed, and their count at the last maintenance tick
        self._committed = 0
        self._committed_seen = 0
        self.app.timer(s.page_refresh_interval, name=f"{s.app_id}.maintain")(self._maintain)

    @property
    def database(self) -> str:
        return self.processor.sink.database

    # ---- the agent -------------------------------------------------------------------
    async def _agent(self, stream: Any) -> None:
        s = self.settings
        async for events in stream.take_events(s.batch_size, within=s.batch_timeout):
            # Never raise out of here: take_events acks `events` in a finally.
            try:
                await self._handle(events)
            except _Abandon:
                pass
            except Exception as exc:  # a bug: stop rather than go on past unwritten events
                log.exception("faust projection failed; stopping the app")
                self.next_offsets.clear()  # ignore what is still buffered
                await self.app.crash(exc)

    async def _handle(self, events: Sequence[Any]) -> None:
        app = self.app
        rebalance = app.rebalancing_count
        generation = app.consumer_generation_id
        by_partition: dict[int, dict[int, SourceEvent]] = defaultdict(dict)
        for ev in events:
            m = ev.message
            if m.topic != self.topic or m.generation_id != generation:
                continue  # fetched before the current assignment: re-sought since
            ts = round(m.timestamp * 1000) if m.timestamp is not None else 0
            by_partition[m.partition][m.offset] = SourceEvent(
                self.topic, m.partition, m.offset, ts, m.key, m.value
            )
        async with self._lock:
            self._check(rebalance)
            for partition, recs in sorted(by_partition.items()):
                start = self.next_offsets.get(partition)
                if start is None:
                    continue  # not sought by us (not assigned any more)
                ordered = [recs[o] for o in sorted(recs) if o >= start]
                if ordered and ordered[0].offset > start and partition not in self._redo:
                    if not await self._log_starts_at(partition, ordered[0].offset):
                        # records fetched before our last seek (faust's stream buffer
                        # outlives it): projected, they would pass over start..first-1
                        log.warning(
                            "%s[%d]: expected offset %d, got %d: dropped, re-sought",
                            self.topic,
                            partition,
                            start,
                            ordered[0].offset,
                        )
                        await self._reseek(partition)
                        continue
                    log.warning(
                        "%s[%d]: expected offset %d, the log starts at %d now (retention)",
                        self.topic,
                        partition,
                        start,
                        ordered[0].offset,
                    )
                try:
                    for batch in self._batches(partition, ordered):
                        await self._process(partition, batch, rebalance)
                except _Taken:
                    await self._reseek(partition)

    def _batches(self, partition: int, recs: list[SourceEvent]) -> list[list[SourceEvent]]:
        """Split a partition's slice; a pending intent range is re-assembled exactly."""
        redo_last = self._redo.get(partition)
        if redo_last is None:
            return self._split(recs)
        first = self.next_offsets.get(partition, recs[0].offset if recs else 0)
        out = redo_batches(
            self._redo_buf[partition], recs, first, redo_last, self.settings.batch_max_bytes
        )
        if out is None:
            return []  # the range is not complete yet: wait for the next take batch
        del self._redo[partition]
        self._redo_buf.pop(partition, None)
        if not out or out[0][0].offset > redo_last:  # skipped: its head left the log
            self.next_offsets[partition] = redo_last + 1
        return out

    def _split(self, recs: list[SourceEvent]) -> list[list[SourceEvent]]:
        """At most `batch_max_bytes` of values per batch (take() counts events only)."""
        return split_by_bytes(recs, self.settings.batch_max_bytes)

    async def _process(self, partition: int, records: list[SourceEvent], rebalance: int) -> None:
        try:
            batch: PreparedBatch | None = await self._retry(
                partition,
                rebalance,
                lambda: asyncio.to_thread(self.processor.prepare, self.topic, partition, records),
                on_error=lambda: self.processor.forget(partition),
            )
            if batch is not None:
                prepared = batch
                await self._retry(partition, rebalance, lambda: self.processor.commit(prepared))
                self._committed += 1
        except _Abandon:
            self.processor.forget(partition)
            raise
        self.next_offsets[partition] = records[-1].offset + 1

    def _check(self, rebalance: int) -> None:
        app = self.app
        if app.should_stop or app.rebalancing or app.rebalancing_count != rebalance:
            raise _Abandon()

    async def _retry(
        self,
        partition: int,
        rebalance: int,
        fn: Callable[[], Awaitable[T]],
        on_error: Callable[[], None] | None = None,
    ) -> T:
        def failed() -> None:
            if on_error is not None:
                on_error()
            self.metrics.retries.labels(self.topic).inc()

        try:
            return await retry_batch(
                fn,
                what=f"{self.topic}[{partition}]",
                check=lambda: self._check(rebalance),
                pause=asyncio.sleep,
                backoff_max=self.settings.retry_backoff_max,
                on_failure=failed,
            )
        except PartitionTaken as exc:  # a zombie: the partition's new owner goes on
            log.warning("%s", exc)
            raise _Taken() from None

    async def _send_dlq(self, poison: Sequence[Poison]) -> None:
        producer = self.app.producer
        futs = []
        for p in poison:
            headers = [
                ("error", p.error.encode()[:4000]),
                ("reason", p.reason.encode()),
                ("source_topic", p.src.topic.encode()),
                ("source_partition", str(p.src.partition).encode()),
                ("source_offset", str(p.src.offset).encode()),
            ]
            futs.append(
                await producer.send(self.dlq_topic, p.src.key, p.src.value, None, None, headers)
            )
        await asyncio.gather(*futs)

    async def _maintain(self) -> None:
        """On the timer, between batches (the agent's lock: one client is never used by two
        threads at once, which an HTTP session refuses): merge `run_search` and prune the
        position rows when due, then rewrite the search documents of the runs written since
        the last time (a cache: a failure only leaves searches reading those runs from
        `run_search`). Quiet since the last tick (a load's last runs), the documents are
        rewritten chunk after chunk until one is committed, the lock released between chunks:
        a batch waits for one chunk at most."""
        async with self._lock:
            busy = self._committed != self._committed_seen
            self._committed_seen = self._committed
            await self.compaction.maybe(
                lambda: self.processor.sink.compact_search(),
                written=self.processor.search_rows_written,
                busy=busy,
                owns_partition_0=COMPACTING_PARTITION in self.next_offsets,
                now=time.monotonic(),
            )
            sink = self.processor.sink
            await self.pruning.maybe(
                lambda above: sink.prune_positions(self.topic, above),
                owns_partition_0=COMPACTING_PARTITION in self.next_offsets,
                now=time.monotonic(),
            )
            if not await refresh_chunk(self.processor) or busy:
                return
        while self.processor.stale_pages:
            async with self._lock:
                if self._committed != self._committed_seen:
                    return  # batches came: back to one chunk a tick
                if not await refresh_chunk(self.processor):
                    return

    # ---- positions: ClickHouse, not Kafka ----------------------------------------------
    async def _seek_to_positions(self) -> None:
        consumer: Any = self.app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic == self.topic]
        resume = await self._positions()
        async with self._lock:
            self.next_offsets.clear()
            self._redo.clear()
            self._redo_buf.clear()
            self.processor.forget()
            for tp in tps:
                await self._seek_partition(consumer, tp, resume.get(tp.partition))
            log.info("faust projection sought to ClickHouse positions %s", self.next_offsets)

    async def _reseek(self, partition: int) -> None:
        """Our view of `partition` is stale (we were a zombie, or a zombie wrote in front of
        us): continue from ClickHouse's position, never past unwritten records. The caller
        holds the lock."""
        consumer: Any = self.app.consumer
        mine = [t for t in consumer.assignment() if t.topic == self.topic]
        tp = next((t for t in mine if t.partition == partition), None)
        self.processor.forget(partition)
        self._redo.pop(partition, None)
        self._redo_buf.pop(partition, None)
        if tp is None:  # revoked meanwhile: the new owner seeks
            self.next_offsets.pop(partition, None)
            return
        offset = await self._seek_partition(consumer, tp, (await self._positions()).get(partition))
        log.info("%s[%d] re-sought to its ClickHouse position %d", self.topic, partition, offset)

    async def _seek_partition(self, consumer: Any, tp: Any, r: Resume | None) -> int:
        """Seek `tp` to its ClickHouse resume point `r` (None: offset 0); a pending intent
        is to be redone with its exact bounds. Returns the offset."""
        offset = r.offset if r is not None else 0
        # In the consumer's own thread: faust's `consumer.seek()` calls aiokafka's seek from
        # this (the app's) thread, which deletes from the fetcher's record buffer while the
        # consumer thread iterates it (KeyError in `fetched_records`, the Fetcher service
        # crashes and the app stops consuming). `seek_wait` runs it in the consumer thread.
        await consumer.seek_wait({tp: offset})
        consumer._read_offset[tp] = offset if offset else None
        consumer._committed_offset[tp] = offset if offset else None
        self.next_offsets[tp.partition] = offset
        if r is not None and r.redo_last is not None:
            self._redo[tp.partition] = r.redo_last
        return offset

    async def _log_starts_at(self, partition: int, offset: int) -> bool:
        """Whether the log of `partition` starts at `offset` or later now (the records
        before it were deleted: retention), so a slice starting there has no gap before it.
        False when the broker cannot say."""
        consumer: Any = self.app.consumer
        tp = next(
            (
                t
                for t in consumer.assignment()
                if t.topic == self.topic and t.partition == partition
            ),
            None,
        )
        if tp is None:
            return False
        try:
            earliest = await consumer.earliest_offsets(tp)
        except Exception as exc:  # noqa: BLE001 - unknown: treated as a gap, re-sought
            log.warning("%s[%d]: log start unknown (%s)", self.topic, partition, exc)
            return False
        return offset <= int(earliest.get(tp, -1))

    async def _positions(self) -> dict[int, Any]:
        delay = 0.1
        while True:
            if self.app.should_stop:
                return {}  # no seek needed: the app is stopping, nothing will be processed
            try:
                return await asyncio.to_thread(self.processor.sink.positions, self.topic)
            except Exception as exc:  # noqa: BLE001 - ClickHouse down: the seek must wait
                log.warning("positions unreadable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_backoff_max)


_PROJECTORS: weakref.WeakKeyDictionary[faust.App, FaustProjector] = weakref.WeakKeyDictionary()


def make_app(
    client: Any,
    *,
    bootstrap: str,
    database: str,
    topic: str = EVENTS_TOPIC,
    dlq_topic: str = DLQ_TOPIC,
    archive: EventArchive | None = None,
    metrics: WorkerMetrics | None = None,
    settings: FaustSettings | None = None,
    data_dir: str | Path | None = None,
) -> faust.App:
    """A faust app projecting `topic` into `database` (migrated here; blocking).

    Start it with `await app.start()` / `await app.stop()` inside one event loop, or use
    `run_faust_worker`. `projector(app)` gives the projection state (metrics, positions).
    """
    p = FaustProjector(
        client,
        bootstrap=bootstrap,
        database=database,
        topic=topic,
        dlq_topic=dlq_topic,
        archive=archive,
        metrics=metrics,
        settings=settings,
        data_dir=data_dir,
    )
    _PROJECTORS[p.app] = p
    return p.app


def projector(app: faust.App) -> FaustProjector:
    return _PROJECTORS[app]


async def serve(app: faust.App, stop: asyncio.Event) -> None:
    """Run `app` until `stop` is set."""
    await app.start()
    try:
        waits = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(app.wait_until_stopped()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
    finally:
        await app.stop()


def run_faust_worker(client: Any, *, bootstrap: str, database: str, **kwargs: Any) -> None:
    """Block projecting with the faust engine until SIGTERM or SIGINT (`make_app` kwargs)."""
    heap.tune_gc()

    async def main(data_dir: str) -> None:
        kwargs.setdefault("data_dir", data_dir)
        app = make_app(client, bootstrap=bootstrap, database=database, **kwargs)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(app, stop)

    with tempfile.TemporaryDirectory(prefix="runstream-faust-") as tmp:
        asyncio.run(main(tmp))
