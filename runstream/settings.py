"""Server-side settings from RUNSTREAM_* variables (cluster shape) or the local stack.

Rule: an environment variable wins; otherwise the local stack's connection file under
RUNSTREAM_HOME supplies the value; `deploy/compose.yaml` sets exactly these variables
(tests/test_deploy.py keeps the two in agreement).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from producers.config import read_connection_file

#: field name -> environment variable; the one list of variables the services read.
ENV_VARS: dict[str, str] = {
    "kafka_bootstrap": "RUNSTREAM_KAFKA_BOOTSTRAP",
    "clickhouse_url": "RUNSTREAM_CLICKHOUSE_URL",
    "s3_endpoint": "RUNSTREAM_S3_ENDPOINT",
    "s3_access_key": "RUNSTREAM_S3_ACCESS_KEY",
    "s3_secret_key": "RUNSTREAM_S3_SECRET_KEY",
    "s3_bucket": "RUNSTREAM_S3_BUCKET",
    "clickhouse_user": "RUNSTREAM_CLICKHOUSE_USER",
    "clickhouse_password": "RUNSTREAM_CLICKHOUSE_PASSWORD",
    "presign_expiry_s": "RUNSTREAM_PRESIGN_EXPIRY_S",
    "search_cache_mb": "RUNSTREAM_SEARCH_CACHE_MB",
    "experiment_check_ttl_ms": "RUNSTREAM_EXPERIMENT_CHECK_TTL_MS",
}
OPTIONAL = {
    "s3_bucket",
    "clickhouse_user",
    "clickhouse_password",
    "presign_expiry_s",
    "search_cache_mb",
    "experiment_check_ttl_ms",
}
#: numeric fields (text, as in the environment) -> the least value each accepts
_WHOLE_NUMBERS = {"presign_expiry_s": 1, "search_cache_mb": 0, "experiment_check_ttl_ms": 0}


def default_home() -> Path:
    return Path(os.environ.get("RUNSTREAM_HOME", Path.home() / ".runstream"))


@dataclass(frozen=True)
class ServerSettings:
    kafka_bootstrap: str
    clickhouse_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str = "runstream"
    clickhouse_user: str = "default"
    clickhouse_password: str = ""
    #: lifetime of presigned S3 URLs handed to clients, seconds
    presign_expiry_s: str = "900"
    #: memory of each API process for search results held by run state, MiB (0: none)
    search_cache_mb: str = "32"
    #: how long each API process reuses the experiment a write checked, ms (0: every check
    #: reads; `query_api.writer.CheckedExperiments`)
    experiment_check_ttl_ms: str = "1000"

    def __post_init__(self) -> None:
        for name, least in _WHOLE_NUMBERS.items():
            text = getattr(self, name)
            if not (text.strip().isdecimal() and int(text) >= least):
                raise ValueError(
                    f"{ENV_VARS[name]} must be a whole number >= {least}, got {text!r}"
                )

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, home: Path | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        conn_file = (home or default_home()) / "stack" / "connection.json"
        file_values = read_connection_file(conn_file)
        values: dict[str, str] = {}
        missing = []
        for field_name, var in ENV_VARS.items():
            value = env.get(var) or file_values.get(var)
            if value:
                values[field_name] = value
            elif field_name not in OPTIONAL:
                missing.append(var)
        if missing:
            raise LookupError(
                f"missing settings {', '.join(missing)}: set them, or run `runstream up` "
                f"so {conn_file} provides them"
            )
        return cls(**values)
