"""Subprocesses of the reliability tests (chDB allows one data path per process, so whatever
reads a standalone worker's chDB runs in a process of its own).

`python -m tests.reliability._procs produce …` logs through the real SDK until a stop file
appears, ends its run and prints what it logged (JSON). `positions` and `dump` read a
stopped worker's chDB directory and print JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = str(Path(__file__).resolve().parents[2])
KEYS = ("loss", "acc")


def value(key: str, rank: int, step: int) -> float:
    """Multiples of 1/4: float sums are exact in any order."""
    if key == "loss":
        return (rank * 100_000 + step) / 4
    return ((step * 7 + rank * 13) % 1000) / 4


def produce(a: argparse.Namespace) -> dict[str, Any]:
    import producers
    from producers.config import ClientConfig

    cfg = ClientConfig(
        kafka_bootstrap=a.bootstrap, topic=a.topic, spool_dir=a.spool_dir, mode="kafka"
    )
    owner = a.rank == 0
    tags: dict[str, str] = {"team": "rel"} if owner else {}
    params: dict[str, str] = {"lr": "0.25", "owner": a.run_id} if owner else {}
    run = producers.start_run(
        "reliability",
        run_id=a.run_id,
        rank=a.rank,
        world_size=a.world_size,
        join=not owner,
        tags=dict(tags) if owner else None,
        params=dict(params) if owner else None,
        config=cfg,
        capture_code=False,
        capture_environment=False,
    )
    if owner:
        run.set_notes(f"notes of {a.run_id}")
    stop = Path(a.stop_file)
    step = 0
    deadline = time.monotonic() + a.max_seconds
    while not stop.exists() and time.monotonic() < deadline:
        run.log_metrics({k: value(k, a.rank, step) for k in KEYS}, step=step)
        if step % 40 == 0:
            tags[f"phase-{a.rank}"] = str(step // 40)
            run.set_tag(f"phase-{a.rank}", tags[f"phase-{a.rank}"])
        if step % 60 == 30:
            run.set_tag(f"tmp-{a.rank}", "x")
            run.remove_tag(f"tmp-{a.rank}")
        if step % 100 == 50:
            params[f"p{a.rank}-{step}"] = str(step)
            run.log_param(f"p{a.rank}-{step}", str(step))
        step += 1
        time.sleep(a.interval)
    if not run.end(timeout=60):
        raise SystemExit("events not delivered within 60 s")
    return {
        "run_id": a.run_id,
        "rank": a.rank,
        "producer_id": run.engine.producer_id,
        "steps": step,
        "tags": tags,
        "params": params,
        "owner": owner,
    }


def _client(chdb_path: str) -> Any:
    from processors.cli import clickhouse_client

    return clickhouse_client(chdb_path=chdb_path)


def positions(a: argparse.Namespace) -> dict[str, Any]:
    from processors.sink import ClickHouseSink

    pos = ClickHouseSink(_client(a.chdb_path), a.database).positions(a.topic)
    return {str(p): [r.offset, r.redo_last] for p, r in pos.items()}


def dump(a: argparse.Namespace) -> dict[str, Any]:
    """What the crash test compares with the producers' reports."""
    c, db = _client(a.chdb_path), a.database

    def rows(sql: str) -> list[list[Any]]:
        return [list(r) for r in c.query(sql.replace("{db}", db)).result_rows]

    return {
        "points": rows(
            "SELECT run_id, key, split, step, producer_id, value, count() FROM {db}.metric_points"
            " GROUP BY run_id, key, split, step, producer_id, value"
        ),
        "point_rows": rows("SELECT count() FROM {db}.metric_points")[0][0],
        "last_candidates": rows(
            "SELECT run_id, key, groupArray(value) FROM {db}.metric_points FINAL"
            " WHERE (run_id, key, step, timestamp) IN (SELECT run_id, key, max(step),"
            " argMax(timestamp, (step, timestamp)) FROM {db}.metric_points FINAL"
            " GROUP BY run_id, key) GROUP BY run_id, key"
        ),
        "summary": rows(
            "SELECT run_id, key, sum(count), min(min_value), max(max_value),"
            " tupleElement(max(last), 1), tupleElement(max(last), 5), sum(sum_value)"
            " FROM {db}.metric_summary GROUP BY run_id, key"
        ),
        "runs": rows("SELECT run_id, status, notes, deleted FROM {db}.runs FINAL"),
        "params": rows("SELECT run_id, key, value, count() FROM {db}.params GROUP BY ALL"),
        "tags": rows("SELECT run_id, key, value FROM {db}.tags FINAL WHERE deleted = 0"),
        "producers": rows(
            "SELECT run_id, producer_id, status FROM {db}.producer_versions"
            " ORDER BY version DESC LIMIT 1 BY run_id, producer_id"
        ),
        "events": rows("SELECT event_id, count() FROM {db}.events GROUP BY event_id"),
        "rejected": rows("SELECT reason, count() FROM {db}.rejected_events GROUP BY reason"),
    }


def run_json(argv: list[str], timeout: float = 120.0) -> Any:
    """Run `python -m tests.reliability._procs ARGV…` and parse its JSON output."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.reliability._procs", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
    return json.loads(out.stdout)


async def start_producer(
    bootstrap: str, topic: str, spool_dir: Path, stop_file: Path, run_id: str, rank: int, world: int
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.reliability._procs",
        "produce",
        bootstrap,
        topic,
        "--spool-dir",
        str(spool_dir),
        "--stop-file",
        str(stop_file),
        "--run-id",
        run_id,
        "--rank",
        str(rank),
        "--world-size",
        str(world),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        env=sdk_env(spool_dir),
    )


def sdk_env(home: Path) -> dict[str, str]:
    """This environment without RUNSTREAM_* / rank variables, RUNSTREAM_HOME = `home`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUNSTREAM_") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    env["RUNSTREAM_HOME"] = str(home)
    return env


async def finish_producers(procs: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
    """Wait for the producers (after their stop file was created); their reports."""
    try:
        outs = [(await p.communicate())[0] for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    for p in procs:
        if p.returncode != 0:
            raise RuntimeError(f"producer exited with {p.returncode}")
    return [json.loads(o) for o in outs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.reliability._procs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("--spool-dir", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--max-seconds", type=float, default=400.0)
    for name in ("positions", "dump"):
        q = sub.add_parser(name)
        q.add_argument("--chdb-path", required=True)
        q.add_argument("--database", required=True)
        q.add_argument("--topic", default="")
    a = ap.parse_args(argv)
    handler = {"produce": produce, "positions": positions, "dump": dump}[a.cmd]
    sys.stdout.write(json.dumps(handler(a)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
