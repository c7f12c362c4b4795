"""SIGTERM to `multiprocessing` spawn-Pool workers that used the SDK: nothing hangs, nothing
is lost.

`Pool.terminate()` takes the task queue's read lock and SIGTERMs the workers, whose main
threads wait on that lock inside C. A SIGTERM handler that can only act on the main thread
never runs there, so a worker whose SIGTERM is taken by another thread (the kernel may pick
any thread that does not block it) used to live forever and `terminate()` to hang joining
it. The SDK's SIGTERM path must end the runs KILLED, deliver (bounded) and exit without the
main thread (`producers/exits.py`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runstream.stack import Connection
from tests.producers.helpers import consume, points, unique_events
from tests.reliability import _train

pytestmark = [pytest.mark.stack, pytest.mark.slow]

WORKERS = 4
POINTS = 5_000


@pytest.mark.parametrize("main_blocks_sigterm", [True, False], ids=["other-thread", "plain"])
def test_pool_terminate_does_not_hang_and_flushes(
    connection: Connection, kafka_topic: str, tmp_path: Path, main_blocks_sigterm: bool
) -> None:
    cfg = {
        "kafka_bootstrap": connection.kafka_bootstrap,
        "topic": kafka_topic,
        "spool_dir": str(tmp_path / "spool"),
        "mode": "kafka",
    }
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(WORKERS)
    pids: list[int] = []
    try:
        pids = [p.pid for p in pool._pool]  # type: ignore[attr-defined]
        results: list[dict[str, Any]] = pool.starmap(
            _train.pool_worker, [(cfg, POINTS, main_blocks_sigterm)] * WORKERS
        )
        t0 = time.monotonic()
        terminator = threading.Thread(target=pool.terminate, daemon=True)
        terminator.start()
        terminator.join(60)
        took = time.monotonic() - t0
        hung = [pid for pid in pids if _alive(pid)]
        assert not terminator.is_alive(), f"Pool.terminate() hung; workers still alive: {hung}"
    finally:
        for pid in pids:  # the pool's own workers, by pid: never leave one behind
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        pool.terminate()
    assert took < 30, f"terminate took {took:.1f} s (shutdown is bounded by 10 s per worker)"

    events = unique_events(consume(connection.kafka_bootstrap, kafka_topic))
    for res in results:
        mine = [e for e in events if e.envelope.run_id == res["run_id"]]
        steps = Counter(s for (_k, _sp, s, _v) in points(mine).values())
        assert sorted(steps) == list(range(POINTS)), "every point logged before SIGTERM arrived"
        statuses = [e.status.value for e in mine if type(e).__name__ == "RunStatusChanged"]
        assert statuses[0] == "RUNNING"
        assert statuses[-1] in ("KILLED", "FINISHED"), statuses  # SIGTERM, or the pool's exit
        assert len(statuses) == 2, f"exactly one final status: {statuses}"
        exited = [e for e in mine if type(e).__name__ == "ProducerExited"]
        assert len(exited) == 1
        assert exited[0].status.value == statuses[-1]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


CHILD = """
import socket, sys, threading
import producers
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{s.getsockname()[1]}"
run = producers.start_run(
    "sig", kafka_bootstrap=dead, topic="t", spool_dir=sys.argv[1], mode="kafka",
    capture_code=False, capture_environment=False,
)
run.log_metric("loss", 1.0, step=0)
print("ready", flush=True)
threading.Event().wait()
"""


@pytest.mark.parametrize("second", [False, True], ids=["one", "two"])
def test_sigterm_shutdown_is_bounded_and_a_second_one_exits_at_once(
    tmp_path: Path, second: bool
) -> None:
    """No broker: the SIGTERM shutdown waits for delivery at most EXIT_TIMEOUT_S (10 s) and
    exits 143; a second SIGTERM during that wait exits at once."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "spool")],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        | {"RUNSTREAM_HOME": str(tmp_path / "home")},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        if second:
            time.sleep(1.0)
            assert proc.poll() is None, "the first SIGTERM waits (bounded) for delivery"
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert code == 143
    if second:
        assert took < 3.0, f"a second SIGTERM exits at once, not after {took:.1f} s"
    else:
        assert took < 25.0, f"the SIGTERM shutdown took {took:.1f} s"
    assert list((tmp_path / "spool").glob("*/*.seg")), "undelivered events stay in the spool"


FORWARD_CHILD = """
import os, signal, sys, time
import producers
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w)  # like an asyncio loop's, installed before the SDK
signal.signal(signal.SIGUSR1, lambda *a: None)
run = producers.start_run("sig", mode="offline", spool_dir=sys.argv[1],
                          capture_code=False, capture_environment=False)
signal.raise_signal(signal.SIGUSR1)
os.set_blocking(r, False)
deadline = time.monotonic() + 10
got = b""
while signal.SIGUSR1 not in got and time.monotonic() < deadline:
    try:
        got += os.read(r, 16)
    except BlockingIOError:
        time.sleep(0.01)
print("forwarded" if signal.SIGUSR1 in got else f"lost {got!r}", flush=True)
"""


def test_an_earlier_wakeup_fd_still_gets_every_signal(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", FORWARD_CHILD, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        | {"RUNSTREAM_HOME": str(tmp_path / "home")},
    )
    assert out.stdout.strip() == "forwarded", out.stdout + out.stderr
    assert out.returncode == 0, out.stderr
