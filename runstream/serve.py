"""Wiring of the server processes: the projection worker (cluster mode) and, in one-machine
mode, the worker and the API in ONE process over one chDB engine.

Rule: this module only connects packages (settings -> clients -> processors/query_api); the
behaviour lives in those packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from runstream.settings import ServerSettings

log = logging.getLogger("runstream.serve")


def clickhouse_client(settings: ServerSettings) -> Any:
    """chdb://DIR opens the embedded engine (this process then owns DIR); http(s):// a server."""
    import clickhouse_connect

    if settings.clickhouse_url.startswith("chdb://"):
        # chDB runs inside our process: processors' caps keep worker + API + chDB near 1 GiB
        from processors.cli import clickhouse_client as owned_chdb

        return owned_chdb(settings.clickhouse_url)
    return clickhouse_connect.get_client(
        dsn=settings.clickhouse_url,
        username=settings.clickhouse_user,
        password=settings.clickhouse_password,
    )


def minio_client(settings: ServerSettings) -> Any:
    from minio import Minio

    u = urlsplit(settings.s3_endpoint)
    return Minio(
        u.netloc,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=u.scheme == "https",
    )


def make_worker(
    settings: ServerSettings,
    client: Any,
    database: str,
    *,
    group: str = "runstream-processors",
    instance_id: str | None = None,
    registry: Any = None,
    writers: tuple[Any, ...] = (),
) -> Any:
    """A projection worker; a stable `instance_id` (static membership) lets a restarted
    worker take its partitions back at once instead of after the session timeout. Its
    Prometheus metrics go to `registry` (a new one when None)."""
    from processors.archive import EventArchive
    from processors.migrate import migrate
    from processors.telemetry import WorkerMetrics
    from processors.worker import ProjectionWorker, WorkerSettings

    migrate(client, database)
    archive = EventArchive(minio_client(settings), settings.s3_bucket)
    return ProjectionWorker(
        client,
        bootstrap=settings.kafka_bootstrap,
        database=database,
        archive=archive,
        settings=WorkerSettings(group_id=group, group_instance_id=instance_id),
        metrics=WorkerMetrics(registry),
        writers=writers,
    )


def run_worker(
    settings: ServerSettings,
    database: str,
    instance_id: str | None = None,
    engine: str = "aiokafka",
    metrics_addr: tuple[str, int] | None = None,
) -> None:
    """A standalone projection worker until SIGTERM/SIGINT (cluster mode).

    engine: "aiokafka" (default: fastest start, follows a replay's pointer switch, static
    membership) or "faust" (faust-streaming agent over the same BatchProcessor). Never run
    both engines on one database at once: their consumer groups differ.
    metrics_addr: (host, port) to serve Prometheus `/metrics` on (worker, process, and chDB
    when it owns one).
    """
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    client = clickhouse_client(settings)
    from processors.telemetry import ChdbCollector, HeapCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(HeapCollector())
    if settings.clickhouse_url.startswith("chdb://"):
        registry.register(ChdbCollector(client))
    if metrics_addr is not None:
        start_http_server(metrics_addr[1], addr=metrics_addr[0], registry=registry)
    if engine == "faust":
        from processors.archive import EventArchive
        from processors.faust_app import run_faust_worker
        from processors.telemetry import WorkerMetrics

        run_faust_worker(
            client,
            bootstrap=settings.kafka_bootstrap,
            database=database,
            archive=EventArchive(minio_client(settings), settings.s3_bucket),
            metrics=WorkerMetrics(registry),
        )
        return
    if engine != "aiokafka":
        raise ValueError(f"engine must be aiokafka or faust, not {engine!r}")
    worker = make_worker(settings, client, database, instance_id=instance_id, registry=registry)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.stop()))
        await worker.run()

    asyncio.run(main())


def build_api(settings: ServerSettings, database: str, client_factory: Any) -> Any:
    from query_api.app import create_app
    from query_api.artifacts import S3Settings
    from query_api.settings import Settings

    app = create_app(
        Settings(
            database=database,
            search_cache_bytes=int(settings.search_cache_mb) << 20,
            experiment_check_ttl_s=int(settings.experiment_check_ttl_ms) / 1000,
        ),
        client_factory,
        kafka_bootstrap=settings.kafka_bootstrap,
        s3=S3Settings(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_bucket,
            presign_expiry_s=int(settings.presign_expiry_s),
        ),
    )
    app.state.object_store = minio_client(settings)  # the UI's artifact downloads
    return app


def per_thread_clients(settings: ServerSettings) -> Callable[[], Any]:
    """The API's client factory: a client of its own for each thread that asks. A client runs
    one query at a time (clickhouse-connect locks a chDB handle per call, and an HTTP session
    is not re-entrant), so a shared one makes every read wait behind whatever else holds it:
    in `serve`, the worker's inserts (~1 s for a 1 M-point batch), pages and compactions.
    chDB handles on one engine run their queries side by side (~1 MB each)."""
    import threading

    local = threading.local()

    def factory() -> Any:
        if not hasattr(local, "client"):
            local.client = clickhouse_client(settings)
        return local.client

    return factory


#: nice value of the threads running the worker's queries in serve's chDB (ClickHouse's
#: `os_thread_priority`, reset when the query ends): the API's reads and the worker share two
#: cores, and a read that competed at equal priority with a busy worker took ~1.8x as long
#: (a 2 M-row read: 49 -> 23-29 ms, as on an idle engine). Unlike `priority`, which pauses
#: lower-priority queries outright, the worker keeps its CFS share and is never starved.
WORKER_NICE = 10

#: how long a Python thread may hold the GIL while another waits for it, in serve (Python's
#: default: 5 ms). The API's requests and the worker's projection share one interpreter: a
#: request waits for the GIL at each hand-over between the event loop and its threads, up to
#: the interval each time while the worker runs Python. bench_mlflow against serve (`a`: one
#: log_metric per call; `e`: create_run, log_batch, set_terminated on 4 threads), alternated
#: twice: `a` p50 4.2 / 3.3 -> 3.3 / 3.1 ms, p99 11.2 / 11.7 -> 8.4 / 8.4 ms; `e` 56 / 52 ->
#: 65 / 56 runs/s. Catching up 10 M points (benchmark scenario 9): 882 k / 1,049 k points/s
#: at 5 ms, 981 k / 987 k at 1 ms (within this host's noise).
SWITCH_INTERVAL_S = 0.001


def worker_client(settings: ServerSettings) -> Any:
    """A client for the worker's queries, niced on chDB (`WORKER_NICE`)."""
    client = clickhouse_client(settings)
    if settings.clickhouse_url.startswith("chdb://"):
        client.set_client_setting("os_thread_priority", WORKER_NICE)
    return client


def serve_clients(settings: ServerSettings) -> tuple[Any, Callable[[], Any]]:
    """`serve`'s clients: the worker's (its query threads niced, `WORKER_NICE`) and the API's
    factory (`per_thread_clients`), so no read waits behind a worker query holding a shared
    client or competes with it for the CPU on equal terms."""
    return worker_client(settings), per_thread_clients(settings)


def run_api(settings: ServerSettings, database: str, host: str, port: int) -> None:
    """The query API alone (cluster mode: a ClickHouse server; one HTTP client per thread)."""
    import uvicorn

    if settings.clickhouse_url.startswith("chdb://"):
        raise SystemExit(
            "`runstream api` needs a ClickHouse server URL; with chDB the API "
            "and the worker share one process: use `runstream serve`"
        )
    factory = per_thread_clients(settings)
    from processors.migrate import migrate

    migrate(factory(), database)
    uvicorn.run(build_api(settings, database, factory), host=host, port=port, log_level="info")


def wake_reads_on_commits(app: Any, worker: Any) -> None:
    """The API's reads that wait for their writes to be projected (read-your-writes, the
    MLflow routes) wake on each batch `worker` commits in this process and see the
    positions it reached (`Ticks.publish`), instead of polling the projection position; and
    the worker commits a batch holding what a read waits for without lingering for more
    records (`ProjectionWorker.awaited`)."""
    from query_api.consistency import Ticks

    ticks = app.state.shared.projections.ticks = Ticks()
    processor = worker.processor
    processor.on_done.append(lambda: ticks.publish(processor.sink.database, processor.done))
    worker.awaited = ticks.awaited


def serve(settings: ServerSettings, database: str, host: str, port: int) -> None:
    """One-machine mode: projection worker + API in ONE process over one chDB engine; the
    worker's client is its own, the API's threads have theirs (`per_thread_clients`)."""
    import socket

    import uvicorn

    from processors.archive import EventArchive
    from processors.migrate import migrate
    from processors.telemetry import ChdbCollector, HeapCollector

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    client, api_clients = serve_clients(settings)
    migrate(client, database)  # before the API: it creates its token table in `database`
    app = build_api(settings, database, api_clients)
    worker = make_worker(
        settings,
        client,
        database,
        instance_id=f"serve-{socket.gethostname()}",
        registry=app.state.registry,
        # a small batch's inserts run on two handles side by side (`ClickHouseSink.writers`)
        writers=(worker_client(settings),),
    )
    wake_reads_on_commits(app, worker)
    app.state.registry.register(HeapCollector())
    if settings.clickhouse_url.startswith("chdb://"):
        # a handle of its own: a scrape does not wait behind the worker's inserts
        app.state.registry.register(ChdbCollector(clickhouse_client(settings)))
    from runstream.replay import admin_router

    app.include_router(
        admin_router(
            client,
            settings,
            database,
            lambda: EventArchive(minio_client(settings), settings.s3_bucket),
        )
    )
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    asyncio.run(serve_with_worker(server, worker))


class WorkerDied(RuntimeError):
    """The projection worker of `runstream serve` stopped on an error: serve stops too."""


async def serve_with_worker(server: Any, worker: Any) -> None:
    """Run the API `server` (uvicorn's) and the projection `worker` side by side until the
    server stops (SIGINT/SIGTERM), then stop the worker. If the worker ends on an error
    first, the server is told to exit and `WorkerDied` is raised (the process exits non-zero):
    an API left serving while nothing projects would answer every read from read models
    that no longer move, and every read-your-writes wait would time out."""
    work = asyncio.create_task(worker.run(), name="projection-worker")

    def died(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical(
                "the projection worker stopped on an error; stopping serve",
                exc_info=task.exception(),
            )
            server.should_exit = True

    work.add_done_callback(died)
    try:
        await server.serve()  # returns on SIGINT/SIGTERM (uvicorn's handlers) or should_exit
    finally:
        await worker.stop()
        done, _ = await asyncio.wait({work}, timeout=30)
        if not done:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    error = None if work.cancelled() else work.exception()
    if error is not None:
        raise WorkerDied(f"projection worker: {error!r}") from error
