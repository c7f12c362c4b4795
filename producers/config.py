"""Client configuration: explicit arguments > RUNSTREAM_* environment > the local stack's file.

The fallback file is `$RUNSTREAM_HOME/stack/connection.json` (RUNSTREAM_HOME defaults to
`~/.runstream`), a JSON object mapping the same RUNSTREAM_* names to values, written by
`runstream up`. Reading configuration never touches the network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from producers.errors import ConfigError

DEFAULT_BUCKET = "runstream"
DEFAULT_PROJECT = "default"

# field name -> environment variable
ENV_NAMES: dict[str, str] = {
    "kafka_bootstrap": "RUNSTREAM_KAFKA_BOOTSTRAP",
    "s3_endpoint": "RUNSTREAM_S3_ENDPOINT",
    "s3_access_key": "RUNSTREAM_S3_ACCESS_KEY",
    "s3_secret_key": "RUNSTREAM_S3_SECRET_KEY",
    "s3_bucket": "RUNSTREAM_S3_BUCKET",
    "api_url": "RUNSTREAM_API_URL",
    "token": "RUNSTREAM_TOKEN",
    "project": "RUNSTREAM_PROJECT",
    "spool_dir": "RUNSTREAM_SPOOL_DIR",
    "topic": "RUNSTREAM_TOPIC",
    "mode": "RUNSTREAM_MODE",
}

MODES = ("kafka", "http", "offline")


def runstream_home(env: Mapping[str, str] | None = None) -> Path:
    """`$RUNSTREAM_HOME`, else `~/.runstream`."""
    env = os.environ if env is None else env
    home = env.get("RUNSTREAM_HOME")
    return Path(home).expanduser() if home else Path.home() / ".runstream"


def _events_topic() -> str:
    from schemas.codec import EVENTS_TOPIC

    return EVENTS_TOPIC


@dataclass(frozen=True)
class ClientConfig:
    """Where the SDK sends events and stores artifacts.

    Attributes:
        kafka_bootstrap: `host:port[,host:port]` of the brokers (direct Kafka transport).
        s3_endpoint: `http://host:port` of the S3 server for artifacts.
        s3_access_key: S3 access key.
        s3_secret_key: S3 secret key.
        s3_bucket: bucket holding blobs and run prefixes (default "runstream").
        api_url: base URL of the query API (HTTP ingest transport).
        token: project token for the HTTP ingest transport.
        project: project every event is tagged with (default "default").
        spool_dir: root of the write-ahead spools (default `$RUNSTREAM_HOME/spool`).
        topic: Kafka topic (default `schemas.EVENTS_TOPIC`).
        mode: "kafka" (default when a bootstrap is known), "http" (when only an API URL is
            known) or "offline" (spool only; upload later with `runstream sync`).
    """

    kafka_bootstrap: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = DEFAULT_BUCKET
    api_url: str | None = None
    token: str | None = None
    project: str = DEFAULT_PROJECT
    spool_dir: str = ""
    topic: str = ""
    mode: str = ""

    def __post_init__(self) -> None:
        if self.mode and self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.spool_dir:
            object.__setattr__(self, "spool_dir", str(runstream_home() / "spool"))
        if not self.topic:
            object.__setattr__(self, "topic", _events_topic())
        if not self.mode:
            if self.kafka_bootstrap:
                mode = "kafka"
            elif self.api_url:
                mode = "http"
            else:
                mode = "offline"
            object.__setattr__(self, "mode", mode)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
        """Build the configuration: `overrides` (non-None) > `env` > connection.json.

        Args:
            env: the environment to read (default `os.environ`).
            **overrides: field values that win over everything (None values are ignored).

        Raises:
            ConfigError: connection.json exists but is not a JSON object, or an unknown
                override name was given.
        """
        env = os.environ if env is None else env
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown configuration fields: {sorted(unknown)}")
        file_values = read_connection_file(runstream_home(env) / "stack" / "connection.json")
        values: dict[str, Any] = {}
        for name, var in ENV_NAMES.items():
            if overrides.get(name) is not None:
                values[name] = overrides[name]
            elif env.get(var):
                values[name] = env[var]
            elif file_values.get(var):
                values[name] = file_values[var]
        values.setdefault("spool_dir", str(runstream_home(env) / "spool"))
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> ClientConfig:
        """A copy with the non-None `overrides` applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def require_s3(self) -> tuple[str, str, str]:
        """(endpoint, access_key, secret_key) or ConfigError naming what is missing."""
        missing = [
            ENV_NAMES[n]
            for n in ("s3_endpoint", "s3_access_key", "s3_secret_key")
            if not getattr(self, n)
        ]
        if missing:
            raise ConfigError(
                f"artifacts need S3 settings: {', '.join(missing)} not set "
                "(environment or `runstream up`'s connection.json)"
            )
        return str(self.s3_endpoint), str(self.s3_access_key), str(self.s3_secret_key)


def read_connection_file(path: Path) -> dict[str, str]:
    """RUNSTREAM_* values of a `connection.json` ({} when the file is absent); the one reader
    of that file (the server settings use it too).

    Raises:
        ConfigError: the file is not valid JSON or not an object.
    """
    try:
        text = path.read_text()
    except OSError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object of RUNSTREAM_* names")
    return {str(k): str(v) for k, v in data.items() if v is not None}
