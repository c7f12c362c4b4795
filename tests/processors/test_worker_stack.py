"""The live worker on the real stack (Kafka + S3 + chDB, worker in this process)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from processors import EventArchive, ProjectionWorker, WorkerSettings, digest, heap, replay_async
from processors.sink import ClickHouseSink
from runstream.stack import Connection
from runstream.stack.kafka import create_topics

from .factory import Writer, encode, key_of
from .stackutil import (
    FailingClient,
    check_points,
    end_offsets,
    run_producers,
    stale_pages,
    wait_pages,
    wait_projected,
)

pytestmark = pytest.mark.stack


def _settings() -> WorkerSettings:
    return WorkerSettings(
        group_id=f"g-{uuid.uuid4().hex[:8]}", batch_timeout=0.1, pointer_check_interval=0.2
    )


async def _send(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await prod.start()
    try:
        for key, value in items:
            await prod.send_and_wait(topic, value, key=key)
    finally:
        await prod.stop()


async def _dlq(bootstrap: str, topic: str, n: int) -> list[Any]:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await c.start()
    out: list[Any] = []
    try:
        while len(out) < n:
            got = await c.getmany(timeout_ms=10_000)
            if not got:
                break
            for msgs in got.values():
                out.extend(msgs)
    finally:
        await c.stop()
    return out


def test_end_to_end_dlq_archive_and_replay(
    connection: Connection,
    chdb_client: Any,
    read_db: str,
    kafka_topic: str,
    s3_prefix: str,
    minio_client: Any,
    scratch_dbs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tuned: list[bool] = []  # the GC tuned by the worker and by each replay
    monkeypatch.setattr(heap, "tune_gc", lambda *a: tuned.append(True) or False)
    boot = connection.kafka_bootstrap
    dlq = kafka_topic + ".dlq"
    create_topics(boot, {dlq: 1})
    scratch_dbs.append(read_db)
    archive = EventArchive(minio_client, connection.s3_bucket, s3_prefix)
    w = Writer()
    runs = ["run-a", "run-b", "run-c", "run-d"]
    head = [("RunCreated", w.record("RunCreated", r, name=r, params={"seed": "1"})) for r in runs]
    head.append(("ParamsLogged", w.record("ParamsLogged", "run-a", params={"seed": "2"})))

    async def scenario() -> dict[str, Any]:
        worker = ProjectionWorker(
            chdb_client,
            bootstrap=boot,
            database=read_db,
            topic=kafka_topic,
            dlq_topic=dlq,
            archive=archive,
            settings=_settings(),
        )
        task = asyncio.create_task(worker.run())
        await _send(
            boot,
            kafka_topic,
            [(key_of(r), encode(n, r)) for n, r in head]
            + [(b"run-a", b"\xc3\x01not an event"), (b"run-b", b"garbage")],
        )
        expect = await run_producers(
            boot, kafka_topic, 3, runs, events=5, points=2000, resend_every=7
        )
        try:
            await wait_projected(chdb_client, read_db, boot, kafka_topic)
            await asyncio.sleep(0.3)
            assert sum(worker.lag().values()) == 0
            await wait_pages(chdb_client, read_db)
        finally:
            await worker.stop()
            await task
        m = worker.metrics
        assert m.dlq.labels(kafka_topic, "undecodable")._value.get() == 2
        assert m.points.labels(kafka_topic)._value.get() == expect["points"]
        assert m.duplicates.labels(kafka_topic)._value.get() > 0
        return expect

    expect = asyncio.run(scenario())
    check_points(chdb_client, read_db, expect)
    q = chdb_client.query
    assert q(f"SELECT count() FROM {read_db}.runs FINAL").result_rows[0][0] == 4
    assert q(f"SELECT reason, item FROM {read_db}.rejected_events").result_rows == [
        ("param_conflict", "seed")
    ]
    producers = f"SELECT uniqExact(run_id, producer_id) FROM {read_db}.producer_versions"
    assert q(producers).result_rows[0][0] == 4 * (3 + 1)  # 3 ranks + the writer of RunCreated

    dead = asyncio.run(_dlq(boot, dlq, 2))
    assert sorted(m.value for m in dead) == sorted([b"\xc3\x01not an event", b"garbage"])
    headers = dict(dead[0].headers)
    assert headers["source_topic"] == kafka_topic.encode()
    assert b"undecodable" in headers["error"]
    assert {"source_partition", "source_offset", "reason"} <= headers.keys()

    live = digest(chdb_client, read_db)
    objects = [
        o.object_name
        for o in minio_client.list_objects(
            connection.s3_bucket, prefix=f"{s3_prefix}archive/{kafka_topic}/", recursive=True
        )
    ]
    assert objects
    assert all(o.endswith(".avro") for o in objects)
    archived = sum(1 for p in archive.partitions(kafka_topic) for _ in archive.read(kafka_topic, p))
    assert archived == sum(asyncio.run(end_offsets(boot, kafka_topic)).values())
    from_kafka = asyncio.run(
        replay_async(chdb_client, database=read_db, bootstrap=boot, topic=kafka_topic, switch=False)
    )
    assert from_kafka.completed
    assert digest(chdb_client, from_kafka.database) == live
    assert stale_pages(chdb_client, from_kafka.database) == []
    seen: list[int] = []
    from_s3 = asyncio.run(
        replay_async(
            chdb_client,
            database=read_db,
            archive=archive,
            source="archive",
            topic=kafka_topic,
            target=read_db + "_v9",
            progress=lambda p: seen.append(p.next_offset),
        )
    )
    assert from_s3.switched
    assert seen
    assert digest(chdb_client, from_s3.database) == live
    assert stale_pages(chdb_client, from_s3.database) == []
    assert ClickHouseSink(chdb_client, read_db).active_database() == read_db + "_v9"
    assert len(tuned) == 3


def test_search_documents_are_refreshed_once_caught_up_not_after_an_empty_fetch(
    connection: Connection, chdb_client: Any, read_db: str, kafka_topic: str
) -> None:
    """The last batch of a load leaves the worker caught up: it refreshes the search
    documents then (and merges run_search if due), as after an empty fetch, without waiting
    batch_timeout for that fetch (here 5 s; the busy-time refresh is 30 s away)."""
    boot = connection.kafka_bootstrap
    w = Writer()

    async def send(runs: list[str]) -> None:
        records = [w.record("RunCreated", r, name=r) for r in runs]
        await _send(boot, kafka_topic, [(key_of(r), encode("RunCreated", r)) for r in records])

    async def scenario() -> None:
        settings = dataclasses.replace(
            _settings(), batch_timeout=5.0, page_refresh_interval=30.0, page_refresh_min_gap=0.05
        )
        worker = ProjectionWorker(
            chdb_client, bootstrap=boot, database=read_db, topic=kafka_topic, settings=settings
        )
        task = asyncio.create_task(worker.run())
        try:
            await send(["a1", "a2"])  # the first batch's documents: the busy-time refresh
            await wait_projected(chdb_client, read_db, boot, kafka_topic)
            await wait_pages(chdb_client, read_db, timeout=10.0)
            await send(["b1", "b2", "b3"])
            await wait_projected(chdb_client, read_db, boot, kafka_topic)
            await wait_pages(chdb_client, read_db, timeout=2.0)
        finally:
            await worker.stop()
            await task

    asyncio.run(scenario())
    rows = chdb_client.query(f"SELECT count() FROM {read_db}.run_page FINAL").result_rows
    assert rows[0][0] == 5


def test_failing_sink_loses_nothing_and_worker_follows_the_pointer(
    connection: Connection, chdb_client: Any, read_db: str, kafka_topic: str, scratch_dbs: list[str]
) -> None:
    boot = connection.kafka_bootstrap
    scratch_dbs.append(read_db)
    flaky = FailingClient(chdb_client)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        settings = dataclasses.replace(_settings(), retry_backoff_max=0.3)
        worker = ProjectionWorker(
            flaky,
            bootstrap=boot,
            database=read_db,
            topic=kafka_topic,
            dlq_topic=kafka_topic,
            settings=settings,
        )
        task = asyncio.create_task(worker.run())
        try:
            first = await run_producers(boot, kafka_topic, 2, ["r1", "r2"], events=6, points=800)
            await wait_projected(chdb_client, read_db, boot, kafka_topic)
            assert flaky.failed > 0
            assert worker.metrics.retries.labels(kafka_topic)._value.get() >= flaky.failed
            result = await replay_async(
                chdb_client, database=read_db, bootstrap=boot, topic=kafka_topic
            )
            assert result.switched
            deadline = asyncio.get_running_loop().time() + 20
            while worker.database != result.database:
                assert asyncio.get_running_loop().time() < deadline, "worker kept old db"
                await asyncio.sleep(0.1)
            second = await run_producers(boot, kafka_topic, 1, ["r3"], events=3, points=400)
            await wait_projected(chdb_client, result.database, boot, kafka_topic)
        finally:
            await worker.stop()
            await task
        return first, second

    first, second = asyncio.run(scenario())
    check_points(chdb_client, read_db, first)
    merged = {
        "counts": {**first["counts"], **second["counts"]},
        "sums": {**first["sums"], **second["sums"]},
    }
    check_points(chdb_client, read_db + "_v1", merged)


def test_two_workers_rebalancing_while_events_flow(
    connection: Connection, chdb_client: Any, read_db: str, kafka_topic: str
) -> None:
    """Cluster mode in miniature: a second worker joins (partitions move to it), then the
    first leaves (they move back); revoked batches finish or are abandoned, never doubled."""
    boot = connection.kafka_bootstrap
    group = f"g-{uuid.uuid4().hex[:8]}"

    def worker() -> ProjectionWorker:
        settings = dataclasses.replace(_settings(), group_id=group)
        return ProjectionWorker(
            chdb_client,
            bootstrap=boot,
            database=read_db,
            topic=kafka_topic,
            dlq_topic=kafka_topic,
            settings=settings,
        )

    async def scenario() -> dict[str, Any]:
        producing = asyncio.create_task(
            run_producers(
                boot,
                kafka_topic,
                2,
                [f"r{i}" for i in range(6)],
                events=25,
                points=400,
                rate_events=30.0,
            )
        )
        a, b = worker(), worker()
        ta = asyncio.create_task(a.run())
        await asyncio.sleep(1.5)
        tb = asyncio.create_task(b.run())
        await asyncio.sleep(2.0)
        await a.stop()
        await ta
        expect = await producing
        try:
            await wait_projected(chdb_client, read_db, boot, kafka_topic)
        finally:
            await b.stop()
            await tb
        moved = a.metrics.batches.labels(kafka_topic)._value.get()
        assert moved > 0
        assert b.metrics.batches.labels(kafka_topic)._value.get() > 0
        return expect

    expect = asyncio.run(scenario())
    check_points(chdb_client, read_db, expect)
    got = digest(chdb_client, read_db)
    for table in ("events", "metric_points", "run_versions"):
        assert got[table]["raw_count"] == got[table]["count"], table
