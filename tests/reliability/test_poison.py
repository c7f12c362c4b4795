"""Poison records (garbage, unknown fingerprint, Avro that breaks the content rules, timestamps
that are not epoch ms) interleaved with good events in ONE partition: each lands on the DLQ topic
with its reason and original bytes, the good events around it are all projected, and the
DLQ counter counts them by reason. Edge values the projection accepts by contract (NaN/±Inf,
negative steps, metrics of a run that was never created) are projected, not dead-lettered."""

from __future__ import annotations

import asyncio
import io
import math
import uuid
from collections import Counter
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastavro import parse_schema, schemaless_writer

import schemas
from processors import ProjectionWorker, WorkerSettings
from processors.migrate import migrate
from runstream.stack import Connection
from runstream.stack.kafka import create_topics
from schemas.avsc import strip_logical_types
from schemas.codec import MAGIC
from tests.processors.factory import Writer, encode, key_of
from tests.processors.stackutil import wait_projected

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _raw_avro(name: str, record: dict[str, Any], fingerprint: bytes | None = None) -> bytes:
    """Single-object encoding written straight with fastavro: bypasses the SDK's and
    `schemas.encode_record`'s validation, like a foreign or buggy producer would."""
    out = io.BytesIO()
    out.write(MAGIC + (fingerprint or schemas.fingerprint(name)))
    schemaless_writer(out, parse_schema(strip_logical_types(schemas.writer_schema(name))), record)
    return out.getvalue()


def _cases(
    w: Writer,
) -> tuple[list[tuple[bytes, bytes]], dict[int, tuple[str, str]], dict[str, Any]]:
    """Messages in log order, {index: (reason, error fragment)} of the poison ones, and what
    the good ones must project to."""
    good_metrics = w.metrics("r-1", np.arange(10, dtype=np.int64), ["loss", "acc"])
    edge = w.metrics("r-1", np.array([-3, 11, 12], dtype=np.int64), ["edge"])
    edge["values"] = np.array([math.nan, math.inf, -math.inf], dtype="<f8").tobytes()
    orphan = w.metrics("never-created", np.arange(4, dtype=np.int64), ["loss"])
    bad_idx = w.metrics("r-1", np.arange(3, dtype=np.int64), ["x"])
    bad_idx["key_idx"] = np.array([0, 5, 0], dtype="<u2").tobytes()  # only one key
    short_col = w.metrics("r-1", np.arange(3, dtype=np.int64), ["x"])
    short_col["values"] = b"\x00" * 5
    no_id = w.record("TagsSet", "r-1", tags={"never": "stored"})
    no_id["envelope"]["event_id"] = ""
    no_run = w.record("TagsSet", "r-1", tags={"never": "stored"})
    no_run["envelope"]["run_id"] = None
    body = _raw_avro("TagsSet", w.record("TagsSet", "r-1", tags={"a": "b"}))[10:]
    micros = w.metrics("r-1", np.arange(3, dtype=np.int64), ["x"])  # µs taken for ms
    micros["timestamps"] = np.full(3, 1_700_000_000_000_000, dtype="<i8").tobytes()
    far = w.record("TagsSet", "r-1", tags={"never": "stored"})
    far["envelope"]["occurred_at"] = 2**62

    def ok(name: str, rec: dict[str, Any]) -> tuple[bytes, bytes]:
        return key_of(rec), encode(name, rec)

    msgs: list[tuple[bytes, bytes]] = []
    poison: dict[int, tuple[str, str]] = {}

    def bad(value: bytes, fragment: str, reason: str = "undecodable") -> None:
        poison[len(msgs)] = (reason, fragment)
        msgs.append((b"r-1", value))

    msgs.append(ok("RunCreated", w.record("RunCreated", "r-1", name="r-1", params={"lr": "1"})))
    bad(b"definitely not an event", "bad marker")
    msgs.append(ok("TagsSet", w.record("TagsSet", "r-1", tags={"t1": "v1"})))
    bad(b"\xc3\x01ab", "too short")
    msgs.append(ok("MetricsLogged", good_metrics))
    bad(MAGIC + b"\xfe" * 8 + body, "unknown fingerprint")
    msgs.append(ok("MetricsLogged", edge))
    bad(_raw_avro("MetricsLogged", bad_idx), "out of range")
    bad(_raw_avro("MetricsLogged", short_col), "invalid content")
    msgs.append(ok("MetricsLogged", orphan))
    bad(_raw_avro("TagsSet", no_id), "empty envelope.event_id")
    bad(_raw_avro("TagsSet", no_run), "run_id")
    bad(_raw_avro("TagsSet", no_id)[:-3], "undecodable")  # truncated body
    bad(encode("MetricsLogged", micros), "timestamps", "projection_failed")
    bad(encode("TagsSet", far), "occurred_at", "projection_failed")
    msgs.append(ok("ParamsLogged", w.record("ParamsLogged", "r-1", params={"b": "2"})))
    msgs.append(ok("RunStatusChanged", w.record("RunStatusChanged", "r-1", status="FINISHED")))
    expect = {
        "events": len(msgs) - len(poison),
        "points": {("r-1", "loss"): 10, ("r-1", "acc"): 10, ("r-1", "edge"): 3},
        "orphan_points": 4,
    }
    return msgs, poison, expect


async def _send(boot: str, topic: str, msgs: list[tuple[bytes, bytes]]) -> list[int]:
    prod = AIOKafkaProducer(bootstrap_servers=boot, acks="all", enable_idempotence=True)
    await prod.start()
    try:
        return [(await prod.send_and_wait(topic, v, key=k)).offset for k, v in msgs]
    finally:
        await prod.stop()


async def _read(boot: str, topic: str, n: int) -> list[Any]:
    c = AIOKafkaConsumer(topic, bootstrap_servers=boot, auto_offset_reset="earliest")
    await c.start()
    out: list[Any] = []
    try:
        while True:  # everything there is: a second copy would be a duplicate
            got = await c.getmany(timeout_ms=2000 if len(out) >= n else 15_000)
            if not got:
                return out
            for msgs in got.values():
                out.extend(msgs)
    finally:
        await c.stop()


def test_poison_goes_to_the_dlq_with_its_bytes_and_the_partition_flows_on(
    connection: Connection, chdb_client: Any, ch_database: str
) -> None:
    boot = connection.kafka_bootstrap
    topic = f"t.poison.{uuid.uuid4().hex[:8]}"
    dlq = topic + ".dlq"
    create_topics(boot, {topic: 1, dlq: 1})
    msgs, poison, expect = _cases(Writer())
    migrate(chdb_client, ch_database)
    worker = ProjectionWorker(
        chdb_client,
        bootstrap=boot,
        database=ch_database,
        topic=topic,
        dlq_topic=dlq,
        settings=WorkerSettings(group_id=f"g-{uuid.uuid4().hex[:8]}", batch_size=4),
    )

    async def scenario() -> list[int]:
        task = asyncio.create_task(worker.run())
        try:
            offsets = await _send(boot, topic, msgs)
            await wait_projected(chdb_client, ch_database, boot, topic, timeout=60)
        finally:
            await worker.stop()
            await task
        return offsets

    offsets = asyncio.run(scenario())
    dead = asyncio.run(_read(boot, dlq, len(poison)))
    by_offset = {int(dict(m.headers)["source_offset"]): m for m in dead}
    assert len(dead) == len(poison), "each poison record dead-lettered exactly once"
    assert set(by_offset) == {offsets[i] for i in poison}
    for i, (reason, fragment) in poison.items():
        m = by_offset[offsets[i]]
        h = dict(m.headers)
        assert m.value == msgs[i][1], f"original bytes of record {i}"
        assert m.key == msgs[i][0]
        assert h["reason"] == reason.encode()
        assert fragment.encode() in h["error"], (fragment, h["error"])
        assert h["source_topic"] == topic.encode()
        assert h["source_partition"] == b"0"
    by_reason = Counter(reason for reason, _ in poison.values())
    for reason in ("undecodable", "projection_failed"):
        assert (
            worker.metrics.registry.get_sample_value(
                "runstream_processor_dlq_total", {"topic": topic, "reason": reason}
            )
            == by_reason[reason]
        ), reason

    q, db = chdb_client.query, ch_database
    assert q(f"SELECT count(), uniqExact(event_id) FROM {db}.events").result_rows == [
        (expect["events"], expect["events"])
    ]
    assert sorted(q(f"SELECT log_offset FROM {db}.events").result_rows) == sorted(
        (o,) for i, o in enumerate(offsets) if i not in poison
    )
    points = dict(
        ((r, k), n)
        for r, k, n in q(
            f"SELECT run_id, key, count() FROM {db}.metric_points GROUP BY run_id, key"
        ).result_rows
    )
    assert points == {**expect["points"], ("never-created", "loss"): expect["orphan_points"]}
    edge = q(
        f"SELECT step, value FROM {db}.metric_points WHERE key = 'edge' ORDER BY step"
    ).result_rows
    assert edge[0][0] == -3
    assert math.isnan(edge[0][1])
    assert edge[1:] == [(11, math.inf), (12, -math.inf)]
    assert q(f"SELECT key, value FROM {db}.tags FINAL WHERE deleted = 0").result_rows == [
        ("t1", "v1")
    ]
    assert sorted(q(f"SELECT key, value FROM {db}.params").result_rows) == [
        ("b", "2"),
        ("lr", "1"),
    ]
    assert q(f"SELECT status FROM {db}.runs FINAL WHERE run_id = 'r-1'").result_rows == [
        ("FINISHED",)
    ]
