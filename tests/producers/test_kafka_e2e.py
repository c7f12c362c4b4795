"""Real broker: every point arrives exactly once, from one or many processes, across a broker
restart and a broker that is down at start (spool, then sync)."""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import producers
from producers.engine import EngineOptions
from producers.sync import sync_spool
from runstream.stack import Connection, LocalStack
from tests.producers import _workers
from tests.producers.helpers import consume, kafka_config, kinds, points, unique_events

pytestmark = pytest.mark.stack


def _start(cfg: Any, **kw: Any) -> producers.Run:
    kw.setdefault("capture_code", False)
    kw.setdefault("capture_environment", False)
    return producers.start_run("e2e", config=cfg, **kw)


def test_one_process_points_and_events_arrive(
    connection: Connection, kafka_topic: str, tmp_path: Path
) -> None:
    cfg = kafka_config(connection.kafka_bootstrap, kafka_topic, str(tmp_path))
    run = _start(
        cfg, params={"lr": 0.1}, tags={"team": "a"}, capture_code=True, capture_environment=True
    )
    n = 50_000
    for step in range(n):
        run.log_metric("loss", step * 0.5, step=step)
    run.log_metrics({"acc": 0.9, "f1": 0.8}, step=7, split="val")
    run.log_param("batch", 32)
    run.alert_on("loss", ">", 10.0)
    run.log_metric("loss", 11.0, step=n)
    assert run.end(timeout=60)
    assert not (tmp_path / run.engine.producer_id).exists(), "delivered spool is deleted"

    events = consume(connection.kafka_bootstrap, kafka_topic)
    got = points(events)
    assert len(got) == n + 3
    loss = sorted((s, val) for (k, _sp, s, val) in got.values() if k == "loss")
    assert loss == [(s, s * 0.5) for s in range(n)] + [(n, 11.0)]
    assert {(k, sp, s, val) for (k, sp, s, val) in got.values() if sp == "val"} == {
        ("acc", "val", 7, 0.9),
        ("f1", "val", 7, 0.8),
    }
    c = kinds(events)
    for kind in (
        "ExperimentCreated",
        "RunCreated",
        "ProducerJoined",
        "ParamsLogged",
        "AlertTriggered",
        "ProducerExited",
        "CodeCaptured",
        "EnvironmentCaptured",
    ):
        assert c[kind] == 1, kind
    assert c["RunStatusChanged"] == 2  # RUNNING, FINISHED
    seqs = sorted(
        e.envelope.seq for e in events if e.envelope.producer_id == run.engine.producer_id
    )
    assert seqs == list(range(len(seqs))), "per-producer seq has no gap and no repeat"
    created = next(e for e in events if type(e).__name__ == "RunCreated")
    assert created.params == {"lr": "0.1"}
    assert created.tags == {"team": "a"}


def test_many_processes_one_run_every_point_kept(
    connection: Connection, kafka_topic: str, tmp_path: Path
) -> None:
    world, n = 3, 20_000
    cfg = {
        "kafka_bootstrap": connection.kafka_bootstrap,
        "topic": kafka_topic,
        "spool_dir": str(tmp_path),
        "mode": "kafka",
    }
    run_id = "multi-" + str(time.time_ns())
    ctx = multiprocessing.get_context("spawn")
    # close + join: the workers end normally (their runs' exit bookkeeping is what this test
    # reads); terminating a pool of SDK users is tests/reliability/test_exit_signals.py's
    pool = ctx.Pool(world)
    try:
        producer_ids = pool.starmap(
            _workers.log_points, [(cfg, run_id, r, world, n) for r in range(world)]
        )
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    assert len(set(producer_ids)) == world
    events = consume(connection.kafka_bootstrap, kafka_topic)
    got = points(events)
    assert len(got) == world * (n + 1)
    by_producer = {pid: r for r, pid in enumerate(producer_ids)}
    for (pid, _seq, _i), (key, _split, step, value) in got.items():
        rank = by_producer[pid]
        expected = rank * 1e6 + step if key == "loss" else float(rank)
        assert value == expected, (pid, key, step)
    for r, pid in enumerate(producer_ids):
        steps = sorted(
            s for (p, _q, _i), (k, _sp, s, _v) in got.items() if p == pid and k == "loss"
        )
        assert steps == list(range(n)), f"rank {r} lost or duplicated points"
    c = kinds(events)
    assert c["RunCreated"] == 1, "only rank 0 creates the run"
    assert c["ProducerJoined"] == world
    assert c["ProducerExited"] == world
    status = [e.status.value for e in events if type(e).__name__ == "RunStatusChanged"]
    assert status == ["RUNNING", "FINISHED"], "only the owner (rank 0) sets the run status"


def test_crashing_rank_is_recorded_per_producer(
    connection: Connection, kafka_topic: str, tmp_path: Path
) -> None:
    cfg = {
        "kafka_bootstrap": connection.kafka_bootstrap,
        "topic": kafka_topic,
        "spool_dir": str(tmp_path),
        "mode": "kafka",
    }
    owner = _start(producers.ClientConfig(**cfg), rank=0, world_size=2)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_workers.crash_after_logging, args=(cfg, owner.id, 100))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 1
    assert owner.end(timeout=30)
    events = [
        e for e in consume(connection.kafka_bootstrap, kafka_topic) if e.envelope.run_id == owner.id
    ]
    exits = {e.envelope.producer_id: e for e in events if type(e).__name__ == "ProducerExited"}
    statuses = sorted(e.status.value for e in exits.values())
    assert statuses == ["FAILED", "FINISHED"]
    failed = next(e for e in exits.values() if e.status.value == "FAILED")
    assert "boom in rank 1" in (failed.reason or "")
    run_status = [e.status.value for e in events if type(e).__name__ == "RunStatusChanged"]
    assert run_status == ["RUNNING", "FINISHED"], "a crashing non-owner rank does not fail the run"
    assert len(points(events)) == 100


def test_broker_restart_mid_run_loses_nothing(
    stack: LocalStack, connection: Connection, kafka_topic: str, tmp_path: Path
) -> None:
    cfg = kafka_config(connection.kafka_bootstrap, kafka_topic, str(tmp_path))
    run = _start(cfg, options=EngineOptions(linger_s=0.05, backoff_max_s=0.5))
    stop = threading.Event()
    logged = [0]

    def train() -> None:
        step = 0
        while not stop.is_set():
            run.log_metric("loss", float(step), step=step)
            step += 1
            if step % 1000 == 0:
                time.sleep(0.005)
        logged[0] = step

    t = threading.Thread(target=train)
    t.start()
    time.sleep(0.5)
    stack.restart_kafka(hard=True)
    time.sleep(0.5)
    stop.set()
    t.join()
    assert run.end(timeout=90), run.engine.status()
    events = unique_events(consume(connection.kafka_bootstrap, kafka_topic))
    steps = sorted(s for (_k, _sp, s, _v) in points(events).values())
    assert steps == list(range(logged[0])), "every point logged across the restart arrived"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_broker_down_at_start_spools_then_sync_delivers(
    connection: Connection, kafka_topic: str, tmp_path: Path
) -> None:
    dead = kafka_config(f"127.0.0.1:{_closed_port()}", kafka_topic, str(tmp_path))
    run = _start(dead, options=EngineOptions(backoff_max_s=0.2))
    for step in range(10_000):
        run.log_metric("loss", float(step), step=step)
    t0 = time.monotonic()
    assert not run.end(timeout=1.0), "nothing can be delivered"
    assert time.monotonic() - t0 < 5, "end() waits a bounded time"
    producers.shutdown(timeout=1.0)
    spool = tmp_path / run.engine.producer_id
    assert list(spool.glob("*.seg")), "events wait on disk"

    res = sync_spool(
        tmp_path,
        kafka_config(connection.kafka_bootstrap, kafka_topic, str(tmp_path)),
        progress=False,
    )
    assert res.spools == 1
    assert res.events > 0
    assert not res.skipped_locked
    assert not spool.exists()
    events = consume(connection.kafka_bootstrap, kafka_topic)
    assert sorted(s for (_k, _sp, s, _v) in points(events).values()) == list(range(10_000))
    assert kinds(events)["RunCreated"] == 1


def test_next_process_resends_an_orphaned_spool(
    connection: Connection, kafka_topic: str, tmp_path: Path
) -> None:
    dead = kafka_config(f"127.0.0.1:{_closed_port()}", kafka_topic, str(tmp_path))
    first = _start(dead, options=EngineOptions(backoff_max_s=0.2))
    for step in range(1000):
        first.log_metric("loss", float(step), step=step)
    assert not first.end(timeout=0.5)
    producers.shutdown(timeout=0.5)
    assert (tmp_path / first.engine.producer_id).exists()

    live = kafka_config(connection.kafka_bootstrap, kafka_topic, str(tmp_path))
    second = _start(live)
    second.log_metric("acc", 1.0)
    assert second.end(timeout=30)
    assert second.engine.recovered_events > 0
    assert not (tmp_path / first.engine.producer_id).exists()
    events = consume(connection.kafka_bootstrap, kafka_topic)
    assert {e.envelope.run_id for e in events if e.envelope.run_id} == {first.id, second.id}
    assert len(points(events)) == 1001
