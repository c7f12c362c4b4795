"""Broker faults on the SDK path, with real training-loop processes.

1. The session broker is SIGKILLed and restarted while several processes log: no
   `log_metric` call blocks, the loops keep their pace, every point arrives exactly once
   (after dropping resends by event id) and the run ends FINISHED.
2. No broker answers for 60 s after the client starts (a closed port; then a loopback proxy
   to the session broker opens on it): the SDK starts at once, the loop logs for the whole
   minute without blocking, memory stays bounded while the spool grows on disk, and every
   point arrives once the broker appears.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runstream.stack import Connection, LocalStack
from runstream.stack.ports import free_ports
from tests.producers.helpers import consume
from tests.reliability import _train
from tests.reliability._train import Measured

pytestmark = [pytest.mark.stack, pytest.mark.slow]

# a log_metric call during an outage: never a network wait (those last seconds: the
# producer's request timeout); 250 ms leaves room for a scheduler stall on a busy 2-core box
MAX_CALL_S = 0.25


def _spawn(
    cfg: dict[str, Any], run_id: str, world: int, tmp: Path, **kw: Any
) -> tuple[list[Any], list[Path], Path]:
    ctx = multiprocessing.get_context("spawn")
    stop = tmp / "stop"
    outs = [tmp / f"rank{r}.json" for r in range(world)]
    procs = [
        ctx.Process(
            target=_train.train,
            args=(cfg, run_id, r, world, str(stop), str(outs[r])),
            kwargs=kw,
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    return procs, outs, stop


def _finish(procs: list[Any], outs: list[Path], stop: Path, timeout: float) -> list[Measured]:
    stop.write_text("")
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
    assert [p.exitcode for p in procs] == [0] * len(procs), "a training process failed"
    return [Measured.load(o) for o in outs]


def _kill_all(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)


def test_broker_restart_mid_run_blocks_nothing_loses_nothing(
    stack: LocalStack, connection: Connection, kafka_topic: str, tmp_path: Path
) -> None:
    world = 3
    run_id = f"restart-{uuid.uuid4().hex[:12]}"
    cfg = {
        "kafka_bootstrap": connection.kafka_bootstrap,
        "topic": kafka_topic,
        "spool_dir": str(tmp_path / "spool"),
        "mode": "kafka",
    }
    procs, outs, stop = _spawn(
        cfg, run_id, world, tmp_path, keys=4, sleep_s=0.002, options={"backoff_max_s": 0.5}
    )
    try:
        _train.wait_started(outs, procs)
        time.sleep(3.0)  # a baseline pace with the broker up
        t_down = time.monotonic()
        stack.restart_kafka(hard=True)
        t_up = time.monotonic()
        time.sleep(2.0)
        measured = _finish(procs, outs, stop, timeout=120)
    finally:
        _kill_all(procs)

    assert t_up - t_down > 1.0, "the broker was down for a while"
    for m in measured:
        assert m.delivered, f"rank {m.rank}: end() could not deliver everything"
        base_rate, base_max = m.window(t_down - 2.5, t_down)
        out_rate, out_max = m.window(t_down, t_up)
        assert out_max < MAX_CALL_S, f"rank {m.rank}: a log_metric call took {out_max * 1e3:.0f} ms"
        assert out_rate > 0.3 * base_rate, (
            f"rank {m.rank}: {out_rate:.0f} steps/s during the outage vs {base_rate:.0f} before"
        )
        print(
            f"rank {m.rank}: {m.steps} steps; steps/s before {base_rate:.0f}, during the "
            f"{t_up - t_down:.1f} s outage {out_rate:.0f}; max call before "
            f"{base_max * 1e3:.2f} ms, during {out_max * 1e3:.2f} ms"
        )
    events = consume(connection.kafka_bootstrap, kafka_topic, timeout=60)
    kinds = _train.check_every_point_once(events, measured)
    assert kinds["ProducerJoined"] == world
    assert kinds["ProducerExited"] == world
    assert _train.run_statuses(events, run_id) == ["RUNNING", "FINISHED"]


def test_broker_unreachable_for_a_minute_at_start(
    connection: Connection, kafka_topic: str, tmp_path: Path
) -> None:
    outage_s = 60.0
    (port,) = free_ports(1)
    run_id = f"late-{uuid.uuid4().hex[:12]}"
    cfg = {
        "kafka_bootstrap": f"127.0.0.1:{port}",
        "topic": kafka_topic,
        "spool_dir": str(tmp_path / "spool"),
        "mode": "kafka",
    }
    proxy = _train.TcpProxy(port, connection.kafka_bootstrap)
    procs, outs, stop = _spawn(
        cfg,
        run_id,
        1,
        tmp_path,
        keys=50,
        sleep_s=0.002,
        options={"backoff_max_s": 2.0, "max_buffer_points": 100_000},
    )
    try:
        _train.wait_started(outs, procs)
        t_start = time.monotonic()
        time.sleep(outage_s)
        t_up = time.monotonic()
        proxy.start()
        time.sleep(3.0)
        (m,) = _finish(procs, outs, stop, timeout=180)
    finally:
        _kill_all(procs)
        proxy.close()

    assert m.start_s < 2.0, f"start_run took {m.start_s:.1f} s with no broker"
    assert m.delivered, "end() delivered everything once the broker appeared"
    rate_first, _ = m.window(t_start, t_start + 10)
    for a in range(10, int(outage_s) - 5, 10):
        rate, worst = m.window(t_start + a, t_start + a + 10)
        assert worst < MAX_CALL_S, f"a log_metric call took {worst * 1e3:.0f} ms at +{a}s"
        assert rate > 0.3 * rate_first, f"{rate:.0f} steps/s at +{a}s vs {rate_first:.0f}"
    during = [(t, rss, spool) for (t, rss, spool) in m.samples if t_start + 5 <= t <= t_up]
    rss0 = during[0][1]
    rss_growth_mib = (max(r for _, r, _ in during) - rss0) / 1024
    spooled_mib = max(s for _, _, s in during) / 2**20
    points_logged = sum(b[1] for b in m.buckets if b[0] < t_up) * len(m.keys)
    print(
        f"{points_logged} points logged in the {outage_s:.0f} s outage; spool on disk "
        f"{spooled_mib:.1f} MiB; RSS {rss0 / 1024:.0f} MiB + {rss_growth_mib:.1f} MiB"
    )
    assert spooled_mib > 10, "the outage's points wait on disk"
    assert rss_growth_mib < 40, f"RSS grew {rss_growth_mib:.0f} MiB while the broker was away"
    assert rss_growth_mib < spooled_mib / 2, "memory does not hold the backlog"

    events = consume(connection.kafka_bootstrap, kafka_topic, timeout=120)
    _train.check_every_point_once(events, [m])
    assert _train.run_statuses(events, run_id) == ["RUNNING", "FINISHED"]
