"""Session fixtures: ONE real stack per test session, isolated resources per test.

- `stack`/`connection`: real Kafka (KRaft) + SeaweedFS S3 started once per session under
  .runstream/test-stacks/<pid>; chDB lives in the same directory (one chDB path per process).
- `kafka_topic`, `s3_prefix`, `ch_database`: per-test isolation by topic, key prefix and
  database (few buckets: each SeaweedFS bucket costs a volume).

RUNSTREAM_TEST_STACK=containers selects the testcontainers path (needs a Docker engine);
without an engine those tests skip naming the reason, they never pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstream.stack import Connection, LocalStack
from runstream.stack.kafka import create_topics
from runstream.stack.procs import start_ticks

REPO = Path(__file__).resolve().parents[1]
RUNSTREAM_DIR = Path(os.environ.get("RUNSTREAM_HOME", REPO / ".runstream"))
TEST_STACKS = RUNSTREAM_DIR / "test-stacks"
CACHE = RUNSTREAM_DIR / "cache"


def _reap_stale_test_stacks() -> None:
    """A crashed earlier session leaves its stack running: report it and stop it by pid."""
    if not TEST_STACKS.is_dir():
        return
    for d in TEST_STACKS.iterdir():
        if d.name.isdigit() and start_ticks(int(d.name)) is not None:
            continue  # that session is still running
        old = LocalStack(d, cache=CACHE)
        stopped = old.down(progress=lambda m, tag=d.name: print(f"[stale test stack {tag}] {m}"))
        if stopped:
            print(f"stopped {stopped} left behind by test session {d.name}")
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    if os.environ.get("RUNSTREAM_TEST_STACK", "local") == "containers":
        pytest.skip("RUNSTREAM_TEST_STACK=containers: the local-stack fixtures are not used")
    _reap_stale_test_stacks()
    s = LocalStack(TEST_STACKS / str(os.getpid()), cache=CACHE, partitions=4)
    s.up()
    try:
        yield s
    finally:
        s.destroy()


@pytest.fixture(scope="session")
def connection(stack: LocalStack) -> Connection:
    return stack.connection()


def _slug(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40].strip("-").lower()


@pytest.fixture
def kafka_topic(connection: Connection, request: pytest.FixtureRequest) -> str:
    """A fresh 4-partition topic for this test."""
    name = f"t.{_slug(request)}.{uuid.uuid4().hex[:8]}"
    create_topics(connection.kafka_bootstrap, {name: 4})
    return name


@pytest.fixture
def s3_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of its own inside the stack's single bucket."""
    return f"tests/{_slug(request)}-{uuid.uuid4().hex[:8]}/"


@pytest.fixture(scope="session")
def minio_client(connection: Connection) -> Any:
    from minio import Minio

    return Minio(
        connection.s3_endpoint.split("://", 1)[1],
        access_key=connection.s3_access_key,
        secret_key=connection.s3_secret_key,
        secure=False,
    )


@pytest.fixture(scope="session")
def chdb_client(stack: LocalStack) -> Any:
    """The process's one chDB (clickhouse-connect `chdb://`), under the session stack."""
    import clickhouse_connect

    stack.chdb_dir.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=f"chdb://{stack.chdb_dir}")


@pytest.fixture(scope="session")
def chdb_writers(stack: LocalStack, chdb_client: Any) -> tuple[Any, ...]:
    """One more handle on the process's chDB, as `runstream serve` gives its worker for a
    small batch's inserts side by side (`ClickHouseSink.writers`)."""
    import clickhouse_connect

    return (clickhouse_connect.get_client(dsn=f"chdb://{stack.chdb_dir}"),)


@pytest.fixture
def ch_database(chdb_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of its own for this test (chDB allows one data path per process)."""
    name = f"t_{re.sub(r'[^a-z0-9]+', '_', _slug(request))}_{uuid.uuid4().hex[:8]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")
