"""Projection throughput (points/s) and RSS of the processors on this machine.

    .venv/bin/python benchmarks/bench_processors.py [--points 2000000] [--per-event 2000]

Stages, each timed on the same encoded MetricsLogged events (built with `schemas`):
decode (`schemas.decode_record`), project (pure, columnar), end-to-end (decode + state load
+ project + chDB insert of every table with dedup tokens + positions, i.e.
`BatchProcessor.prepare` + `commit`, the worker's per-batch path minus Kafka). chDB runs in
this process under a temporary directory with the worker's memory caps. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError

import schemas

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import profiling  # noqa: E402
from processors.cli import CHDB_SETTINGS  # noqa: E402
from processors.codec import decode  # noqa: E402
from processors.migrate import migrate  # noqa: E402
from processors.model import SourceEvent  # noqa: E402
from processors.pipeline import BatchProcessor  # noqa: E402
from processors.projection import project_batch  # noqa: E402
from processors.sink import ClickHouseSink  # noqa: E402
from processors.state import PartitionState  # noqa: E402

KEYS = ["loss", "acc", "lr", "grad_norm", "gpu_util", "mem"]


def events(total: int, per_event: int, runs: int = 8) -> list[SourceEvent]:
    rng = np.random.default_rng(0)
    out = []
    per_key = per_event // len(KEYS)
    n = per_key * len(KEYS)
    for i in range(total // n):
        run = f"run-{i % runs}"
        step0 = (i // runs) * per_key
        rec = {
            "envelope": {
                "event_id": schemas.ids.new_event_id(),
                "experiment_id": "e",
                "producer_id": "rank-0",
                "seq": i,
                "occurred_at": 1_700_000_000_000,
                "project": "bench",
                "run_id": run,
                "user": None,
            },
            **schemas.pack_points(
                [KEYS[k] for k in np.tile(np.arange(len(KEYS)), per_key)],
                rng.random(n),
                np.repeat(np.arange(step0, step0 + per_key, dtype=np.int64), len(KEYS)),
                timestamps=np.full(n, 1_700_000_000_000, dtype=np.int64),
                splits="train",
            ),
        }
        out.append(
            SourceEvent("bench", 0, i, 0, run.encode(), schemas.encode_record("MetricsLogged", rec))
        )
    return out


async def worker_catch_up(
    bootstrap: str,
    srcs: list[SourceEvent],
    tmp: str,
    batch_mb: int = 16,
    profile: Path | None = None,
    fetch_mb: float | None = None,
) -> dict[str, float]:
    """Produce everything first, then run `python -m processors.worker` (its own chDB, the
    production entry point) until its committed offsets reach the end; read its peak RSS."""
    topic = f"bench.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()
    prod = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_request_size=8 << 20
    )
    await prod.start()
    try:
        futs = [await prod.send(topic, s.value, key=s.key) for s in srcs]
        await asyncio.gather(*futs)
    finally:
        await prod.stop()
    per_msg = int(decode(srcs[0]).record["count"])
    argv = [
        sys.executable,
        "-m",
        "processors.worker",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--dlq-topic",
        topic,
        "--group",
        topic,
        "--database",
        "bench",
        "--chdb-path",
        f"{tmp}/worker-chdb",
        "--batch-max-mb",
        str(batch_mb),
        *([] if fetch_mb is None else ["--max-partition-fetch-mb", str(fetch_mb)]),
    ]
    if profile is not None:
        argv = profiling.profiled(argv, profile / "worker.raw")
    t = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.DEVNULL)
    first: tuple[float, int] | None = None
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while True:
            await asyncio.sleep(0.2)
            done = await _committed(admin, topic)
            if first is None and done:
                first = (time.perf_counter(), done)
            if done >= len(srcs):
                break
            if proc.poll() is not None:
                raise SystemExit(f"worker exited with {proc.returncode}")
        end = time.perf_counter()
        status = Path(f"/proc/{_python_pid(proc.pid)}/status").read_text()
        hwm = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM"))
    finally:
        await admin.close()
        proc.send_signal(signal.SIGINT if profile is not None else signal.SIGTERM)
        proc.wait(timeout=60)
    assert first is not None
    out = replay_catch_up(bootstrap, topic, tmp, len(srcs), per_msg, profile)
    return {
        **out,
        "worker_start_to_first_batch_s": first[0] - t,
        "worker_points_per_s_incl_start": len(srcs) * per_msg / (end - t),
        "worker_points_per_s_steady": (len(srcs) - first[1]) * per_msg / (end - first[0]),
        "worker_peak_rss_mb": hwm / 1024,
    }


def _python_pid(pid: int) -> int:
    """The Python process: `pid` itself, or its child when py-spy runs it."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids and "py-spy" in Path(f"/proc/{pid}/cmdline").read_text() else pid


def replay_catch_up(
    bootstrap: str, topic: str, tmp: str, events: int, per_msg: int, profile: Path | None
) -> dict[str, float]:
    """Rebuild every read model of the worker's database from the topic (offset 0) into a new
    table set, as `runstream replay` does, in a subprocess that owns the worker's chDB."""
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--replay-child",
        f"{tmp}/worker-chdb",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
    ]
    if profile is not None:
        argv = profiling.profiled(argv, profile / "replay.raw")
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"replay failed: {done.stderr[-2000:]}")
    got = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
    if got["events"] != events:
        raise SystemExit(f"replay projected {got['events']} events, expected {events}")
    return {
        "replay_seconds": got["seconds"],
        "replay_events_per_s": events / got["seconds"],
        "replay_points_per_s": events * per_msg / got["seconds"],
    }


def replay_child(chdb: str, bootstrap: str, topic: str) -> int:
    import clickhouse_connect

    from processors.cli import CHDB_OPTIONS
    from processors.replay import replay

    client = clickhouse_connect.get_client(
        dsn=f"chdb://{chdb}", settings=CHDB_SETTINGS, chdb_options=CHDB_OPTIONS
    )
    t = time.perf_counter()
    res = replay(client, database="bench", bootstrap=bootstrap, topic=topic)
    sys.stdout.write(
        json.dumps({"seconds": time.perf_counter() - t, "events": res.events, "db": res.database})
        + "\n"
    )
    return 0 if res.completed else 1


async def _committed(admin: AIOKafkaAdminClient, group: str) -> int:
    try:
        offs = await admin.list_consumer_group_offsets(group)
    except GroupCoordinatorNotAvailableError:
        return 0
    return sum(m.offset for m in offs.values() if m.offset > 0)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=2_000_000)
    ap.add_argument("--per-event", type=int, default=2000)
    ap.add_argument("--batch-events", type=int, default=100)
    ap.add_argument(
        "--bootstrap",
        default=None,
        help="also time `python -m processors.worker` catching up on a fresh 4-partition "
        "topic (needs Kafka, e.g. from `runstream up`)",
    )
    ap.add_argument("--worker-batch-mb", type=int, default=16)
    ap.add_argument("--worker-fetch-mb", type=float, default=None)
    ap.add_argument("--topic", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--replay-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="directory: run the worker and the replay under py-spy and print where the time "
        "goes per stage (needs --bootstrap)",
    )
    a = ap.parse_args()
    if a.replay_child:
        return replay_child(a.replay_child, a.bootstrap, a.topic)
    import clickhouse_connect

    srcs = events(a.points, a.per_event)
    points = sum(decode(s).record["count"] for s in srcs)
    res: dict[str, float | int] = {
        "points": points,
        "events": len(srcs),
        "points_per_event": points // len(srcs),
    }

    t = time.perf_counter()
    decoded = [decode(s) for s in srcs]
    res["decode_points_per_s"] = points / (time.perf_counter() - t)

    t = time.perf_counter()
    for i in range(0, len(decoded), a.batch_events):
        project_batch(decoded[i : i + a.batch_events], PartitionState(0))
    res["project_points_per_s"] = points / (time.perf_counter() - t)
    del decoded  # keep only the encoded messages, as a worker would
    res["rss_before_chdb_mb"] = rss_mb()

    with tempfile.TemporaryDirectory() as tmp:
        client = clickhouse_connect.get_client(dsn=f"chdb://{tmp}/chdb", settings=CHDB_SETTINGS)
        migrate(client, "bench")
        proc = BatchProcessor(ClickHouseSink(client, "bench"))

        async def run() -> None:
            for i in range(0, len(srcs), a.batch_events):
                batch = proc.prepare("bench", 0, srcs[i : i + a.batch_events])
                if batch is not None:
                    await proc.commit(batch)

        t = time.perf_counter()
        asyncio.run(run())
        res["end_to_end_points_per_s"] = points / (time.perf_counter() - t)
        stored = client.query("SELECT count() FROM bench.metric_points").result_rows[0][0]
        if stored != points:
            raise SystemExit(f"stored {stored} points, expected {points}")
        res["rss_peak_mb"] = rss_mb()
        if a.bootstrap:
            if a.profile is not None:
                a.profile.mkdir(parents=True, exist_ok=True)
            res.update(
                asyncio.run(
                    worker_catch_up(
                        a.bootstrap, srcs, tmp, a.worker_batch_mb, a.profile, a.worker_fetch_mb
                    )
                )
            )
    for k, v in res.items():
        sys.stderr.write(f"{k:>32}: {v:,.2f}\n")
    if a.profile is not None and a.bootstrap:
        for name in ("worker", "replay"):
            raw = a.profile / f"{name}.raw"
            if raw.exists():
                text = profiling.render(profiling.summarize(raw.read_text()), name)
                (a.profile / f"{name}.txt").write_text(text + "\n")
                sys.stderr.write(text + "\n")
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
