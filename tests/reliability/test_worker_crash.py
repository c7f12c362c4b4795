"""SIGKILL the standalone worker at random moments while 8 SDK producer processes log (one run
shared by four ranks, four runs of their own; metrics, params, tags, notes, status). Every
kill lands while the stored position is behind the log's end; after the last restart the
read models equal what the producers report having logged, exactly.

Also: a zombie worker (event loop frozen past its session timeout) that resumes its commit
after the new owner wrote: fenced whether the pause precedes the commit's owner check or
falls between that check and an insert (every write re-checks ownership after a gap longer
than the lease), and nothing it held is written twice."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import schemas
from processors import ProjectionWorker, WorkerSettings
from processors.migrate import migrate
from processors.pipeline import PreparedBatch
from runstream.stack import Connection, LocalStack
from runstream.stack.kafka import create_topics
from tests.processors.factory import Writer, encode, key_of
from tests.processors.stackutil import REPO_ROOT, committed_offsets, end_offsets, wait_projected

from ._procs import KEYS, finish_producers, run_json, start_producer, value

pytestmark = [pytest.mark.stack, pytest.mark.slow]
KILLS = 20


def _worker_argv(boot: str, topic: str, group: str, chdb: Path, db: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "processors.worker",
        "--bootstrap",
        boot,
        "--topic",
        topic,
        "--dlq-topic",
        topic + ".dlq",
        "--group",
        group,
        "--instance-id",
        "crash-test-worker",
        "--database",
        db,
        "--chdb-path",
        str(chdb),
        "--batch-size",
        "1000",
        "--batch-timeout",
        "0.1",
    ]


def _behind(ends: dict[int, int], pos: dict[str, list[int | None]]) -> int:
    """Records between the stored position (a pending intent counts as not done) and `ends`."""
    total = 0
    for p, end in ends.items():
        offset = pos.get(str(p), [0, None])[0] or 0
        total += max(0, end - offset)
    return total


async def _event_ids(boot: str, topic: str, ends: dict[int, int]) -> Counter[str]:
    """event_id of every record of `topic` (all decodable: the SDK wrote them)."""
    c = AIOKafkaConsumer(
        topic, bootstrap_servers=boot, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await c.start()
    got: Counter[str] = Counter()
    n, want = 0, sum(ends.values())
    deadline = time.monotonic() + 60
    try:
        while n < want:
            assert time.monotonic() < deadline, f"read {n} of {want} records back"
            for msgs in (await c.getmany(timeout_ms=1000, max_records=5000)).values():
                for m in msgs:
                    n += 1
                    got[schemas.decode_record(m.value)[1]["envelope"]["event_id"]] += 1
    finally:
        await c.stop()
    return got


def _expected(reports: list[dict[str, Any]]) -> dict[str, Any]:
    points: Counter[tuple[str, str, str, int, str, float]] = Counter()
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    for r in reports:
        for key in KEYS:
            values = [value(key, r["rank"], s) for s in range(r["steps"])]
            for s, v in enumerate(values):
                points[(r["run_id"], key, "", s, r["producer_id"], v)] += 1
            if not values:
                continue
            e = summary.setdefault(
                (r["run_id"], key),
                {"count": 0, "min": values[0], "max": values[0], "sum": 0.0, "step": -1},
            )
            e["count"] += len(values)
            e["sum"] += sum(values)
            e["min"], e["max"] = min(e["min"], *values), max(e["max"], *values)
            last = r["steps"] - 1
            if last > e["step"]:
                e["step"], e["last"] = last, {values[-1]}
            elif last == e["step"]:
                e["last"].add(values[-1])
    runs = {r["run_id"] for r in reports}
    params = {(r["run_id"], k, v) for r in reports for k, v in r["params"].items()}
    tags = {(r["run_id"], k, v) for r in reports for k, v in r["tags"].items()}
    return {"points": points, "summary": summary, "runs": runs, "params": params, "tags": tags}


def test_sigkill_at_random_moments_read_models_equal_the_log(
    stack: LocalStack, connection: Connection, kafka_topic: str, tmp_path: Path
) -> None:
    boot = connection.kafka_bootstrap
    create_topics(boot, {kafka_topic + ".dlq": 1})
    tag = uuid.uuid4().hex[:8]
    group, db = f"crash-{tag}", "crashtest"
    chdb = stack.dir / f"crash-chdb-{tag}"  # under the stack dir: removed with it
    log = open(stack.dir / f"{group}.log", "wb")  # noqa: SIM115 - closed in finally
    argv = _worker_argv(boot, kafka_topic, group, chdb, db)
    stop_file = tmp_path / "stop"
    shared = str(uuid.uuid4())
    solo = [str(uuid.uuid4()) for _ in range(4)]
    rng = random.Random(11)
    kills: list[tuple[int, int, bool]] = []  # (kafka lag, stored lag, early) per kill
    #: kills that found everything projected: the worker wrote the records the lag read saw
    #: between that read and the signal (it writes ~20 ms after records arrive). Still
    #: crashes, but not counted: every counted kill landed with records left to project.
    caught_up: list[tuple[int, bool]] = []
    restarts: list[float] = []

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=log)

    async def scenario() -> list[dict[str, Any]]:
        procs = [
            await start_producer(boot, kafka_topic, tmp_path, stop_file, shared, rank, 4)
            for rank in range(4)
        ] + [await start_producer(boot, kafka_topic, tmp_path, stop_file, r, 0, 1) for r in solo]
        worker = spawn()
        early = True  # the first kill waits for progress
        try:
            while len(kills) < KILLS:
                for p in procs:
                    assert p.returncode is None, "a producer stopped early"
                early = not early and rng.random() < 0.3  # never twice in a row
                if early:  # a moment during start-up: chDB open, join, seek, redo
                    await asyncio.sleep(rng.uniform(0.3, 2.0))
                    assert worker.poll() is None, "worker died on its own"
                else:  # a moment while projecting
                    before = sum((await committed_offsets(boot, group, kafka_topic)).values())
                    started = time.monotonic()
                    while (
                        sum((await committed_offsets(boot, group, kafka_topic)).values()) <= before
                    ):
                        assert time.monotonic() < started + 45, "worker made no progress"
                        assert worker.poll() is None, "worker died on its own"
                        await asyncio.sleep(0.2)
                    restarts.append(time.monotonic() - started)
                    await asyncio.sleep(rng.uniform(0.0, 0.8))
                ends = await end_offsets(boot, kafka_topic)
                committed = await committed_offsets(boot, group, kafka_topic)
                lag = sum(max(0, e - committed.get(p, 0)) for p, e in ends.items())
                if lag == 0:
                    continue  # caught up at this instant: not a kill under lag
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                # the worker is dead: its stored position now is the one at the kill, and
                # `ends` was read before the kill, so behind > 0 means lag at kill time
                stored = await asyncio.to_thread(
                    run_json,
                    ["positions", "--chdb-path", str(chdb), "--database", db, "--topic"]
                    + [kafka_topic],
                )
                behind = _behind(ends, stored)
                if behind > 0:
                    kills.append((lag, behind, early))
                else:
                    caught_up.append((lag, early))
                    assert len(caught_up) <= KILLS, f"kills mostly found no lag: {caught_up}"
                worker = spawn()
            stop_file.touch()
            reports = await finish_producers(procs)
            ends = await end_offsets(boot, kafka_topic)
            deadline = time.monotonic() + 120
            while True:
                done = await committed_offsets(boot, group, kafka_topic)
                if all(done.get(p, 0) >= e for p, e in ends.items() if e):
                    break
                assert time.monotonic() < deadline, f"not caught up: {done} < {ends}"
                assert worker.poll() is None, "worker died on its own"
                await asyncio.sleep(0.2)
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
            return reports
        finally:
            stop_file.touch()
            for p in procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
                    await p.wait()
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    try:
        reports = asyncio.run(scenario())
        ends = asyncio.run(end_offsets(boot, kafka_topic))
        stored = run_json(
            ["positions", "--chdb-path", str(chdb), "--database", db, "--topic", kafka_topic]
        )
        got = run_json(["dump", "--chdb-path", str(chdb), "--database", db])
        log_ids = asyncio.run(_event_ids(boot, kafka_topic, ends))
    finally:
        log.close()
    print(
        f"kills={len(kills)} (kafka lag, stored lag) at kill={kills} "
        f"uncounted (caught up at the signal)={caught_up} "
        f"start->progress s={[round(r, 1) for r in restarts]} "
        f"steps={[r['steps'] for r in reports]} records={sum(ends.values())}"
    )
    assert len(kills) >= KILLS
    assert sum(not e for *_, e in kills) >= KILLS // 2, "most kills while projecting"
    assert {int(p): v for p, v in stored.items()} == {p: [e, None] for p, e in ends.items() if e}
    assert all(r["steps"] > 100 for r in reports), "every producer logged while we killed"

    want = _expected(reports)
    points = Counter({tuple(r[:6]): r[6] for r in got["points"]})
    assert points == want["points"], "metric_points differ from the producers' reports"
    assert got["point_rows"] == sum(want["points"].values()), "duplicate rows (raw)"
    for run_id, key, count, lo, hi, last_step, last_value, total in got["summary"]:
        e = want["summary"][(run_id, key)]
        assert (count, lo, hi, total, last_step) == (
            e["count"],
            e["min"],
            e["max"],
            e["sum"],
            e["step"],
        ), (run_id, key)
        assert last_value in e["last"], (run_id, key, last_value, e["last"])
    assert {(r, k) for r, k, *_ in got["summary"]} == set(want["summary"])
    for run_id, key, candidates in got["last_candidates"]:
        summary = next(s for s in got["summary"] if s[:2] == [run_id, key])
        assert summary[6] in candidates, (run_id, key)
    assert {r[0]: r[1] for r in got["runs"]} == dict.fromkeys(want["runs"], "FINISHED")
    assert all(r[2] == f"notes of {r[0]}" and r[3] == 0 for r in got["runs"])
    assert {(r, k, v) for r, k, v, _ in got["params"]} == want["params"]
    assert all(n == 1 for *_, n in got["params"]), "a param row twice"
    assert {tuple(t) for t in got["tags"]} == want["tags"]
    prods = {(r, p): s for r, p, s in got["producers"]}
    for r in reports:
        assert prods[(r["run_id"], r["producer_id"])] != "ACTIVE", r
    assert {reason for reason, _ in got["rejected"]} <= {"experiment_exists"}
    events = Counter({e: n for e, n in got["events"]})
    assert set(events) == set(log_ids), "events table != distinct event ids of the log"
    assert set(events.values()) == {1}, "an event projected twice"
    shutil.rmtree(chdb, ignore_errors=True)


class StaleWrite(AssertionError):
    """The zombie's write landed after the new owner's."""


@pytest.mark.parametrize(
    "pause",
    [
        "before_commit",
        "after_owner_check",
    ],
)
def test_zombie_worker_does_not_write_after_the_new_owner(
    connection: Connection,
    chdb_client: Any,
    ch_database: str,
    pause: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Worker A prepares a batch, then its event loop freezes (a GC/VM pause) past the
    session timeout, either before its commit or right after the commit's owner check: the
    group gives the partition to worker B, which re-projects from the stored position with
    other batch bounds. A then wakes and goes on with its commit."""
    boot, db = connection.kafka_bootstrap, ch_database
    topic, group = f"t.zombie.{uuid.uuid4().hex[:8]}", f"zombie-{uuid.uuid4().hex[:8]}"
    create_topics(boot, {topic: 1})
    migrate(chdb_client, db)
    w = Writer()
    points_per_event = 10

    def events(n: int, start: int) -> list[tuple[bytes, bytes]]:
        out = []
        for i in range(start, start + n):
            rec = w.metrics("zr", np.arange(i * 10, i * 10 + 10, dtype=np.int64), ["loss"])
            out.append((key_of(rec), encode("MetricsLogged", rec)))
        return out

    async def send(msgs: list[tuple[bytes, bytes]]) -> None:
        prod = AIOKafkaProducer(bootstrap_servers=boot, acks="all", enable_idempotence=True)
        await prod.start()
        try:
            await asyncio.gather(*[await prod.send(topic, v, key=k) for k, v in msgs])
        finally:
            await prod.stop()

    def settings() -> WorkerSettings:
        return WorkerSettings(group_id=group, batch_timeout=0.3)

    frozen, resume, written = threading.Event(), threading.Event(), threading.Event()
    a_batch: list[tuple[int, int]] = []
    b_batches: list[tuple[int, int]] = []
    b_errors: list[BaseException] = []

    def worker_b() -> None:
        """The new owner, in a thread of its own (A's event loop is frozen)."""

        async def run() -> None:
            assert frozen.wait(60), "A never reached its commit"
            await send(events(4, 8))  # more records: B's batch bounds differ from A's
            b = ProjectionWorker(
                chdb_client, bootstrap=boot, database=db, topic=topic, dlq_topic=topic,
                settings=dataclasses.replace(settings(), batch_size=3),
            )  # fmt: skip
            b_commit = b.processor.commit

            async def observed(batch: PreparedBatch) -> float:
                seconds = await b_commit(batch)
                b_batches.append((batch.first, batch.last))
                return seconds

            b.processor.commit = observed  # type: ignore[method-assign]
            task = asyncio.create_task(b.run())
            try:
                await wait_projected(chdb_client, db, boot, topic, timeout=60)
                resume.set()  # B owns the partition and has written everything
                await asyncio.to_thread(written.wait, 60)
            finally:
                resume.set()
                await b.stop()
                await task

        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            b_errors.append(exc)

    async def scenario() -> None:
        a = ProjectionWorker(
            chdb_client, bootstrap=boot, database=db, topic=topic, dlq_topic=topic,
            settings=settings(),
        )  # fmt: skip
        real_commit = a.processor.commit
        loop = asyncio.get_running_loop()

        def freeze_loop() -> None:
            frozen.set()
            resume.wait(90)  # blocks A's event loop: no heartbeat, the session expires

        async def commit_paused_before(batch: PreparedBatch) -> float:
            if a_batch:
                return await real_commit(batch)
            a_batch.append((batch.first, batch.last))
            freeze_loop()
            try:
                return await real_commit(batch)
            finally:
                written.set()

        async def commit_observed(batch: PreparedBatch) -> float:
            try:
                return await real_commit(batch)
            finally:
                written.set()

        def pause_after_check() -> None:
            sink = a.processor.sink
            real_intent = sink.mark_intent

            def intent(topic_: str, partition: int, first: int, last: int) -> None:
                # runs in a thread, after check_owner passed: freeze A's loop from here
                if not a_batch:
                    a_batch.append((first, last))
                    loop.call_soon_threadsafe(freeze_loop)
                    assert frozen.wait(30), "A's loop did not freeze"
                    resume.wait(90)
                real_intent(topic_, partition, first, last)

            sink.mark_intent = intent  # type: ignore[method-assign,assignment]

        task = asyncio.create_task(a.run())
        try:
            await send(events(4, 0))
            await wait_projected(chdb_client, db, boot, topic, timeout=60)
            if pause == "before_commit":
                a.processor.commit = commit_paused_before  # type: ignore[method-assign]
            else:
                pause_after_check()
                a.processor.commit = commit_observed  # type: ignore[method-assign]
            await send(events(4, 4))
            while not written.is_set():
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
        finally:
            written.set()
            await a.stop()
            await task

    b_thread = threading.Thread(target=worker_b)
    b_thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger="processors.worker"):
            asyncio.run(scenario())
    finally:
        frozen.set()
        resume.set()
        b_thread.join(120)
    assert not b_errors, b_errors
    assert len(a_batch) == 1, "A froze in the commit of one batch"
    assert b_batches[0][0] == a_batch[0][0], "B resumed where A's batch starts"
    assert a_batch[0] not in b_batches, "B's batch bounds differ from A's"
    produced = 12 * points_per_event
    q = chdb_client.query
    summary = q(f"SELECT sum(count) FROM {db}.metric_summary").result_rows[0][0]
    raw = q(f"SELECT count() FROM {db}.metric_points").result_rows[0][0]
    events_raw = q(f"SELECT count() FROM {db}.events").result_rows[0][0]
    print(
        f"{pause}: A's stale batch {a_batch}, B's {b_batches}: summary count {summary}, raw"
        f" points {raw} of {produced}, events rows {events_raw} of 12"
    )
    if (summary, raw, events_raw) != (produced, produced, 12):
        raise StaleWrite(
            f"after the new owner: metric_summary count {summary}, metric_points rows {raw}"
            f" (produced {produced}), events rows {events_raw} (12 records)"
        )
    if pause == "before_commit":
        assert any("written by another worker" in r.getMessage() for r in caplog.records)
