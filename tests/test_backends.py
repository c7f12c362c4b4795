"""One contract, every backend: the local stack and the testcontainers stack must behave alike.

The containers backend needs a Docker engine; where none answers its cases are SKIPPED with
the reason, and a separate test proves the path reports that at once instead of hanging.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from runstream.stack import Connection, DockerUnavailable
from runstream.stack.containers import ContainerStack, docker_status
from runstream.stack.kafka import create_topics

from .test_stack import _consume, _produce


@pytest.fixture(scope="session")
def container_connection() -> Iterator[Connection]:
    ok, why = docker_status()
    if not ok:
        pytest.skip(f"containers backend: {why}")
    cs = ContainerStack()
    try:
        yield cs.up()
    finally:
        cs.down()


@pytest.fixture(params=["local", "containers"])
def backend(request: pytest.FixtureRequest) -> tuple[Connection, Any]:
    """(connection, ClickHouse client) of one backend."""
    if request.param == "local":
        request.getfixturevalue("stack")
        conn: Connection = request.getfixturevalue("connection")
        return conn, request.getfixturevalue("chdb_client")
    conn = request.getfixturevalue("container_connection")
    import clickhouse_connect

    return conn, clickhouse_connect.get_client(dsn=conn.clickhouse_url)


@pytest.mark.stack
class TestBackendContract:
    def test_event_log(self, backend: tuple[Connection, Any]) -> None:
        conn, _ = backend
        topic = f"contract.{uuid.uuid4().hex[:8]}"
        create_topics(conn.kafka_bootstrap, {topic: 2})
        asyncio.run(_produce(conn.kafka_bootstrap, topic, 100))
        assert len(asyncio.run(_consume(conn.kafka_bootstrap, topic, 100))) == 100

    def test_blob_store(self, backend: tuple[Connection, Any]) -> None:
        from minio import Minio

        conn, _ = backend
        client = Minio(
            conn.s3_endpoint.split("://")[1],
            access_key=conn.s3_access_key,
            secret_key=conn.s3_secret_key,
            secure=False,
        )
        key = f"contract/{uuid.uuid4().hex}"
        client.put_object(conn.s3_bucket, key, io.BytesIO(b"payload"), 7)
        assert client.get_object(conn.s3_bucket, key).read() == b"payload"

    def test_read_model_store(self, backend: tuple[Connection, Any]) -> None:
        _, ch = backend
        db = f"contract_{uuid.uuid4().hex[:8]}"
        ch.command(f"CREATE DATABASE {db}")
        try:
            ch.command(f"CREATE TABLE {db}.t (k UInt32, v Float64) ENGINE = MergeTree ORDER BY k")
            ch.insert(f"{db}.t", [[i, i / 2] for i in range(100)], column_names=["k", "v"])
            assert ch.query(f"SELECT count(), max(v) FROM {db}.t").result_rows == [(100, 49.5)]
        finally:
            ch.command(f"DROP DATABASE {db}")


def test_containers_path_reports_missing_engine_without_hanging() -> None:
    ok, _ = docker_status()
    if ok:
        pytest.skip("a Docker engine answers here; the no-engine report cannot be exercised")
    t0 = time.monotonic()
    with pytest.raises(DockerUnavailable, match="no Docker engine"):
        ContainerStack().up()
    assert time.monotonic() - t0 < 5
