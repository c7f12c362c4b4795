"""Helpers of the stack tests: producer processes, end offsets, waiting for the projection."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.structs import TopicPartition

from processors.replay import end_offsets
from processors.sink import ClickHouseSink
from tests.processors.documents import documents, from_document

REPO_ROOT = __file__.rsplit("/tests/", 1)[0]


def is_write(name: str, args: tuple[Any, ...]) -> bool:
    """Whether a client call writes: `insert`, `insert_arrow`, or an INSERT statement run
    by `command` (the sink writes its position rows that way)."""
    if name in ("insert", "insert_arrow"):
        return True
    return name == "command" and bool(args) and str(args[0]).lstrip().upper().startswith("INSERT")


class FailingClient:
    """Every 3rd write raises, 8 times (outages in the middle of batches)."""

    def __init__(self, client: Any) -> None:
        self._client, self.calls, self.failed = client, 0, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in ("insert", "insert_arrow", "command"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if not is_write(name, args):
                return attr(*args, **kwargs)
            self.calls += 1
            if self.calls % 3 == 0 and self.failed < 8:
                self.failed += 1
                raise ConnectionError("injected sink failure")
            return attr(*args, **kwargs)

        return call


async def run_producers(
    bootstrap: str,
    topic: str,
    producers: int,
    runs: list[str],
    events: int,
    points: int,
    resend_every: int = 0,
    rate_events: float = 0.0,
) -> dict[str, Any]:
    """Start `producers` producer processes at once; merge what they report."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.processors.produce",
            bootstrap,
            topic,
            "--producer",
            str(i),
            "--runs",
            ",".join(runs),
            "--events",
            str(events),
            "--points",
            str(points),
            "--resend-every",
            str(resend_every),
            "--rate-events",
            str(rate_events),
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(producers)
    ]
    total: dict[str, Any] = {"points": 0, "sums": {}, "counts": {}, "messages": 0}
    try:
        outs = [(await p.communicate())[0] for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    for p, out in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"producer exited with {p.returncode}")
        got = json.loads(out)
        total["points"] += got["points"]
        total["messages"] += got["messages"]
        for k, v in got["sums"].items():
            total["sums"][k] = total["sums"].get(k, 0.0) + v
        for k, v in got["counts"].items():
            total["counts"][k] = total["counts"].get(k, 0) + v
    return total


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets on `topic` ({} before the group exists)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offs = await admin.list_consumer_group_offsets(group)
        return {
            tp.partition: m.offset
            for tp, m in offs.items()
            if isinstance(tp, TopicPartition) and tp.topic == topic
        }
    except GroupCoordinatorNotAvailableError:
        return {}  # the group does not exist yet
    finally:
        await admin.close()


async def wait_projected(
    client: Any, database: str, bootstrap: str, topic: str, timeout: float = 90.0
) -> None:
    """Until the positions stored in `database` reach the topic's end offsets."""
    ends = await end_offsets(bootstrap, topic)
    sink = ClickHouseSink(client, database)
    deadline = time.monotonic() + timeout
    while True:
        pos = await asyncio.to_thread(sink.positions, topic)
        behind = {
            p: e
            for p, e in ends.items()
            if e > 0 and (p not in pos or pos[p].offset < e or pos[p].redo_last is not None)
        }
        if not behind:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not projected after {timeout}s: ends {ends}, positions {pos}")
        await asyncio.sleep(0.2)


def check_points(client: Any, database: str, expect: dict[str, Any]) -> None:
    """Counts and exact value sums per run/key, with and without FINAL."""
    db = database
    for final in ("", " FINAL"):
        rows = client.query(
            f"SELECT run_id, key, count(), sum(value) FROM {db}.metric_points"
            f"{final} GROUP BY run_id, key"
        ).result_rows
        got = {f"{r}/{k}": (int(n), float(s)) for r, k, n, s in rows}
        want = {k: (expect["counts"][k], expect["sums"][k]) for k in expect["counts"]}
        assert got == want, f"metric_points{final}: " + _explain(client, db, got, want)
    rows = client.query(
        f"SELECT run_id, key, sum(count), sum(sum_value) FROM {db}.metric_summary"
        " GROUP BY run_id, key"
    ).result_rows
    got = {f"{r}/{k}": (int(n), float(s)) for r, k, n, s in rows}
    want = {k: (expect["counts"][k], expect["sums"][k]) for k in expect["counts"]}
    assert got == want, "metric_summary: " + _explain(client, db, got, want)


def _explain(client: Any, db: str, got: dict[str, Any], want: dict[str, Any]) -> str:
    """What differs (got vs want per run/key) and every position row of the projection
    (raw, unmerged ones included): overlapping batch ranges show a double write."""
    diff = {k: (got.get(k), want.get(k)) for k in sorted(got.keys() | want.keys())}
    diff = {k: v for k, v in diff.items() if v[0] != v[1]}
    rows = client.query(
        "SELECT topic, log_partition, first_offset, last_offset, state, events, updated_at"
        f" FROM {db}.projection_position ORDER BY topic, log_partition, first_offset, state"
    ).result_rows
    positions = "\n".join(" ".join(str(c) for c in r) for r in rows)
    return f"differs {diff}\npositions (topic partition first last state events at):\n{positions}"


def stale_pages(client: Any, database: str) -> list[tuple[str, str, str]]:
    """The runs a search would not read from a `run_page` search document that shows what
    `run_search` gives now (migration 0003): none at the run's `touches`, or one that reads
    back otherwise than the document the view `run_page_source` makes (documents are
    compared as the API reads them: a new run's document is written by the processors, not
    by the view, and spells numbers its own way)."""
    current = {
        (p, e, r): (int(t), doc)
        for p, e, r, t, doc in client.query(
            f"SELECT project, experiment_id, run_id, touches, doc FROM {database}.run_page_source"
        ).result_rows
    }
    held = documents(client, database)
    stale = []
    for key, (touches, doc) in current.items():
        same = [d for t, d in held.get(key, []) if t == touches]
        want = from_document(key, doc)
        if not same or any(from_document(key, d) != want for d in same):
            stale.append(key)
    return sorted(stale)


async def wait_pages(client: Any, database: str, timeout: float = 10.0) -> None:
    """Until every run's search document is fresh (the worker refreshes them when idle)."""
    deadline = time.monotonic() + timeout
    while stale := await asyncio.to_thread(stale_pages, client, database):
        if time.monotonic() > deadline:
            raise TimeoutError(f"stale search documents after {timeout}s: {stale[:5]}")
        await asyncio.sleep(0.1)
