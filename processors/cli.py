"""`python -m processors.worker`: run one standalone worker (cluster mode, fault tests).

ClickHouse: `--clickhouse-url http://host:8123` (server) or `--chdb-path DIR` (this process
then owns that chDB directory). S3 archive credentials come from RUNSTREAM_S3_ACCESS_KEY /
RUNSTREAM_S3_SECRET_KEY. `--verify` prints the read models' digest as JSON and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any
from urllib.parse import urlparse

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from processors import dedup_repair
from processors.archive import EventArchive
from processors.codec import DLQ_TOPIC, EVENTS_TOPIC
from processors.digest import digest, point_totals, rollup_mismatches, summary_mismatches
from processors.telemetry import ChdbCollector, HeapCollector, WorkerMetrics
from processors.worker import ProjectionWorker, WorkerSettings

#: chDB memory caps (bytes) applied to the worker's own engine: query settings ...
CHDB_SETTINGS = {
    "max_memory_usage": 600 * 1024 * 1024,
    "max_bytes_before_external_group_by": 200 * 1024 * 1024,
    # ClickHouse >= 26.3 runs a query on one thread unless the server has 1 GiB free per
    # thread; under the 800 MiB server cap below that is always, which made every read
    # ~1/3 slower (a 1M-point bucket view: 47 -> 32 ms with 2 threads)
    "max_threads_min_free_memory_per_thread": 64 * 1024 * 1024,
}
#: ... and server settings (chDB connection-string options; defaults are 5 GiB caches)
CHDB_OPTIONS = {
    "max_server_memory_usage": 800 * 1024 * 1024,
    "mark_cache_size": 64 * 1024 * 1024,
    "primary_index_cache_size": 64 * 1024 * 1024,
    "index_mark_cache_size": 64 * 1024 * 1024,
}


#: chDB's allocator returns freed pages at once instead of keeping them 5 s for reuse: an
#: insert or merge allocates a few hundred MB for a moment, and kept pages stacked those
#: moments into 600-700 MB of RSS while 8 ranks logged (`runstream_chdb_jemalloc_bytes`:
#: resident 738 MB, allocated 61 MB); with this, resident stays within ~140 MB. Read by
#: chDB's jemalloc when the library loads, so set before the first `import chdb`.
CHDB_JEMALLOC = "dirty_decay_ms:1000,muzzy_decay_ms:0"


_OPENED: set[str] = set()


def _own(path: str) -> None:
    """First open of a chDB directory in this process: repair the deduplication records of
    inserts a killed owner left half done (`processors.dedup_repair`), before chDB loads
    them. Never again while this process may be inserting into it."""
    path = os.path.abspath(path)
    if path not in _OPENED:
        _OPENED.add(path)
        dedup_repair.repair(path)


def clickhouse_client(url: str | None = None, chdb_path: str | None = None) -> Any:
    """A clickhouse-connect client for a server URL or an owned chDB directory."""
    if (chdb_path or (url or "").startswith("chdb://")) and "chdb" not in sys.modules:
        os.environ.setdefault("JE_MALLOC_CONF", CHDB_JEMALLOC)
    import clickhouse_connect

    if chdb_path or (url or "").startswith("chdb://"):
        _own(chdb_path or (url or "").removeprefix("chdb://").split("?")[0])
    if chdb_path:
        return clickhouse_connect.get_client(
            dsn=f"chdb://{os.path.abspath(chdb_path)}",
            settings=CHDB_SETTINGS,
            chdb_options=CHDB_OPTIONS,
        )
    if not url:
        raise SystemExit("--clickhouse-url or --chdb-path is required")
    if url.startswith("chdb://"):
        return clickhouse_connect.get_client(
            dsn=url, settings=CHDB_SETTINGS, chdb_options=CHDB_OPTIONS
        )
    return clickhouse_connect.get_client(dsn=url)


def archive_from_args(args: argparse.Namespace) -> EventArchive | None:
    if not args.s3_endpoint:
        return None
    from minio import Minio

    u = urlparse(args.s3_endpoint)
    client = Minio(
        u.netloc,
        access_key=os.environ.get("RUNSTREAM_S3_ACCESS_KEY", ""),
        secret_key=os.environ.get("RUNSTREAM_S3_SECRET_KEY", ""),
        secure=u.scheme == "https",
    )
    return EventArchive(client, args.s3_bucket, args.s3_prefix)


def _number(
    kind: type[int] | type[float], low: float, *, inclusive: bool, high: float | None = None
) -> Any:
    """An argparse `type`: a `kind` number >= `low` (> `low` unless `inclusive`), at most
    `high`; anything else is refused at the command line, naming the bound."""
    bound = f">= {low:g}" if inclusive else f"> {low:g}"
    if high is not None:
        bound += f" and <= {high:g}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        below = value < low or (value == low and not inclusive)
        if value != value or below or (high is not None and value > high):  # NaN too
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


#: counts and sizes (at least 1), durations and sizes above 0, and the two that may be 0
_COUNT = _number(int, 1, inclusive=True)
_POSITIVE = _number(float, 0, inclusive=False)
_LINGER = _number(float, 0, inclusive=True)
_KEPT = _number(int, 0, inclusive=True)
_PORT = _number(int, 0, inclusive=True, high=65535)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m processors.worker", description=__doc__)
    ap.add_argument("--bootstrap", default=os.environ.get("RUNSTREAM_KAFKA_BOOTSTRAP"))
    ap.add_argument("--topic", default=EVENTS_TOPIC)
    ap.add_argument("--dlq-topic", default=DLQ_TOPIC)
    ap.add_argument("--group", default="runstream-processors")
    ap.add_argument("--instance-id", default=None, help="static group membership id")
    ap.add_argument("--database", default="runstream")
    ap.add_argument("--clickhouse-url", default=os.environ.get("RUNSTREAM_CLICKHOUSE_URL"))
    ap.add_argument("--chdb-path", default=None)
    ap.add_argument("--s3-endpoint", default=None)
    ap.add_argument("--s3-bucket", default="runstream")
    ap.add_argument("--s3-prefix", default="")
    ap.add_argument("--batch-size", type=_COUNT, default=20_000)
    ap.add_argument("--batch-timeout", type=_POSITIVE, default=0.2)
    ap.add_argument(
        "--batch-linger",
        type=_LINGER,
        default=0.02,
        help="after the first records of a batch, wait at most this long for more (s)",
    )
    ap.add_argument(
        "--position-prune-interval",
        type=_POSITIVE,
        default=WorkerSettings.position_prune_interval,
        help="prune the position rows (one per batch) at most this often (s)",
    )
    ap.add_argument(
        "--positions-kept",
        type=_KEPT,
        default=WorkerSettings.positions_kept,
        help="prune a partition's position rows once it holds more than this many",
    )
    ap.add_argument("--batch-max-mb", type=_COUNT, default=16)
    ap.add_argument(
        "--max-partition-fetch-mb",
        type=_POSITIVE,
        default=WorkerSettings.max_partition_fetch_bytes / 2**20,
        help="Kafka fetch size per partition (bounds the records buffered in memory)",
    )
    ap.add_argument(
        "--metrics-port", type=_PORT, default=None, help="serve Prometheus /metrics on this port"
    )
    ap.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port")
    ap.add_argument("--verify", action="store_true", help="print the digest as JSON and exit")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    client = clickhouse_client(args.clickhouse_url, args.chdb_path)
    if args.verify:
        report = {
            "digest": digest(client, args.database),
            "points": point_totals(client, args.database),
            "summary_mismatches": summary_mismatches(client, args.database),
            "rollup_mismatches": rollup_mismatches(client, args.database),
        }
        sys.stdout.write(json.dumps(report) + "\n")
        return 0
    if not args.bootstrap:
        raise SystemExit("--bootstrap (or RUNSTREAM_KAFKA_BOOTSTRAP) is required")
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(HeapCollector())
    if args.chdb_path or (args.clickhouse_url or "").startswith("chdb://"):
        registry.register(ChdbCollector(client))
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
    worker = ProjectionWorker(
        client,
        bootstrap=args.bootstrap,
        database=args.database,
        topic=args.topic,
        dlq_topic=args.dlq_topic,
        archive=archive_from_args(args),
        settings=WorkerSettings(
            group_id=args.group,
            group_instance_id=args.instance_id,
            batch_size=args.batch_size,
            batch_timeout=args.batch_timeout,
            batch_linger=args.batch_linger,
            position_prune_interval=args.position_prune_interval,
            positions_kept=args.positions_kept,
            batch_max_bytes=args.batch_max_mb * 1024 * 1024,
            max_partition_fetch_bytes=int(args.max_partition_fetch_mb * 2**20),
        ),
        metrics=WorkerMetrics(registry),
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.stop()))
        await worker.run()

    asyncio.run(run())
    return 0
