"""The faust engine (`processors.faust_app`) on the real stack: exact read models while
catching up and live, with a failing sink, across a stop/restart, and a pending intent redone
with its exact boundaries."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.structs import TopicPartition

from processors import digest
from processors.faust_app import FaustSettings, make_app, projector
from processors.sink import ClickHouseSink
from runstream.stack import Connection
from runstream.stack.kafka import create_topics

from .stackutil import (
    FailingClient,
    check_points,
    end_offsets,
    run_producers,
    wait_pages,
    wait_projected,
)

pytestmark = [
    pytest.mark.stack,
    pytest.mark.filterwarnings("ignore"),  # faust/mode emit warnings of their own
]


@pytest.fixture(autouse=True)
def fetcher_in_one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """aiokafka is not thread-safe and faust runs its consumer in a thread of its own: every
    fetcher must be driven (fetched, sought) from a single thread. A seek from the app's
    thread deletes from the record buffer `fetched_records` is iterating in the consumer
    thread: a KeyError that crashes faust's Fetcher and stops the app consuming."""
    threads: dict[int, set[str]] = defaultdict(set)

    def tracked(name: str) -> Any:
        original = getattr(Fetcher, name)

        def call(self: Fetcher, *args: Any, **kwargs: Any) -> Any:
            threads[id(self)].add(threading.current_thread().name)
            return original(self, *args, **kwargs)

        return call

    for name in ("fetched_records", "seek_to", "request_offset_reset"):
        monkeypatch.setattr(Fetcher, name, tracked(name))
    yield
    assert threads, "no fetcher was used"
    assert all(len(names) == 1 for names in threads.values()), dict(threads)


def _settings() -> FaustSettings:
    return FaustSettings(app_id=f"faust-{uuid.uuid4().hex[:8]}", batch_timeout=0.1)


def _app(
    client: Any,
    boot: str,
    database: str,
    topic: str,
    settings: FaustSettings,
    data_dir: Path,
    dlq: str | None = None,
) -> Any:
    return make_app(
        client,
        bootstrap=boot,
        database=database,
        topic=topic,
        dlq_topic=dlq or topic + ".dlq",
        settings=settings,
        data_dir=data_dir,
    )


def _no_duplicates(client: Any, database: str) -> None:
    got = digest(client, database)
    for table in ("events", "metric_points", "run_versions"):
        assert got[table]["raw_count"] == got[table]["count"], table


def _positions(client: Any, database: str, topic: str, partition: int) -> list[tuple[int, ...]]:
    return [
        tuple(r)
        for r in client.query(
            f"SELECT first_offset, last_offset, state FROM {database}.projection_position FINAL"
            " WHERE topic = %(t)s AND log_partition = %(p)s ORDER BY first_offset",
            parameters={"t": topic, "p": partition},
        ).result_rows
    ]


async def _send(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await prod.start()
    try:
        await prod.send_and_wait(topic, value, key=key)
    finally:
        await prod.stop()


async def _read(bootstrap: str, topic: str) -> list[Any]:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await c.start()
    try:
        got = await c.getmany(timeout_ms=10_000)
        return [m for msgs in got.values() for m in msgs]
    finally:
        await c.stop()


async def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in offsets]
        c.assign(tps)
        await c.commit({tp: offsets[tp.partition] for tp in tps})
    finally:
        await c.stop()


def test_catch_up_and_live_exact_and_pending_intent_redone_with_its_bounds(
    connection: Connection, chdb_client: Any, read_db: str, kafka_topic: str, tmp_path: Path
) -> None:
    boot = connection.kafka_bootstrap
    runs = [f"r{i}" for i in range(6)]
    dlq = kafka_topic + ".dlq"
    create_topics(boot, {dlq: 1})

    async def scenario() -> dict[str, Any]:
        first = await run_producers(boot, kafka_topic, 3, runs, events=4, points=400)
        await _send(boot, kafka_topic, b"r0", b"garbage")  # poison: to the DLQ, flows on
        ends = await end_offsets(boot, kafka_topic)
        partition = max(ends, key=lambda p: ends[p])
        assert ends[partition] >= 6
        # A crash between intent and done left [0, 4] pending: it must be redone as is.
        ClickHouseSink(chdb_client, read_db).mark_intent(kafka_topic, partition, 0, 4)
        settings = _settings()
        # ... and faust had acked (so committed) everything: Kafka's offsets must not count.
        await _commit(boot, settings.app_id, kafka_topic, ends)
        app = _app(chdb_client, boot, read_db, kafka_topic, settings, tmp_path / "faust", dlq=dlq)
        await app.start()
        try:
            await wait_projected(chdb_client, read_db, boot, kafka_topic, timeout=60)
            rows = _positions(chdb_client, read_db, kafka_topic, partition)
            assert rows[0] == (0, 4, 1)
            assert rows[1][0] == 5
            second = await run_producers(boot, kafka_topic, 2, ["live-a", "live-b"], 3, 200)
            await wait_projected(chdb_client, read_db, boot, kafka_topic, timeout=60)
        finally:
            await app.stop()
        metrics = projector(app).metrics
        assert metrics.points.labels(kafka_topic)._value.get() == first["points"] + second["points"]
        assert metrics.dlq.labels(kafka_topic, "undecodable")._value.get() == 1
        dead = await _read(boot, dlq)
        assert [(m.key, m.value) for m in dead] == [(b"r0", b"garbage")]
        headers = dict(dead[0].headers)
        assert headers["source_topic"] == kafka_topic.encode()
        assert headers["reason"] == b"undecodable"
        return {
            "counts": {**first["counts"], **second["counts"]},
            "sums": {**first["sums"], **second["sums"]},
        }

    expect = asyncio.run(scenario())
    check_points(chdb_client, read_db, expect)
    _no_duplicates(chdb_client, read_db)


def test_failing_sink_loses_nothing_and_duplicates_nothing(
    connection: Connection, chdb_client: Any, read_db: str, kafka_topic: str, tmp_path: Path
) -> None:
    boot = connection.kafka_bootstrap
    flaky = FailingClient(chdb_client)

    async def scenario() -> dict[str, Any]:
        settings = dataclasses.replace(_settings(), retry_backoff_max=0.3, batch_max_bytes=40_000)
        app = _app(flaky, boot, read_db, kafka_topic, settings, tmp_path / "faust")
        await app.start()
        try:
            expect = await run_producers(boot, kafka_topic, 2, ["r1", "r2", "r3"], 6, 400)
            await wait_projected(chdb_client, read_db, boot, kafka_topic, timeout=60)
            await wait_pages(chdb_client, read_db)  # the app's timer refreshes them
        finally:
            await app.stop()
        assert flaky.failed > 0
        assert projector(app).metrics.retries.labels(kafka_topic)._value.get() >= flaky.failed
        return expect

    expect = asyncio.run(scenario())
    check_points(chdb_client, read_db, expect)
    _no_duplicates(chdb_client, read_db)


def _active_parts(client: Any, database: str, table: str) -> int:
    return int(
        client.query(
            "SELECT count() FROM system.parts WHERE database = %(d)s AND table = %(t)s AND active",
            parameters={"d": database, "t": table},
        ).result_rows[0][0]
    )


def test_run_search_is_merged_once_the_topic_goes_quiet_and_positions_are_pruned(
    connection: Connection, chdb_client: Any, read_db: str, kafka_topic: str, tmp_path: Path
) -> None:
    """The faust engine merges run_search into one part when its batches stop, and prunes
    the position rows (the policies of `processors.compaction`, as the aiokafka worker):
    search's FINAL then merges nothing, and each partition keeps its newest batch's row."""
    boot = connection.kafka_bootstrap
    merges: list[int] = []
    dropped: list[int] = []

    async def scenario() -> None:
        settings = dataclasses.replace(
            _settings(), page_refresh_interval=0.2, position_prune_interval=0.2, positions_kept=1
        )
        app = _app(chdb_client, boot, read_db, kafka_topic, settings, tmp_path / "faust")
        sink = projector(app).processor.sink
        merge, prune = sink.compact_search, sink.prune_positions

        def counted() -> None:
            merge()
            merges.append(_active_parts(chdb_client, read_db, "run_search"))

        def pruned(topic: str, above: int) -> int:
            dropped.append(prune(topic, above))
            return dropped[-1]

        sink.compact_search = counted  # type: ignore[method-assign]
        sink.prune_positions = pruned  # type: ignore[method-assign]
        await app.start()
        try:
            # spread over ~2 s: several batches per partition
            await run_producers(
                boot, kafka_topic, 2, [f"r{i}" for i in range(8)], 6, 50, rate_events=24.0
            )
            await wait_projected(chdb_client, read_db, boot, kafka_topic, timeout=60)
            for _ in range(100):
                if merges and sum(dropped) and dropped[-1] == 0:
                    break
                await asyncio.sleep(0.1)
        finally:
            await app.stop()

    asyncio.run(scenario())
    assert merges, "run_search was never merged"
    assert merges[-1] == 1
    assert sum(dropped) > 0, "the position rows were never pruned"
    rows = chdb_client.query(
        f"SELECT log_partition, count() FROM {read_db}.projection_position FINAL"
        " WHERE topic = %(t)s GROUP BY log_partition",
        parameters={"t": kafka_topic},
    ).result_rows
    assert rows
    assert all(n == 1 for _, n in rows), rows  # caught up: each partition's newest batch


def test_stop_and_restart_mid_stream_is_exact(
    connection: Connection, chdb_client: Any, read_db: str, kafka_topic: str, tmp_path: Path
) -> None:
    boot = connection.kafka_bootstrap
    settings = _settings()  # one app id = one consumer group across the restart

    def app() -> Any:
        return _app(chdb_client, boot, read_db, kafka_topic, settings, tmp_path / "faust")

    async def scenario() -> dict[str, Any]:
        producing = asyncio.create_task(
            run_producers(
                boot, kafka_topic, 2, [f"r{i}" for i in range(4)], 30, 200, rate_events=25.0
            )
        )
        a = app()
        await a.start()
        points = projector(a).metrics.points.labels(kafka_topic)
        deadline = asyncio.get_running_loop().time() + 40
        while points._value.get() == 0:  # the first app is projecting the stream
            assert asyncio.get_running_loop().time() < deadline, "first app projected nothing"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await a.stop()  # mid-stream: batches in flight are abandoned or finished
        first_points = points._value.get()
        b = app()
        await b.start()
        try:
            expect = await producing
            await wait_projected(chdb_client, read_db, boot, kafka_topic, timeout=60)
        finally:
            await b.stop()
        assert first_points > 0  # the first app did project part of the stream
        assert projector(b).metrics.points.labels(kafka_topic)._value.get() > 0
        return expect

    expect = asyncio.run(scenario())
    check_points(chdb_client, read_db, expect)
    _no_duplicates(chdb_client, read_db)


async def _until_projecting(app: Any, topic: str, timeout: float = 40.0) -> None:
    batches = projector(app).metrics.batches.labels(topic)
    deadline = asyncio.get_running_loop().time() + timeout
    while batches._value.get() == 0:
        assert asyncio.get_running_loop().time() < deadline, "the app projected nothing"
        await asyncio.sleep(0.05)


def test_two_apps_rebalancing_while_events_flow(
    connection: Connection, chdb_client: Any, read_db: str, kafka_topic: str, tmp_path: Path
) -> None:
    """A second app joins the group (partitions move to it, batches in flight are
    abandoned), then the first leaves (they move back): nothing lost, nothing doubled."""
    boot = connection.kafka_bootstrap
    settings = _settings()

    def app(name: str) -> Any:
        return _app(chdb_client, boot, read_db, kafka_topic, settings, tmp_path / name)

    async def scenario() -> dict[str, Any]:
        producing = asyncio.create_task(
            run_producers(
                boot, kafka_topic, 2, [f"r{i}" for i in range(4)], 40, 200, rate_events=40.0
            )
        )
        a, b = app("a"), app("b")
        await a.start()
        try:
            await _until_projecting(a, kafka_topic)
            await b.start()
            try:
                await _until_projecting(b, kafka_topic)
            finally:
                await a.stop()
            expect = await producing
            await wait_projected(chdb_client, read_db, boot, kafka_topic, timeout=60)
        finally:
            await a.stop()
            await b.stop()
        return expect

    expect = asyncio.run(scenario())
    check_points(chdb_client, read_db, expect)
    _no_duplicates(chdb_client, read_db)
