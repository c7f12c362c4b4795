"""Load: many writer processes log concurrently for a while; nothing is lost, nobody errs,
memory stays bounded, the training loop is not slowed. Prints the throughput.

CI size: 16 writers x 60 s (4 runs, 4 ranks each). Full size (manual, ~15 min):

    RUNSTREAM_LOAD_WRITERS=64 RUNSTREAM_LOAD_SECONDS=600 \\
        .venv/bin/python -m pytest tests/reliability/test_load.py -s

Writers log 8 keys per step with a 1 ms "training step" between steps (~8,000 points/s per
writer at most), params and tags on the way, through the real SDK into the session's Kafka;
a projection worker runs beside them into chDB.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import resource
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runstream.stack import Connection
from tests.query_api.live import WorkerThread

from ._load_writer import KEYS, write

pytestmark = [pytest.mark.stack, pytest.mark.slow]

WRITERS = int(os.environ.get("RUNSTREAM_LOAD_WRITERS", "16"))
SECONDS = float(os.environ.get("RUNSTREAM_LOAD_SECONDS", "60"))
RANKS_PER_RUN = 4
WRITER_RSS_MB = 200  # a writer process (Python + SDK): bounded whatever the duration
WORKER_GROWTH_MB = 1500  # the projection worker (this process, chDB included)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_many_writers_log_concurrently_nothing_lost(
    connection: Connection,
    kafka_topic: str,
    ch_database: str,
    chdb_client: Any,
    tmp_path: Path,
) -> None:
    from processors import ProjectionWorker, WorkerSettings
    from processors.migrate import migrate

    migrate(chdb_client, ch_database)
    rss0 = _rss_mb()
    worker = WorkerThread(
        ProjectionWorker(
            chdb_client,
            bootstrap=connection.kafka_bootstrap,
            database=ch_database,
            topic=kafka_topic,
            dlq_topic=f"{kafka_topic}.dlq",
            settings=WorkerSettings(group_id=f"g-{ch_database}"),
        )
    ).start()
    cfg = {
        "kafka_bootstrap": connection.kafka_bootstrap,
        "s3_endpoint": connection.s3_endpoint,
        "s3_access_key": connection.s3_access_key,
        "s3_secret_key": connection.s3_secret_key,
        "s3_bucket": connection.s3_bucket,
        "topic": kafka_topic,
        "spool_dir": str(tmp_path / "spool"),
    }
    tag = uuid.uuid4().hex[:8]
    runs = [f"load-{tag}-{i}" for i in range((WRITERS + RANKS_PER_RUN - 1) // RANKS_PER_RUN)]
    peak_worker = rss0
    t0 = time.monotonic()
    try:
        with cf.ProcessPoolExecutor(WRITERS, mp_context=mp.get_context("spawn")) as pool:
            futs = [
                pool.submit(
                    write,
                    cfg,
                    runs[w // RANKS_PER_RUN],
                    w % RANKS_PER_RUN,
                    RANKS_PER_RUN,
                    SECONDS,
                    0.001,
                )
                for w in range(WRITERS)
            ]
            while not all(f.done() for f in futs):
                peak_worker = max(peak_worker, _rss_mb())
                time.sleep(0.5)
            results = [f.result() for f in futs]  # a writer's exception fails the test here
        t_logged = time.monotonic() - t0
        expected = {(r["run_id"], r["producer_id"]): r["points"] for r in results}
        total = sum(expected.values())
        deadline = time.monotonic() + 300
        stored = 0
        while time.monotonic() < deadline:
            peak_worker = max(peak_worker, _rss_mb())
            stored = chdb_client.query(
                f"SELECT count() FROM {ch_database}.metric_points"
            ).result_rows[0][0]
            if stored >= total:
                break
            time.sleep(0.5)
        t_visible = time.monotonic() - t0
    finally:
        worker.stop()

    assert all(r["delivered"] for r in results), [r for r in results if not r["delivered"]]
    got = {
        (run, producer): n
        for run, producer, n in chdb_client.query(
            f"SELECT run_id, producer_id, count() FROM {ch_database}.metric_points"
            " GROUP BY run_id, producer_id"
        ).result_rows
    }
    assert got == expected, "points per (run, rank) differ from what the writers logged"
    dupes = chdb_client.query(
        f"SELECT count() - uniqExact(run_id, key, step, producer_id) FROM"
        f" {ch_database}.metric_points"
    ).result_rows[0][0]
    assert dupes == 0
    summary = dict(
        chdb_client.query(
            f"SELECT run_id, sum(count) FROM {ch_database}.metric_summary GROUP BY run_id"
        ).result_rows
    )
    per_run: dict[str, int] = {}
    for (run, _), n in expected.items():
        per_run[run] = per_run.get(run, 0) + n
    assert summary == per_run
    status = dict(
        chdb_client.query(
            f"SELECT run_id, status FROM {ch_database}.runs FINAL WHERE run_id IN %(r)s",
            parameters={"r": runs},
        ).result_rows
    )
    assert status == dict.fromkeys(runs, "FINISHED")
    keys = chdb_client.query(
        f"SELECT groupUniqArray(key) FROM {ch_database}.metric_points"
    ).result_rows[0][0]
    assert sorted(keys) == sorted(KEYS)

    worst_rss = max(r["peak_rss_mb"] for r in results)
    p99 = sorted(r["call_p99_us"] for r in results)[len(results) // 2]
    print(
        f"\nload: {WRITERS} writers x {SECONDS:.0f}s: {total:,} points logged in {t_logged:.1f}s"
        f" ({total / t_logged:,.0f} pts/s), all queryable after {t_visible:.1f}s"
        f" ({total / t_visible:,.0f} pts/s end to end); log_metrics(8 keys) p50"
        f" {sorted(r['call_p50_us'] for r in results)[len(results) // 2]:.1f} us,"
        f" median writer p99 {p99:.1f} us, worst call"
        f" {max(r['call_max_ms'] for r in results):.1f} ms; writer peak RSS {worst_rss:.0f} MB;"
        f" worker process RSS {rss0:.0f} -> peak {peak_worker:.0f} MB"
        f" (maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
    )
    assert worst_rss < WRITER_RSS_MB
    assert peak_worker - rss0 < WORKER_GROWTH_MB
    # the training loop is not slowed: the median writer's 99th percentile call stays small
    # even with 16 processes on 2 cores (a blocking send would show as 10-100 ms here)
    assert p99 < 5_000
