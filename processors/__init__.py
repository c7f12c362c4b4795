"""Runstream processors: project the event log into ClickHouse read models and the S3 archive.

Public API (pinned by tests/processors/test_public_api.py):

- `ProjectionWorker(client, bootstrap=…, database=…, …)` + `WorkerSettings`: the live worker
  (`await worker.run()`; `await worker.stop()`); `WorkerMetrics` for prometheus.
- `migrate(client, database)`: apply the shipped migrations (idempotent).
- `replay(client, database=…, …)` / `replay_async(…)`: rebuild into `<db>_v<N>` and switch.
- `EventArchive(minio_client, bucket, prefix)`: the S3 event archive.
- `project_batch(events, state)`: the pure projection; `digest(client, db)`: fingerprints.
"""

from processors.archive import EventArchive
from processors.digest import digest
from processors.migrate import migrate
from processors.projection import project_batch
from processors.replay import ReplayProgress, ReplayResult, replay, replay_async
from processors.sink import ClickHouseSink
from processors.telemetry import WorkerMetrics
from processors.worker import ProjectionWorker, WorkerSettings

__all__ = [
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
