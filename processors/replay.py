"""Rebuild every read model from the log (Kafka from offset 0, or the S3 archive then Kafka)
into a fresh versioned database, then switch reads to it (blue/green).

Rules:
- Target database: `<base>_v<N>`; an unfinished replay (a `<base>_v<N>` newer than the active
  one) is resumed, its progress being the positions stored in it (same code as the live
  worker: a replay is the same projection with another sink).
- Interruptible: `stop` (threading.Event) is checked between batches; KeyboardInterrupt is
  safe too. Calling `replay` again resumes.
- "Caught up" = every partition reached the end offsets read at the end of a pass and one
  more pass found nothing new. Then the pointer `<base>.read_models_pointer` names the new
  database; live workers notice it (WorkerSettings.pointer_check_interval) and continue in it
  from the positions stored there.
- In one-machine mode chDB belongs to one process: call this in the serving process (or with
  serve stopped).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from processors import heap
from processors.archive import EventArchive
from processors.codec import EVENTS_TOPIC
from processors.errors import ReplayError
from processors.migrate import check_identifier, migrate
from processors.model import SourceEvent
from processors.pipeline import BatchProcessor
from processors.sink import ClickHouseSink, Resume

log = logging.getLogger(__name__)

#: a replay batch is cut at this many message bytes (as the live worker's batch_max_bytes)
BATCH_MAX_BYTES = 16 * 1024 * 1024
#: the stale documents left at the end are rewritten in one pass over every run once they are
#: 1/this of `run_search`'s rows or more (per run, a chunk costs ~4x a pass: ~40 vs ~10 us)
FULL_REFRESH_ABOVE = 4


@dataclass(frozen=True)
class ReplayProgress:
    database: str
    partition: int
    next_offset: int
    end_offset: int | None
    events: int


@dataclass
class ReplayResult:
    database: str
    completed: bool
    switched: bool
    events: int = 0
    positions: dict[int, int] = field(default_factory=dict)


def _version(base: str, db: str) -> int:
    m = re.fullmatch(re.escape(base) + r"_v(\d+)", db)
    return int(m.group(1)) if m else 0


def choose_target(client: Any, base: str) -> str:
    """The unfinished replay database to resume, else the next version's name."""
    base = check_identifier(base)
    migrate(client, base)
    active = ClickHouseSink(client, base).active_database()
    current = _version(base, active)
    rows = client.query(
        "SELECT name FROM system.databases WHERE name LIKE %(p)s", parameters={"p": base + "_v%"}
    ).result_rows
    versions = sorted(_version(base, r[0]) for r in rows if _version(base, r[0]) > current)
    return f"{base}_v{versions[-1] if versions else current + 1}"


def replay(
    client: Any,
    *,
    database: str,
    bootstrap: str | None = None,
    topic: str = EVENTS_TOPIC,
    archive: EventArchive | None = None,
    source: str = "kafka",
    target: str | None = None,
    switch: bool = True,
    progress: Callable[[ReplayProgress], None] | None = None,
    stop: threading.Event | None = None,
    batch_size: int = 20_000,
) -> ReplayResult:
    """Blocking wrapper of `replay_async` (for the CLI)."""
    return asyncio.run(
        replay_async(
            client,
            database=database,
            bootstrap=bootstrap,
            topic=topic,
            archive=archive,
            source=source,
            target=target,
            switch=switch,
            progress=progress,
            stop=stop,
            batch_size=batch_size,
        )
    )


async def replay_async(
    client: Any,
    *,
    database: str,
    bootstrap: str | None = None,
    topic: str = EVENTS_TOPIC,
    archive: EventArchive | None = None,
    source: str = "kafka",
    target: str | None = None,
    switch: bool = True,
    progress: Callable[[ReplayProgress], None] | None = None,
    stop: threading.Event | None = None,
    batch_size: int = 20_000,
) -> ReplayResult:
    """Project the whole log into `target` (default: `choose_target`) and switch to it.

    Args:
        source: "kafka" (offset 0 onwards) or "archive" (S3 segments, then Kafka for what is
            newer when `bootstrap` is given).
    """
    if source not in ("kafka", "archive"):
        raise ReplayError(f"unknown replay source {source!r} (kafka or archive)")
    if source == "archive" and archive is None:
        raise ReplayError("source='archive' needs an EventArchive")
    if source == "kafka" and bootstrap is None:
        raise ReplayError("source='kafka' needs bootstrap servers")
    heap.map_large_blocks()
    heap.tune_gc()
    tgt: str = target if target else await asyncio.to_thread(choose_target, client, database)
    await asyncio.to_thread(migrate, client, check_identifier(tgt))
    sink = ClickHouseSink(client, tgt)
    proc = BatchProcessor(sink)
    result = ReplayResult(tgt, completed=False, switched=False)
    stop = stop or threading.Event()
    positions = await asyncio.to_thread(sink.positions, topic)
    # a resumed replay does not know which runs its earlier attempts left stale
    resumed = any(r.offset for r in positions.values())
    if source == "archive" and archive is not None:
        arch = archive

        async def one(p: int) -> bool:
            resume = positions.get(p, Resume(0))
            records = _aiter(arch.read(topic, p, resume.offset))
            return await _run_partition(
                proc,
                topic,
                p,
                resume,
                records,
                None,
                batch_size,
                progress,
                stop,
                result,
                gap="fail" if bootstrap is None else "stop",
            )

        parts = await asyncio.to_thread(archive.partitions, topic)
        if not all(await asyncio.gather(*(one(p) for p in parts))):
            return result
    if bootstrap is not None and not await _from_kafka(
        proc, bootstrap, topic, batch_size, progress, stop, result
    ):
        return result
    await asyncio.to_thread(sink.compact_search)  # one part: search's FINAL merges nothing
    await asyncio.to_thread(_refresh_documents, proc, resumed)
    result.completed = True
    if switch:
        await asyncio.to_thread(ClickHouseSink(client, database).switch_to, tgt)
        result.switched = True
    return result


def _refresh_documents(proc: BatchProcessor, resumed: bool) -> None:
    """Rewrite the search documents the replay left stale: the runs written by more than
    one batch (a run new in a batch got its document with its rows). Chunk by chunk when
    they are few, else (or after a resumed replay, whose earlier attempts' stale runs are
    not known here) every run's in one pass over `run_search` (~1 s per 100 k runs; a
    chunk of 2,000 runs: 60-100 ms)."""
    stale = len(proc.stale_pages)
    if not stale and not resumed:
        return
    rows = proc.sink.client.query(f"SELECT count() FROM {proc.sink.database}.run_search")
    if resumed or stale * FULL_REFRESH_ABOVE >= int(rows.result_rows[0][0]):
        proc.stale_pages.clear()
        proc.sink.refresh_pages()
        return
    while proc.stale_pages:
        proc.refresh_pages()


async def _aiter(it: Iterator[SourceEvent]) -> AsyncIterator[SourceEvent]:
    sentinel = object()
    while True:
        rec = await asyncio.to_thread(next, it, sentinel)
        if rec is sentinel:
            return
        yield rec  # type: ignore[misc]


async def _from_kafka(
    proc: BatchProcessor,
    bootstrap: str,
    topic: str,
    batch_size: int,
    progress: Callable[[ReplayProgress], None] | None,
    stop: threading.Event,
    result: ReplayResult,
) -> bool:
    parts = await topic_partitions(bootstrap, topic)
    if not parts:
        raise ReplayError(f"topic {topic!r} has no partitions (does it exist?)")
    tps = [TopicPartition(topic, p) for p in parts]
    while True:  # passes until one finds nothing new: caught up
        ends = await _end_offsets(bootstrap, tps)
        positions = await asyncio.to_thread(proc.sink.positions, topic)
        todo = [
            (tp, positions.get(tp.partition, Resume(0)), ends[tp])
            for tp in tps
            if positions.get(tp.partition, Resume(0)).offset < ends[tp]
        ]
        if not todo:
            return True
        # partitions are independent: one is projected (Python) while another one's batch
        # is written (ClickHouse, GIL released)
        oks = await asyncio.gather(
            *(
                _replay_partition(
                    proc, bootstrap, tp, resume, end, batch_size, progress, stop, result
                )
                for tp, resume, end in todo
            )
        )
        if not all(oks):
            return False


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def _end_offsets(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = _consumer(bootstrap)
    await consumer.start()
    await asyncio.sleep(0.01)  # aiokafka: stop() right after start() re-raises a cancel
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _replay_partition(
    proc: BatchProcessor,
    bootstrap: str,
    tp: TopicPartition,
    resume: Resume,
    end: int,
    batch_size: int,
    progress: Callable[[ReplayProgress], None] | None,
    stop: threading.Event,
    result: ReplayResult,
) -> bool:
    consumer = _consumer(bootstrap)
    await consumer.start()
    await asyncio.sleep(0.01)
    try:
        consumer.assign([tp])
        consumer.seek(tp, resume.offset)
        records = _kafka_range(consumer, tp, end, batch_size)
        return await _run_partition(
            proc, tp.topic, tp.partition, resume, records, end, batch_size, progress, stop, result
        )
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset to be written, per partition of `topic` ({} when it does not exist)."""
    parts = await topic_partitions(bootstrap, topic)
    if not parts:
        return {}
    ends = await _end_offsets(bootstrap, [TopicPartition(topic, p) for p in parts])
    return {tp.partition: int(o) for tp, o in ends.items()}


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """Partition ids of `topic` (a metadata request; [] when the topic does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (desc,) = await admin.describe_topics([topic])
        return sorted(int(p["partition"]) for p in desc.get("partitions", ()))
    finally:
        await admin.close()


async def _kafka_range(
    consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, batch_size: int
) -> AsyncIterator[SourceEvent]:
    while True:
        got = await consumer.getmany(tp, timeout_ms=1000, max_records=batch_size)
        for m in got.get(tp, ()):
            if m.offset >= end:
                return
            yield SourceEvent(tp.topic, tp.partition, m.offset, m.timestamp, m.key, m.value)
            if m.offset >= end - 1:
                return
        if not got and await consumer.position(tp) >= end:
            return


async def _run_partition(
    proc: BatchProcessor,
    topic: str,
    partition: int,
    resume: Resume,
    records: AsyncIterator[SourceEvent],
    end: int | None,
    batch_size: int,
    progress: Callable[[ReplayProgress], None] | None,
    stop: threading.Event,
    result: ReplayResult,
    gap: Literal["fail", "stop"] = "fail",
) -> bool:
    """Project one partition's records in batches; a pending intent is redone exactly.

    The records must follow each other from `resume.offset` (the topic is neither compacted
    nor transactional: its offsets have no holes). At a hole, `gap` = "fail" raises
    ReplayError (the records are gone: a replay would switch to read models that lack
    them); "stop" ends this source's pass there, projected up to the hole (the archive
    pass: Kafka may still hold what a missing segment had)."""
    redo = resume.redo_last
    buf: list[SourceEvent] = []
    size = 0
    expected = resume.offset

    async def flush() -> bool:
        nonlocal buf, size
        if not buf:
            return True
        if stop.is_set():
            return False
        batch = await asyncio.to_thread(proc.prepare, topic, partition, buf)
        if batch is not None:
            await proc.commit(batch)
        result.events += len(buf)
        result.positions[partition] = buf[-1].offset + 1
        if progress is not None:
            progress(
                ReplayProgress(
                    proc.sink.database, partition, buf[-1].offset + 1, end, result.events
                )
            )
        buf, size = [], 0
        return True

    async for rec in records:
        if rec.offset < expected:
            continue
        if rec.offset > expected:
            if gap == "stop":
                log.info(
                    "%s[%d]: the archive has no offsets %d-%d; the rest comes from Kafka",
                    topic,
                    partition,
                    expected,
                    rec.offset - 1,
                )
                break
            raise ReplayError(
                f"{topic}[{partition}]: offsets {expected}-{rec.offset - 1} are gone from the"
                " log and not in the archive (retention, an archive enabled late or pruned):"
                " a replay would lack them"
            )
        expected = rec.offset + 1
        buf.append(rec)
        size += len(rec.value)
        if redo is not None:
            cut = rec.offset >= redo
        else:
            cut = len(buf) >= batch_size or size >= BATCH_MAX_BYTES
        if cut:
            redo = None
            if not await flush():
                return False
    return await flush()
