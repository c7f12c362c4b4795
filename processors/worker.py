"""The live projection worker: Kafka consumer group -> BatchProcessor, one class for both
deployment shapes (inside the API process sharing its chDB client, or standalone against a
ClickHouse server URL).

Rules:
- A plain aiokafka consumer with manual commits (not a faust agent; see README "Why not a
  faust agent"): the position lives in ClickHouse with the state and is read on every
  assignment; Kafka's committed offset is only advisory (for lag dashboards).
- A batch is acknowledged only after its sink write succeeded; a failing sink is retried
  inside the loop with backoff, forever, while the partition is still ours.
- Poison events go to the DLQ with the error and the original bytes; the partition flows on.
- `python -m processors.worker …` runs it standalone (see `processors.cli`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from processors import heap
from processors.archive import EventArchive
from processors.codec import DLQ_TOPIC, EVENTS_TOPIC
from processors.compaction import COMPACTING_PARTITION, PositionPruning, SearchCompaction
from processors.errors import PartitionTaken, ProcessorError
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
from processors.sink import ClickHouseSink
from processors.telemetry import WorkerMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerSettings:
    """Tuning; the defaults start and rebalance in about a second on a local broker."""

    group_id: str = "runstream-processors"
    group_instance_id: str | None = None
    batch_size: int = 20_000
    batch_max_bytes: int = 16 * 1024 * 1024
    batch_timeout: float = 0.2
    batch_linger: float = 0.02
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 500
    max_partition_fetch_bytes: int = 16 * 1024 * 1024
    retry_backoff_max: float = 5.0
    pointer_check_interval: float = 1.0
    #: while batches keep coming, the search documents of the runs written are rewritten
    #: at most this often (and at once when the topic goes quiet); see migration 0003
    page_refresh_interval: float = 1.0
    #: ... and when it goes quiet, at most this often
    page_refresh_min_gap: float = 0.25
    #: `run_search` merges (`processors.compaction`): at most every max(this, 50 x the last
    #: merge's duration) seconds ...
    compact_interval: float = 30.0
    #: ... or 10 x its duration after the last once this many rows were written since
    compact_after_rows: int = 5_000
    #: `projection_position` (a row per batch) is pruned at most this often
    #: (`processors.compaction.PositionPruning`) ...
    position_prune_interval: float = 60.0
    #: ... in the partitions holding more than this many rows
    positions_kept: int = 1_000


#: while batches keep coming, the freed C heap is given back at most this often
TRIM_EVERY_S = 2.0
#: while a batch lingers for more records, how often it looks whether a read waits for
#: the records it holds (`ProjectionWorker.awaited`)
HURRY_CHECK_S = 0.002
#: how long a fetch waits for records while the search documents of runs written before
#: the topic went quiet are still being rewritten, chunk after chunk (`run`)
BACKLOG_FETCH_S = 0.005


class _Span:
    """A batch's offsets, record count and bytes, for a failure's log line: formatted only
    when a try fails (the byte count is a pass over every record)."""

    def __init__(self, records: Sequence[SourceEvent]) -> None:
        self.records = records

    def __str__(self) -> str:
        r = self.records
        size = sum(len(x.value or b"") for x in r)
        return f"offsets {r[0].offset}-{r[-1].offset}, {len(r)} records, {size:,} bytes"


class _Where:
    def __init__(self, name: str, span: _Span | None) -> None:
        self.name, self.span = name, span

    def __str__(self) -> str:
        return self.name if self.span is None else f"{self.name} ({self.span})"


class _Abandon(Exception):
    """The batch is no longer ours (revoked, stopping, database switched)."""


class _Taken(_Abandon):
    """Another worker wrote this partition past the batch (PartitionTaken)."""


class ProjectionWorker:
    """Projects `topic` into the read models of `database` (follows its read-model pointer).

    Args:
        client: a clickhouse-connect client (chDB `chdb://…` or HTTP); thread-safe, shared.
        bootstrap: Kafka bootstrap servers.
        database: the base read-model database (holds `read_models_pointer`).
        archive: S3 event archive, or None to not archive.
        metrics: prometheus metrics (pass one bound to the API's registry to expose them).
    """

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
        settings: WorkerSettings | None = None,
        writers: Sequence[Any] = (),
    ) -> None:
        self.client = client
        #: more clients a small batch's inserts share (`ClickHouseSink.writers`)
        self.writers = tuple(writers)
        self.bootstrap = bootstrap
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.settings = settings or WorkerSettings()
        self.metrics = metrics or WorkerMetrics()
        self.base = ClickHouseSink(client, database)
        self.processor = BatchProcessor(
            ClickHouseSink(client, database, self.writers),
            archive=archive,
            dlq=self._send_dlq,
            metrics=self.metrics,
        )
        self.next_offsets: dict[int, int] = {}
        #: set where reads wait in this process for their writes to be projected
        #: (`runstream serve`): given the last offset fetched per partition, whether a read
        #: waits for nothing beyond them; the batch then stops lingering (see `_fetch`)
        self.awaited: Callable[[Mapping[int, int]], bool] | None = None
        self._redo: dict[int, int] = {}
        self._redo_buf: dict[int, list[SourceEvent]] = defaultdict(list)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._epoch = 0
        #: running mean size of a record value (None until one is seen): sizes each
        #: getmany to the byte budget
        self._mean_record_bytes: float | None = None
        #: where the next fetch's shares start in the sorted assignment (`_take`)
        self._turn = 0
        #: records were projected since the last heap trim: trimmed on the next idle step,
        #: and every TRIM_EVERY_S while busy (after every busy step, the next batches
        #: only fault the same pages back in)
        self._heap_dirty = False
        self._trimmed_at = 0.0
        self._stopping = asyncio.Event()
        self._assigned: set[int] = set()
        self._last_pointer_check = 0.0
        self._pages_at = 0.0
        self.compaction = SearchCompaction(
            self.settings.compact_interval, self.settings.compact_after_rows
        )
        self.pruning = PositionPruning(
            self.settings.position_prune_interval, self.settings.positions_kept
        )

    @property
    def database(self) -> str:
        """The database currently written (changes when a replay switches the pointer)."""
        return self.processor.sink.database

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        active = await asyncio.to_thread(self._active_database)
        self.processor.sink = ClickHouseSink(self.client, active, self.writers)
        s = self.settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=s.group_id,
            group_instance_id=s.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_partition_fetch_bytes=s.max_partition_fetch_bytes,
            fetch_max_bytes=max(s.max_partition_fetch_bytes, s.batch_max_bytes),
        )
        await self._consumer.start()
        self._consumer.subscribe([self.topic], listener=_Listener(self))

    def _active_database(self) -> str:
        migrate(self.client, self.base.database)
        active = self.base.active_database()
        if active != self.base.database:
            migrate(self.client, active)
        return active

    async def stop(self) -> None:
        self._stopping.set()
        async with self._lock:
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    await self._consumer.stop()
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()

    async def run(self) -> None:
        """Start (if needed) and project until `stop()`."""
        if self._consumer is None:
            await self.start()
        heap.map_large_blocks()
        heap.tune_gc()
        wait: float | None = None
        try:
            while not self._stopping.is_set():
                try:
                    busy = await self.step(wait) > 0
                    now = time.monotonic()
                    if busy:
                        self._heap_dirty = True
                    # caught up with every partition: as quiet as an empty fetch for the
                    # search tables' upkeep, ~batch_timeout sooner (the first search after a
                    # load otherwise reads the runs of its page from run_search, not from
                    # their documents: 30-45 ms over 1 k runs instead of 13-17)
                    quiet = not busy or self._caught_up()
                    # merged first: the documents' refresh reads run_search FINAL too
                    await self._compact_search(not quiet, now)
                    refreshed = await self._refresh_pages(not quiet, now, idle=not busy)
                    # nothing came and documents are left to rewrite (a load's last runs):
                    # the next fetch only looks for records, so the chunks follow each
                    # other instead of one per batch_timeout; a record arriving meanwhile
                    # waits for one chunk at most, as before
                    backlog = not busy and refreshed and bool(self.processor.stale_pages)
                    wait = BACKLOG_FETCH_S if backlog else None
                    await self._prune_positions(now)
                    if self._heap_dirty and (not busy or now - self._trimmed_at > TRIM_EVERY_S):
                        self._heap_dirty = False
                        self._trimmed_at = now
                        await asyncio.to_thread(heap.trim)
                except ConsumerStoppedError:
                    if not self._stopping.is_set():
                        raise
                except KafkaError as exc:  # broker trouble: aiokafka reconnects; go on
                    log.warning("kafka error in the worker loop (%s); continuing", exc)
                    await asyncio.sleep(1.0)
        finally:
            await self.stop()

    async def _refresh_pages(self, busy: bool, now: float, idle: bool = False) -> bool:
        """Rewrite the search documents of (up to a chunk of) the runs written since the
        last time: after a fetch that got nothing (`idle`) at once, when the worker caught
        up with the topic at most every `page_refresh_min_gap`, and every
        `page_refresh_interval` while batches come (the runs are written again soon, and
        the refresh reads `run_search` FINAL). A cache: a failure only leaves searches
        reading those runs from `run_search`. Returns whether a chunk was rewritten."""
        if not self.processor.stale_pages or self._stopping.is_set():
            return False
        s = self.settings
        gap = s.page_refresh_interval if busy else 0.0 if idle else s.page_refresh_min_gap
        if now - self._pages_at < gap:
            return False
        self._pages_at = now
        return await refresh_chunk(self.processor)

    async def _compact_search(self, busy: bool, now: float) -> None:
        """Merge `run_search` into one part when due (`processors.compaction`)."""
        if self._stopping.is_set():
            return
        await self.compaction.maybe(
            lambda: self.processor.sink.compact_search(),
            written=self.processor.search_rows_written,
            busy=busy,
            owns_partition_0=COMPACTING_PARTITION in self._assigned,
            now=now,
        )

    async def _prune_positions(self, now: float) -> int:
        """Drop the position rows no reader needs when due (`processors.compaction`)."""
        if self._stopping.is_set():
            return 0
        sink = self.processor.sink
        return await self.pruning.maybe(
            lambda above: sink.prune_positions(self.topic, above),
            owns_partition_0=COMPACTING_PARTITION in self._assigned,
            now=now,
        )

    # ---- the loop ----------------------------------------------------------------------
    async def step(self, wait: float | None = None) -> int:
        """Fetch up to batch_size records / batch_max_bytes (see `_fetch`; waiting up to
        `wait` s for the first, default batch_timeout), project and commit them per
        partition; return the count."""
        consumer = self._consumer
        if consumer is None:
            raise ProcessorError("worker not started")
        epoch = self._epoch
        fetched = await self._fetch(consumer, wait)
        async with self._lock:
            if epoch != self._epoch or self._stopping.is_set():
                self._rewind(consumer, fetched)  # assignment changed while fetching
                return 0
            # partitions are independent: while one partition's batch is in ClickHouse (C++,
            # GIL released) the next one is decoded and projected
            counts = await asyncio.gather(
                *(
                    self._process_all(consumer, partition, records)
                    for partition, records in sorted(fetched.items())
                )
            )
            done = sum(counts)
            self._update_lag(consumer)
            await self._maybe_switch(consumer)
            return done

    async def _fetch(
        self, consumer: AIOKafkaConsumer, wait: float | None = None
    ) -> dict[int, list[ConsumerRecord[Any, Any]]]:
        """Up to batch_size records and about batch_max_bytes of values: each getmany asks
        for as many records as the byte budget left holds at the running mean record size
        (one getmany would otherwise hand over everything buffered for every partition,
        several times the budget, and a batch's memory grows with its size).

        Waits up to batch_timeout (or `wait`) for the first records, then at most batch_linger for
        more: a lone write is projected ~20 ms after it arrives instead of after the whole
        batch_timeout (faust's `take(n, within=t)` waits the full t: scenario 3's freshness
        p50 was ~290 ms with it), while a busy topic still fills batches, its records
        being buffered by the time the first getmany returns.

        With `awaited` set, the linger is cut short once a read of this process waits for
        records the batch already holds: the linger only gathers more records for a batch,
        and a write read back at once (an MLflow client's log_metric then get_history)
        would wait it out (it is checked every HURRY_CHECK_S)."""
        s = self.settings
        out: dict[int, list[ConsumerRecord[Any, Any]]] = defaultdict(list)
        total = size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (s.batch_timeout if wait is None else wait)
        lingering = False
        while total < s.batch_size and size < s.batch_max_bytes and not self._stopping.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if lingering and self.awaited is not None:
                if self.awaited({p: msgs[-1].offset for p, msgs in out.items()}):
                    break
                remaining = min(remaining, HURRY_CHECK_S)
            mean = self._mean_record_bytes
            fits = 1 if mean is None else int((s.batch_max_bytes - size) / mean)
            got = await self._take(
                consumer, max(1, int(remaining * 1000)), max(1, min(s.batch_size - total, fits))
            )
            for tp, msgs in got.items():
                out[tp.partition].extend(msgs)
                total += len(msgs)
                nbytes = sum(len(m.value or b"") for m in msgs)
                size += nbytes
                seen = max(64.0, nbytes / max(1, len(msgs)))
                mean = self._mean_record_bytes
                self._mean_record_bytes = seen if mean is None else 0.8 * mean + 0.2 * seen
            if not got:
                if lingering and self.awaited is not None:
                    continue  # a check's slice ended: the deadline ends the linger
                break
            # the first records start the linger; later ones cannot move it (min)
            deadline = min(deadline, loop.time() + s.batch_linger)
            lingering = True
        return out

    async def _take(
        self, consumer: AIOKafkaConsumer, timeout_ms: int, want: int
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        """Up to `want` records, at most an equal share of batch_size from each assigned
        partition holding records (in turn: each take starts after the partition the last
        one ended with); waits up to `timeout_ms` only when none holds any, then takes a
        share of what comes.

        aiokafka's getmany hands out one partition's buffer before the next's (a fetch of
        up to max_partition_fetch_bytes): catching up, one partition ran tens of thousands
        of records ahead of the others. Taken in shares, the partitions advance together, so
        each batch's rows cover the same stretch of time: run ids are UUIDv7, and the
        `run_search` parts of a load's batches then cover neighbouring key ranges instead
        of overlapping ones, which search's FINAL must merge (the first search right after
        100 k runs were loaded: its page-key query 42 ms instead of 75, total 105 ms
        instead of 149-195), and a catch-up shows every rank's runs progressing at one
        pace rather than one partition after another."""
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        got: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        if len(tps) < 2:
            got = await consumer.getmany(timeout_ms=timeout_ms, max_records=want)
            return got
        n = len(tps)
        # a share of the batch's record count, not of `want`: large records (a byte budget
        # of a few hundred) go to one partition a fetch, in turn, keeping their batches
        # and inserts large (split 8 ways, a 10 M-point catch-up ran ~13 % slower)
        share = -(-self.settings.batch_size // n)
        left = want
        first = self._turn % n
        for i in range(first, first + n):
            if left <= 0:
                break
            tp = tps[i % n]
            part = await consumer.getmany(tp, timeout_ms=0, max_records=min(share, left))
            for key, msgs in part.items():
                got[key] = msgs
                left -= len(msgs)
            self._turn = (i + 1) % n  # the next take starts after the last one asked
        if not got:
            got = await consumer.getmany(timeout_ms=timeout_ms, max_records=min(share, want))
        return got

    def _rewind(self, consumer: AIOKafkaConsumer, fetched: dict[int, Any]) -> None:
        """Fetched records are dropped unprocessed: put the consumer back to our position."""
        for p in fetched:
            if p in self._assigned and p in self.next_offsets:
                consumer.seek(TopicPartition(self.topic, p), self.next_offsets[p])
                self._redo_buf.pop(p, None)

    def _batches(
        self, partition: int, msgs: Sequence[ConsumerRecord[Any, Any]]
    ) -> list[list[SourceEvent]]:
        """Split into batches of at most `batch_max_bytes`; a pending intent range is
        re-assembled with its exact bounds."""
        recs = [
            SourceEvent(self.topic, partition, m.offset, m.timestamp, m.key, m.value) for m in msgs
        ]
        redo_last = self._redo.get(partition)
        if redo_last is None:
            return split_by_bytes(recs, self.settings.batch_max_bytes)
        first = self.next_offsets.get(partition, recs[0].offset if recs else 0)
        out = redo_batches(
            self._redo_buf[partition], recs, first, redo_last, self.settings.batch_max_bytes
        )
        if out is None:
            return []
        del self._redo[partition]
        self._redo_buf.pop(partition, None)
        if not out or out[0][0].offset > redo_last:  # skipped: its head left the log
            self.next_offsets[partition] = redo_last + 1
        return out

    async def _process_all(
        self, consumer: AIOKafkaConsumer, partition: int, msgs: Sequence[ConsumerRecord[Any, Any]]
    ) -> int:
        done = 0
        try:
            for batch in self._batches(partition, msgs):
                done += await self._process(consumer, partition, batch)
        except _Taken:  # re-sought: the rest of this fetch is behind or ahead of us now
            pass
        return done

    async def _process(
        self, consumer: AIOKafkaConsumer, partition: int, records: list[SourceEvent]
    ) -> int:
        tp = TopicPartition(self.topic, partition)
        epoch = self._epoch
        span = _Span(records)
        try:
            batch: PreparedBatch | None = await self._retry(
                partition,
                epoch,
                lambda: asyncio.to_thread(self.processor.prepare, self.topic, partition, records),
                on_error=lambda: self.processor.forget(partition),
                span=span,
            )
            if batch is None:  # all projected already
                self.next_offsets[partition] = records[-1].offset + 1
                return 0
            prepared = batch
            await self._retry(partition, epoch, lambda: self.processor.commit(prepared), span=span)
        except _Taken:
            # Our view of this partition is stale (we were a zombie, or a zombie wrote in
            # front of us): continue from ClickHouse's position, never past unwritten records
            with contextlib.suppress(_Abandon):
                await self._retry(
                    partition, epoch, lambda: self._seek_assigned(consumer, {partition})
                )
            raise
        except _Abandon:
            self.processor.forget(partition)
            return 0
        self.next_offsets[partition] = batch.last + 1
        with contextlib.suppress(Exception):  # advisory only: ClickHouse holds the position
            await asyncio.wait_for(consumer.commit({tp: batch.last + 1}), 2.0)
        return len(records)

    async def _retry(
        self,
        partition: int,
        epoch: int,
        fn: Callable[[], Awaitable[T]],
        on_error: Callable[[], None] | None = None,
        span: _Span | None = None,
    ) -> T:
        failing = self.metrics.failing.labels(self.topic, str(partition))

        def check() -> None:
            if self._stopping.is_set() or partition not in self._assigned or epoch != self._epoch:
                raise _Abandon()

        def failed() -> None:
            if on_error is not None:
                on_error()
            self.metrics.retries.labels(self.topic).inc()
            failing.set(1)
            if self._consumer is not None:  # the loop is held here: keep the lag current
                self._update_lag(self._consumer)

        async def pause(delay: float) -> None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

        try:
            return await retry_batch(
                fn,
                what=_Where(f"{self.topic}[{partition}]", span),
                check=check,
                pause=pause,
                backoff_max=self.settings.retry_backoff_max,
                on_failure=failed,
                on_success=lambda: failing.set(0),
            )
        except PartitionTaken as exc:  # a zombie: the partition's new owner goes on
            log.warning("%s", exc)
            raise _Taken() from None

    async def _send_dlq(self, poison: Sequence[Poison]) -> None:
        producer = self._producer
        if producer is None:
            raise ProcessorError("worker not started")
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
                await producer.send(self.dlq_topic, p.src.value, key=p.src.key, headers=headers)
            )
        await asyncio.gather(*futs)

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for p in self._assigned:
            hw = consumer.highwater(TopicPartition(self.topic, p))
            if hw is not None and p in self.next_offsets:
                self.metrics.lag.labels(self.topic, str(p)).set(max(0, hw - self.next_offsets[p]))

    def _caught_up(self) -> bool:
        """Every assigned partition projected up to its high watermark (as of the last fetch
        response: records produced since make the next step busy again)."""
        lag = self.lag()  # a partition without a high watermark yet is not in it
        return bool(self._assigned) and lag.keys() == self._assigned and not any(lag.values())

    def lag(self) -> dict[int, int]:
        """Records between the position and the high watermark, per assigned partition."""
        out = {}
        if self._consumer is not None:
            for p in self._assigned:
                hw = self._consumer.highwater(TopicPartition(self.topic, p))
                if hw is not None:
                    out[p] = max(0, hw - self.next_offsets.get(p, 0))
        return out

    # ---- assignment and blue/green switch ------------------------------------------------
    async def _seek_assigned(self, consumer: AIOKafkaConsumer, partitions: set[int]) -> None:
        resume = await asyncio.to_thread(self.processor.sink.positions, self.topic)
        for p in partitions:
            r = resume.get(p)
            offset = r.offset if r else 0
            consumer.seek(TopicPartition(self.topic, p), offset)
            self.next_offsets[p] = offset
            self._redo_buf.pop(p, None)
            if r is not None and r.redo_last is not None:
                self._redo[p] = r.redo_last
            else:
                self._redo.pop(p, None)
            self.processor.forget(p)

    async def on_assigned(self, partitions: set[int]) -> None:
        self._epoch += 1
        async with self._lock:
            self._assigned = set(partitions)
            if self._consumer is not None and partitions:
                await self._seek_assigned(self._consumer, partitions)
            # and again once sought: a step that began its fetch while the positions were
            # read got records from aiokafka's start position (Kafka's committed offset)
            # and, after the seek, the same offsets again; it must drop them (`_rewind`), or
            # one batch holds an offset twice and metric_summary counts its points twice
            self._epoch += 1

    async def on_revoked(self, partitions: set[int]) -> None:
        self._epoch += 1
        self._assigned -= partitions
        async with self._lock:  # let a batch in flight finish (or abandon) first
            for p in partitions:
                self.processor.forget(p)
                self._redo.pop(p, None)
                self._redo_buf.pop(p, None)

    async def _maybe_switch(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now - self._last_pointer_check < self.settings.pointer_check_interval:
            return
        self._last_pointer_check = now
        try:
            active = await asyncio.to_thread(self.base.active_database)
        except Exception as exc:  # noqa: BLE001 - retried at the next check
            log.warning("read-model pointer unreadable: %s", exc)
            return
        if active == self.processor.sink.database:
            return
        log.info("read models switched to %s; continuing there", active)
        await asyncio.to_thread(migrate, self.client, active)
        self.processor.sink = ClickHouseSink(self.client, active, self.writers)
        self.processor.forget()
        self._epoch += 1
        await self._seek_assigned(consumer, set(self._assigned))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ProjectionWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.on_assigned({tp.partition for tp in assigned})


if __name__ == "__main__":  # pragma: no cover - `python -m processors.worker`
    from processors.cli import main

    raise SystemExit(main())
