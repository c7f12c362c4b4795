"""Real ClickHouse write failures while events flow: a table is DETACHed for a few seconds
(first `metric_points`, the first insert of a batch; then `run_search`, written after
`metric_points`/`metric_summary`/`producer_versions`, so the failing batch is half written).
The worker keeps retrying with backoff, neither its stored position nor Kafka's committed
offsets move past unwritten data, the failure shows in its metrics and log, and after
`ATTACH` it catches up with nothing lost or doubled."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import pytest

from processors import ProjectionWorker, WorkerSettings
from processors.migrate import migrate
from processors.sink import ClickHouseSink, Resume
from runstream.stack import Connection
from tests.processors.stackutil import (
    check_points,
    committed_offsets,
    end_offsets,
    run_producers,
    wait_projected,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]
OUTAGE_S = 3.0


def _retries(worker: ProjectionWorker, topic: str) -> float:
    v = worker.metrics.registry.get_sample_value(
        "runstream_processor_sink_retries_total", {"topic": topic}
    )
    return v or 0.0


def _gauge(worker: ProjectionWorker, name: str, topic: str, partition: int) -> float:
    v = worker.metrics.registry.get_sample_value(
        f"runstream_processor_{name}", {"topic": topic, "partition": str(partition)}
    )
    return v or 0.0


async def _until(cond: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_detached_tables_pause_the_worker_then_it_catches_up_exactly(
    connection: Connection,
    chdb_client: Any,
    ch_database: str,
    kafka_topic: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    boot, db, topic = connection.kafka_bootstrap, ch_database, kafka_topic
    group = f"g-{uuid.uuid4().hex[:8]}"
    sink = ClickHouseSink(chdb_client, db)
    migrate(chdb_client, ch_database)
    worker = ProjectionWorker(
        chdb_client,
        bootstrap=boot,
        database=db,
        topic=topic,
        dlq_topic=topic,
        settings=WorkerSettings(group_id=group, batch_timeout=0.1, retry_backoff_max=1.0),
    )
    outages: list[dict[str, Any]] = []

    async def positions() -> dict[int, Resume]:
        return await asyncio.to_thread(sink.positions, topic)

    async def outage(table: str) -> None:
        """DETACH `table` while events flow, check the worker holds, ATTACH it again."""
        await asyncio.to_thread(chdb_client.command, f"DETACH TABLE {db}.{table}")
        try:
            r0 = _retries(worker, topic)

            async def failing() -> bool:
                return _retries(worker, topic) >= r0 + 2

            await _until(failing, f"a failed write into the detached {table}")
            held_pos, held_kafka = await positions(), await committed_offsets(boot, group, topic)
            ends0, r1, t1 = (
                await end_offsets(boot, topic),
                _retries(worker, topic),
                time.monotonic(),
            )
            await asyncio.sleep(OUTAGE_S)
            ends1, r2 = await end_offsets(boot, topic), _retries(worker, topic)
            pos, kafka = await positions(), await committed_offsets(boot, group, topic)
            assert pos == held_pos, f"stored position moved while {table} was detached"
            assert kafka == held_kafka, f"Kafka offsets committed while {table} was detached"
            assert sum(ends1.values()) > sum(ends0.values()), "events flowed during the outage"
            pending = {p: r for p, r in pos.items() if r.redo_last is not None}
            assert pending, "the failing batch is an intent, never marked done"
            for p, r in pos.items():
                assert kafka.get(p, 0) <= r.offset, "Kafka committed past the stored position"
            assert sum(e - (pos[p].offset if p in pos else 0) for p, e in ends1.items()) > 0
            # retried with backoff, not in a hot loop (0.05 s doubling, capped at 1 s; the
            # counter is per topic and partitions may retry side by side)
            assert 2 <= r2 - r1 <= len(ends1) * (OUTAGE_S / 0.4 + 2), (r1, r2)
            for p in pending:  # visible: the failing gauge is up, the lag gauge grows
                assert _gauge(worker, "sink_failing", topic, p) == 1, (table, p)
            lag = sum(_gauge(worker, "lag", topic, p) for p in pending)
            assert lag > 0, f"lag gauge while {table} was detached"
            outages.append(
                {"table": table, "retries": r2 - r0, "lag": lag, "held_for": time.monotonic() - t1}
            )
        finally:
            await asyncio.to_thread(chdb_client.command, f"ATTACH TABLE {db}.{table}")
        pending_then = {p: r.redo_last for p, r in held_pos.items() if r.redo_last is not None}

        async def resumed() -> bool:
            now = await positions()
            return all(
                now[p].redo_last is None and now[p].offset > last
                for p, last in pending_then.items()
                if last is not None
            )

        await _until(resumed, f"the worker to write again after ATTACH {table}")
        for p in pending_then:
            assert _gauge(worker, "sink_failing", topic, p) == 0, (table, p)

    async def scenario() -> dict[str, Any]:
        task = asyncio.create_task(worker.run())
        producing = asyncio.create_task(
            run_producers(
                boot, topic, 2, [f"run-{i}" for i in range(4)], events=80, points=400,
                rate_events=15.0,
            )
        )  # fmt: skip
        try:

            async def projecting() -> bool:
                return bool(await positions())

            await _until(projecting, "the first batch", timeout=60)
            await outage("metric_points")
            await outage("run_search")
            assert not producing.done(), "producers finished before the outages ended"
            expect = await producing
            await wait_projected(chdb_client, db, boot, topic, timeout=90)
            await asyncio.sleep(0.3)
            assert sum(worker.lag().values()) == 0
        finally:
            await worker.stop()
            await task
            if not producing.done():
                producing.cancel()
        return expect

    with caplog.at_level(logging.WARNING, logger="processors.worker"):
        expect = asyncio.run(scenario())
    print(f"outages: {outages}")
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    for table in ("metric_points", "run_search"):
        assert any(f"{db}.{table}" in m or "UNKNOWN_TABLE" in m for m in failures), table

    check_points(chdb_client, db, expect)  # exact per run/key, with and without FINAL
    q = chdb_client.query
    n, ids = q(f"SELECT count(), uniqExact(event_id) FROM {db}.events").result_rows[0]
    assert n == ids == expect["messages"]
    raw, final = (
        q(f"SELECT count() FROM {db}.producer_versions{f}").result_rows[0][0]
        for f in ("", " FINAL")
    )
    assert raw == final, "producer_versions rows doubled by the redone half-written batch"
    producers = f"SELECT uniqExact(run_id, producer_id) FROM {db}.producer_versions"
    assert q(producers).result_rows[0][0] == 4 * 2
