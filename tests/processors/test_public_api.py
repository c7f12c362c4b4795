"""The public surface the lead wires into `runstream serve` / `runstream replay`."""

from __future__ import annotations

from importlib import resources

import processors
from processors.migrate import migrations


def test_public_api_is_pinned() -> None:
    assert processors.__all__ == [
        "ClickHouseSink",
        "EventArchive",
        "ProjectionWorker",
        "ReplayProgress",
        "ReplayResult",
        "WorkerMetrics",
        "WorkerSettings",
        "digest",
        "migrate",
        "project_batch",
        "replay",
        "replay_async",
    ]


def test_migrations_ship_as_package_data() -> None:
    files = [m.name for m in migrations()]
    assert files
    assert files[0] == "0001_read_models.sql"
    assert resources.files("processors.migrations").joinpath(files[0]).is_file()
