"""The local stack is real: Kafka, S3 and chDB answer, restart keeps data, nothing leaks."""

from __future__ import annotations

import asyncio
import io
import os
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from runstream.stack import Connection, LocalStack
from runstream.stack.procs import processes_referencing

from .conftest import CACHE, TEST_STACKS

pytestmark = pytest.mark.stack


async def _produce(bootstrap: str, topic: str, n: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, f"v{i}".encode(), key=f"k{i % 7}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(
    bootstrap: str,
    topic: str,
    n: int,
    group: str | None = None,
    commit: bool = False,
    timeout: float = 30,
) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                got.extend(m.value for m in msgs)
        if commit:
            await consumer.commit()
    finally:
        await consumer.stop()
    return got


def test_kafka_produce_consume(connection: Connection, kafka_topic: str) -> None:
    asyncio.run(_produce(connection.kafka_bootstrap, kafka_topic, 500))
    got = asyncio.run(_consume(connection.kafka_bootstrap, kafka_topic, 500))
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(500))


def test_broker_restart_keeps_committed_data(
    stack: LocalStack, connection: Connection, kafka_topic: str
) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    asyncio.run(_produce(connection.kafka_bootstrap, kafka_topic, 200))
    first = asyncio.run(_consume(connection.kafka_bootstrap, kafka_topic, 200, group, commit=True))
    assert len(first) == 200
    stack.restart_kafka(hard=True)  # SIGKILL: no clean shutdown
    asyncio.run(_produce(connection.kafka_bootstrap, kafka_topic, 50))
    everything = asyncio.run(_consume(connection.kafka_bootstrap, kafka_topic, 250))
    assert len(everything) == 250, "messages acknowledged with acks=all survive a SIGKILL"
    # the committed position survived too: the group resumes after the first 200
    rest = asyncio.run(_consume(connection.kafka_bootstrap, kafka_topic, 50, group, timeout=10))
    assert sorted(rest) == sorted(f"v{i}".encode() for i in range(50))


def test_s3_roundtrip(connection: Connection, minio_client: Any, s3_prefix: str) -> None:
    from minio import Minio
    from minio.error import S3Error

    bucket = connection.s3_bucket
    payload = os.urandom(6 * 1024 * 1024 + 17)  # > 5 MiB: a real multipart upload
    minio_client.put_object(
        bucket, s3_prefix + "blob.bin", io.BytesIO(payload), len(payload), part_size=5 * 1024 * 1024
    )
    minio_client.put_object(bucket, s3_prefix + "sub/a.txt", io.BytesIO(b"a"), 1)
    assert minio_client.get_object(bucket, s3_prefix + "blob.bin").read() == payload
    assert minio_client.stat_object(bucket, s3_prefix + "blob.bin").size == len(payload)
    names = sorted(
        o.object_name for o in minio_client.list_objects(bucket, s3_prefix, recursive=True)
    )
    assert names == [s3_prefix + "blob.bin", s3_prefix + "sub/a.txt"]
    from datetime import timedelta

    url = minio_client.presigned_get_object(
        bucket, s3_prefix + "sub/a.txt", expires=timedelta(minutes=1)
    )
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.read() == b"a"
    intruder = Minio(
        connection.s3_endpoint.split("://")[1],
        access_key=connection.s3_access_key,
        secret_key="not-the-secret",
        secure=False,
    )
    with pytest.raises(S3Error):
        intruder.get_object(bucket, s3_prefix + "sub/a.txt")


def test_chdb_insert_and_query(chdb_client: Any, ch_database: str) -> None:
    chdb_client.command(
        f"CREATE TABLE {ch_database}.points (run String, step Int64, value Float64) "
        "ENGINE = MergeTree ORDER BY (run, step)"
    )
    rows = [[f"r{i % 3}", i, i * 0.5] for i in range(3000)]
    chdb_client.insert(f"{ch_database}.points", rows, column_names=["run", "step", "value"])
    res = chdb_client.query(
        f"SELECT run, count(), sum(value) FROM {ch_database}.points GROUP BY run ORDER BY run"
    )
    assert res.result_rows == [
        (f"r{k}", 1000, sum(i * 0.5 for i in range(3000) if i % 3 == k)) for k in range(3)
    ]


def test_databases_are_isolated(chdb_client: Any, ch_database: str) -> None:
    names = {r[0] for r in chdb_client.query("SHOW DATABASES").result_rows}
    assert ch_database in names
    assert chdb_client.query(f"SHOW TABLES FROM {ch_database}").result_rows == []


def _listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of LISTEN sockets owned by `pids` (from /proc; IPv4 and IPv6)."""
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addrs: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # 0A = LISTEN
                addrs.add(parts[1].rsplit(":", 1)[0])
    return addrs


def _child_pids(root: int) -> set[int]:
    out = {root}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in out:
                out.add(int(entry.name))
    return out


def test_stack_binds_loopback_only(stack: LocalStack) -> None:
    pids: set[int] = set()
    for rec in stack.records().values():
        pids |= _child_pids(rec.pid)
    addrs = _listening_addresses(pids)
    assert addrs, "the stack listens somewhere"
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    assert addrs <= loopback, f"non-loopback listeners: {addrs - loopback}"


def test_up_is_idempotent_down_leaves_nothing_and_stale_is_reported() -> None:
    home = TEST_STACKS / f"{os.getpid()}-lifecycle"
    s = LocalStack(home, cache=CACHE)
    try:
        conn = s.up(serve=True)
        pids = {r.name: r.pid for r in s.records().values()}
        assert set(pids) == {"kafka", "s3", "serve"}
        with urllib.request.urlopen(f"{conn.api_url}/health", timeout=5) as r:
            assert r.status == 200, "serve answers: worker + API over this stack's chDB"
        with urllib.request.urlopen(f"{conn.api_url}/api/v1/experiments", timeout=5) as r:
            assert r.status == 200, "reads work (the token table exists)"
        with urllib.request.urlopen(f"{conn.api_url}/metrics", timeout=5) as r:
            text = r.read().decode()
        names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
        # the process, the in-process worker and its chDB, all on the API's /metrics
        assert {
            "process_resident_memory_bytes",
            "runstream_processor_lag",
            "runstream_processor_points_total",
            "runstream_chdb_memory_tracked_bytes",
            "runstream_chdb_jemalloc_bytes",
            "runstream_chdb_parts_active",
        } <= names, sorted(names)
        assert s.up(serve=True) == conn, "a second up changes nothing"
        assert {r.name: r.pid for r in s.records().values()} == pids
        # lose the state file: the processes are still ours and must be found
        s.state_file.unlink()
        assert {pid for pid, _ in s.stale()} == set(pids.values())
        s.up()
        assert not set(pids.values()) & {r.pid for r in s.records().values()}
        assert not any(p in pids.values() for p, _ in processes_referencing(str(s.home)))
        assert sorted(s.down()) == ["kafka", "s3"]
        assert s.down() == [], "a second down has nothing to stop"
    finally:
        s.destroy()
    assert processes_referencing(str(s.home)) == [], "down left a process behind"


def test_a_log_reader_is_not_taken_for_a_stale_service(stack: LocalStack) -> None:
    import subprocess

    reader = subprocess.Popen(
        ["tail", "-f", str(stack.logs / "kafka.log")], stdout=subprocess.DEVNULL
    )
    try:
        assert reader.pid not in {pid for pid, _ in stack.stale()}
    finally:
        reader.kill()
        reader.wait()
