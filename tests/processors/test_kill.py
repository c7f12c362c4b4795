"""SIGKILL the standalone worker again and again while events flow: the read models still
equal the log (no duplicate, no gap). The worker subprocess owns its chDB path; a fresh
`--verify` subprocess reads it afterwards (this process holds the session's chDB)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from runstream.stack import Connection, LocalStack
from runstream.stack.kafka import create_topics

from .stackutil import REPO_ROOT, end_offsets, run_producers
from .stackutil import committed_offsets as _committed

pytestmark = [pytest.mark.stack, pytest.mark.slow]
KILLS = 10


def _worker_argv(conn: Connection, topic: str, group: str, chdb: Path, db: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "processors.worker",
        "--bootstrap",
        conn.kafka_bootstrap,
        "--topic",
        topic,
        "--dlq-topic",
        topic + ".dlq",
        "--group",
        group,
        "--instance-id",
        "kill-test-worker",
        "--database",
        db,
        "--chdb-path",
        str(chdb),
        "--batch-size",
        "3000",
        "--batch-timeout",
        "0.1",
        # position rows pruned all along (the default waits a minute): kills land mid-prune
        "--position-prune-interval",
        "0.5",
        "--positions-kept",
        "5",
        "--metrics-port",
        str(_free_port()),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(argv: list[str]) -> dict[str, float]:
    """The worker's /metrics: sample name with labels -> value."""
    port = argv[argv.index("--metrics-port") + 1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _lag(ends: dict[int, int], committed: dict[int, int]) -> int:
    return sum(max(0, e - committed.get(p, 0)) for p, e in ends.items())


def test_sigkill_while_events_flow_loses_and_duplicates_nothing(
    stack: LocalStack, connection: Connection, kafka_topic: str
) -> None:
    boot = connection.kafka_bootstrap
    create_topics(boot, {kafka_topic + ".dlq": 1})
    group, db = f"kill-{uuid.uuid4().hex[:8]}", "killtest"
    chdb = stack.dir / f"kill-chdb-{uuid.uuid4().hex[:8]}"  # removed with the stack
    log = open(stack.dir / f"{group}.log", "wb")  # noqa: SIM115 - closed in finally
    argv = _worker_argv(connection, kafka_topic, group, chdb, db)
    rng = random.Random(7)
    kills: list[int] = []
    rss: list[float] = []
    restarts: list[float] = []

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=log)

    async def scenario() -> dict[str, Any]:
        producing = asyncio.create_task(
            run_producers(
                boot,
                kafka_topic,
                2,
                [f"run-{i}" for i in range(4)],
                events=90,
                points=2000,
                resend_every=11,
                rate_events=8.0,
            )
        )
        worker = spawn()
        try:
            while len(kills) < KILLS:
                if producing.done():
                    raise AssertionError(f"producers finished after only {len(kills)} kills")
                before = await _committed(boot, group, kafka_topic)
                started = time.monotonic()
                deadline = started + 30
                while sum((await _committed(boot, group, kafka_topic)).values()) <= sum(
                    before.values()
                ):  # the restarted worker is projecting
                    assert time.monotonic() < deadline, "worker made no progress"
                    assert worker.poll() is None, "worker died on its own"
                    await asyncio.sleep(0.1)
                restarts.append(time.monotonic() - started)
                await asyncio.sleep(rng.uniform(0.0, 0.6))
                lag = _lag(
                    await end_offsets(boot, kafka_topic), await _committed(boot, group, kafka_topic)
                )
                if lag == 0:
                    continue
                rss.append(_peak_rss_mb(worker.pid))
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                kills.append(lag)
                worker = spawn()
            expect = await producing
            deadline = time.monotonic() + 120
            while (
                _lag(
                    await end_offsets(boot, kafka_topic), await _committed(boot, group, kafka_topic)
                )
                > 0
            ):
                assert time.monotonic() < deadline, "worker did not catch up"
                await asyncio.sleep(0.2)
            # its /metrics agree: lag 0 on every partition once it has caught up
            while True:
                scraped = _scrape(argv)
                lags = [v for k, v in scraped.items() if k.startswith("runstream_processor_lag{")]
                if lags and max(lags) == 0:
                    break
                assert time.monotonic() < deadline, f"lag gauges {lags}"
                await asyncio.sleep(0.2)
            assert scraped["runstream_chdb_memory_tracked_bytes"] > 0
            assert scraped["process_resident_memory_bytes"] > 0
            return expect
        finally:
            producing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producing
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=30)

    try:
        expect = asyncio.run(scenario())
        out = subprocess.run(
            [*argv, "--verify"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=120
        )
    finally:
        log.close()
    report = json.loads(out.stdout)
    print(
        f"kills={len(kills)} lag at kill={kills} start->progress s="
        f"{[round(r, 1) for r in restarts]} worker peak RSS MB={max(rss):.0f}"
    )
    assert max(rss) < 1024
    assert len(kills) >= KILLS
    assert all(lag > 0 for lag in kills)
    want = {k: [expect["counts"][k], expect["sums"][k]] for k in expect["counts"]}
    assert report["points"]["final"] == want
    assert report["points"]["raw"] == want  # no duplicate even without FINAL
    assert report["summary_mismatches"] == []  # no batch counted twice in metric_summary
    assert report["rollup_mismatches"] == []  # nor lost or doubled in metric_rollup
    for table, d in report["digest"].items():
        if "raw_count" in d:
            assert d["raw_count"] == d["count"], table
    assert report["digest"]["events"]["count"] == expect["messages"]
    pruned = re.findall(rb"dropped (\d+) position rows", (stack.dir / f"{group}.log").read_bytes())
    assert pruned, "the worker never pruned its position rows"
    shutil.rmtree(chdb, ignore_errors=True)
