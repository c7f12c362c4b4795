"""deploy/compose.yaml agrees with the code: service names, ports, variables, commands.

Docker cannot run here, so this reads the file; what needs an engine is tested on the
testcontainers path (tests/test_backends.py), skipped with the reason where none answers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from runstream.cli import app
from runstream.settings import ENV_VARS
from runstream.stack.local import Connection
from schemas import DLQ_TOPIC, EVENTS_TOPIC

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return doc


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return {k: str(v) for k, v in env.items()}


def test_services_read_exactly_the_settings_the_code_defines(compose: dict[str, Any]) -> None:
    for name in ("processors", "api"):
        env = _env(compose["services"][name])
        runstream_vars = {k for k in env if k.startswith("RUNSTREAM_")}
        assert runstream_vars == set(ENV_VARS.values()), name
    # the local stack hands clients the same variables
    sample = Connection("k:1", "http://s:2", "a", "b", "bucket", "chdb:///x")
    assert set(sample.env()) <= set(ENV_VARS.values())


def test_addresses_point_at_the_services_and_their_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = _env(services["api"])
    host, port = env["RUNSTREAM_KAFKA_BOOTSTRAP"].split(":")
    kafka_env = _env(services[host])
    assert f"PLAINTEXT://:{port}" in kafka_env["KAFKA_LISTENERS"]
    assert kafka_env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{host}:{port}"

    ch = urlsplit(env["RUNSTREAM_CLICKHOUSE_URL"])
    assert ch.hostname == "clickhouse"
    assert ch.hostname in services
    assert ch.port == 8123, "clickhouse-connect speaks HTTP (8123), not the native port"
    assert "${CLICKHOUSE_USER" in env["RUNSTREAM_CLICKHOUSE_USER"]
    assert "${CLICKHOUSE_PASSWORD" in env["RUNSTREAM_CLICKHOUSE_PASSWORD"]
    ch_env = _env(services["clickhouse"])
    assert "${CLICKHOUSE_PASSWORD" in ch_env["CLICKHOUSE_PASSWORD"]

    s3 = urlsplit(env["RUNSTREAM_S3_ENDPOINT"])
    minio = services[s3.hostname]  # type: ignore[index]
    assert f":{s3.port}" in minio["command"][minio["command"].index("--address") + 1]
    minio_env = _env(minio)
    assert "${MINIO_ROOT_USER" in env["RUNSTREAM_S3_ACCESS_KEY"]
    assert "${MINIO_ROOT_PASSWORD" in env["RUNSTREAM_S3_SECRET_KEY"]
    assert "${MINIO_ROOT_USER" in minio_env["MINIO_ROOT_USER"]


def test_topics_created_are_the_topics_the_code_uses(compose: dict[str, Any]) -> None:
    script = " ".join(compose["services"]["kafka-topics"]["command"])
    created = set(re.findall(r"--topic (\S+)", script))
    assert created == {EVENTS_TOPIC, DLQ_TOPIC}


def test_service_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    import typer.main

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for name in ("processors", "api"):
        cmd = compose["services"][name]["command"]
        assert cmd[0] == "runstream"
        assert cmd[1] in commands, f"compose runs `runstream {cmd[1]}`, which the CLI lacks"


def test_no_secret_is_committed_and_ports_publish_on_loopback(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    for var in ("CLICKHOUSE_PASSWORD", "MINIO_ROOT_PASSWORD"):
        for m in re.finditer(r"^\s*" + var + r":\s*(\S+)", text, re.MULTILINE):
            assert m.group(1).startswith("${"), f"{var} must come from the environment"
    for name, svc in compose["services"].items():
        for mapping in svc.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), (
                f"{name} publishes {mapping} beyond loopback"
            )
