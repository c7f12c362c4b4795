"""A three-node KRaft cluster on loopback loses a broker while several processes log.

Every node is broker + controller; the topic has replication factor 3 and
min.insync.replicas 2; the SDK produces idempotently with acks=all. The node leading the
run's partition is SIGKILLed mid-run: the loops never block, the partition moves to another
leader, and every point arrives exactly once (resends dropped by event id). The node then
comes back on its data and the run ends FINISHED.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstream.stack.cluster import KafkaCluster
from tests.producers.helpers import consume
from tests.reliability import _train
from tests.reliability._train import Measured

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RUNSTREAM_DIR = Path(os.environ.get("RUNSTREAM_HOME", REPO / ".runstream"))
MAX_CALL_S = 0.25  # never a network wait (seconds); room for a scheduler stall on 2 cores


@pytest.fixture
def cluster() -> Iterator[KafkaCluster]:
    home = RUNSTREAM_DIR / "reliability" / f"cluster-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    c = KafkaCluster(home, RUNSTREAM_DIR / "cache", heap_mb=256)
    try:
        c.start(3)
        yield c
    finally:
        c.destroy()  # every node, by pid, even when the test failed


def _partition(key: bytes, partitions: int) -> int:
    from aiokafka.partitioner import murmur2

    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def test_losing_a_broker_blocks_nothing_loses_nothing(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    world, partitions = 3, 4
    topic = f"t.cluster.{uuid.uuid4().hex[:8]}"
    cluster.create_topic(topic, partitions)
    run_id = f"cluster-{uuid.uuid4().hex[:12]}"
    cfg = {
        "kafka_bootstrap": cluster.bootstrap,
        "topic": topic,
        "spool_dir": str(tmp_path / "spool"),
        "mode": "kafka",
    }
    ctx = multiprocessing.get_context("spawn")
    stop = tmp_path / "stop"
    outs = [tmp_path / f"rank{r}.json" for r in range(world)]
    procs: list[Any] = [
        ctx.Process(
            target=_train.train,
            args=(cfg, run_id, r, world, str(stop), str(outs[r])),
            kwargs={"keys": 4, "sleep_s": 0.002, "options": {"backoff_max_s": 0.5}},
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    try:
        _train.wait_started(outs, procs)
        time.sleep(3.0)
        leader = cluster.leaders(topic)[_partition(run_id.encode(), partitions)]
        assert leader in range(3), f"the run's partition has no leader: {leader}"
        t_kill = time.monotonic()
        cluster.kill(leader)
        time.sleep(8.0)  # well past the 3 s broker session timeout: a new leader serves
        t_back = time.monotonic()
        new_leader = cluster.leaders(topic)[_partition(run_id.encode(), partitions)]
        assert new_leader not in (leader, -1), "another node leads the partition"
        restarted_in = cluster.restart(leader)
        time.sleep(1.0)
        stop.write_text("")
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * world, "a training process failed"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
    measured = [Measured.load(o) for o in outs]
    for m in measured:
        assert m.delivered, f"rank {m.rank}: end() could not deliver everything"
        base_rate, _ = m.window(t_kill - 2.5, t_kill)
        out_rate, worst = m.window(t_kill, t_back)
        assert worst < MAX_CALL_S, f"rank {m.rank}: a log_metric call took {worst * 1e3:.0f} ms"
        assert out_rate > 0.3 * base_rate, f"rank {m.rank}: {out_rate:.0f} vs {base_rate:.0f}/s"
        print(
            f"rank {m.rank}: {m.steps} steps; steps/s {base_rate:.0f} before the kill, "
            f"{out_rate:.0f} after; max call {worst * 1e3:.2f} ms; node {leader} back in "
            f"{restarted_in:.1f} s"
        )
    events = consume(cluster.bootstrap, topic, timeout=60)
    kinds = _train.check_every_point_once(events, measured)
    assert kinds["ProducerExited"] == world
    assert _train.run_statuses(events, run_id) == ["RUNNING", "FINISHED"]
