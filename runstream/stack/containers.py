"""The testcontainers path: official Kafka, ClickHouse server and MinIO images.

Selected explicitly (`--backend containers`, RUNSTREAM_TEST_STACK=containers) or when a
Docker engine answers. Detection talks to the engine's socket with a short timeout, so a
machine without an engine gets a clear DockerUnavailable at once, never a hang.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from runstream.stack.errors import DockerUnavailable
from runstream.stack.local import DEFAULT_BUCKET, Connection
from schemas import DLQ_TOPIC, EVENTS_TOPIC

KAFKA_IMAGE = "apache/kafka:4.0.0"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"
MINIO_IMAGE = "minio/minio:RELEASE.2025-04-22T22-12-26Z"


def docker_status(timeout: float = 2.0) -> tuple[bool, str]:
    """(True, "") when a Docker engine answers /_ping, else (False, why)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            path = host[len("unix://") :]
            if not os.path.exists(path):
                return False, f"no Docker engine: socket {path} does not exist"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        elif host.startswith("tcp://"):
            hostport = host[len("tcp://") :].rstrip("/")
            h, _, p = hostport.rpartition(":")
            sock = socket.create_connection((h, int(p)), timeout=timeout)
        else:
            return False, f"no Docker engine: unsupported DOCKER_HOST {host!r}"
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(256)
    except OSError as exc:
        return False, f"no Docker engine at {host}: {exc}"
    if b" 200 " not in reply.split(b"\r\n", 1)[0]:
        return False, f"Docker engine at {host} answered {reply[:60]!r}"
    return True, ""


def require_docker() -> None:
    ok, why = docker_status()
    if not ok:
        raise DockerUnavailable(why)


@dataclass
class ContainerStack:
    """Kafka + ClickHouse server + MinIO containers (ryuk removes them when we exit)."""

    partitions: int = 4
    _containers: dict[str, Any] = field(default_factory=dict)

    def up(self) -> Connection:
        require_docker()
        from testcontainers.community.clickhouse import ClickHouseContainer
        from testcontainers.community.minio import MinioContainer
        from testcontainers.core.container import DockerContainer

        from runstream.stack.kafka import create_topics, wait_ready_bootstrap
        from runstream.stack.ports import free_ports
        from runstream.stack.seaweed import ensure_bucket

        # The official image advertises what we tell it; bind the broker to a host port
        # chosen up front so the advertised address is right before the container starts.
        (kport,) = free_ports(1)
        kafka = (
            DockerContainer(KAFKA_IMAGE)
            .with_bind_ports(9092, kport)
            .with_env("KAFKA_NODE_ID", "1")
            .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
            .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
            .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{kport}")
            .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
            .with_env(
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
            )
            .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
            .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        )
        clickhouse = ClickHouseContainer(CLICKHOUSE_IMAGE)
        minio = MinioContainer(MINIO_IMAGE)
        for name, c in (("kafka", kafka), ("clickhouse", clickhouse), ("s3", minio)):
            c.start()
            self._containers[name] = c
        bootstrap = f"127.0.0.1:{kport}"
        wait_ready_bootstrap(bootstrap, timeout=60)
        cfg = minio.get_config()
        ch_host = clickhouse.get_container_host_ip()
        ch_port = clickhouse.get_exposed_port(8123)
        conn = Connection(
            kafka_bootstrap=bootstrap,
            s3_endpoint=f"http://{cfg['endpoint']}",
            s3_access_key=cfg["access_key"],
            s3_secret_key=cfg["secret_key"],
            s3_bucket=DEFAULT_BUCKET,
            clickhouse_url=(
                f"http://{clickhouse.username}:{clickhouse.password}@{ch_host}:{ch_port}/"
            ),
        )
        create_topics(conn.kafka_bootstrap, {EVENTS_TOPIC: self.partitions, DLQ_TOPIC: 1})
        ensure_bucket(conn.s3_endpoint, conn.s3_access_key, conn.s3_secret_key, DEFAULT_BUCKET)
        return conn

    def down(self) -> list[str]:
        stopped = []
        for name, c in list(self._containers.items()):
            c.stop()
            stopped.append(name)
            del self._containers[name]
        return stopped
