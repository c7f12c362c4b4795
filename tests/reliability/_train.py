"""Training-loop processes and checks shared by the fault tests.

`train` is a spawn-safe entry point: it joins (or creates) a run, logs `keys` metrics per step
until a stop file appears, times every `log_metric` call, samples its RSS and spool size, ends
the run and writes what it measured as JSON. `check_every_point_once` reads the topic back and
asserts every (producer, key, step) arrived exactly once after dropping resends by event id.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUCKET_S = 0.25


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


def train(
    cfg_kwargs: dict[str, Any],
    run_id: str,
    rank: int,
    world: int,
    stop_file: str,
    out_file: str,
    keys: int = 4,
    sleep_s: float = 0.002,
    options: dict[str, Any] | None = None,
    end_timeout: float = 120.0,
) -> None:
    """Log until `stop_file` exists; write measurements to `out_file` (see module doc)."""
    import producers
    from producers.config import ClientConfig
    from producers.engine import EngineOptions

    t0 = time.perf_counter()
    run = producers.start_run(
        "faults",
        run_id=run_id,
        rank=rank,
        world_size=world,
        config=ClientConfig(**cfg_kwargs),
        options=EngineOptions(**(options or {})),
        capture_code=False,
        capture_environment=False,
    )
    start_s = time.perf_counter() - t0
    names = [f"m{i}" for i in range(keys)]
    spool = Path(run.engine.spool_dir)
    buckets: list[tuple[float, int, float]] = []  # (monotonic start, steps, max call seconds)
    samples: list[tuple[float, int, int]] = []  # (monotonic, rss KiB, spool bytes on disk)
    Path(out_file + ".started").write_text(str(os.getpid()))
    step = 0
    bucket_start = time.monotonic()
    bucket_steps = 0
    bucket_max = 0.0
    perf = time.perf_counter
    stop = Path(stop_file)
    while True:
        base = rank * 1e6 + step
        for name in names:
            t = perf()
            run.log_metric(name, base, step=step)
            dt = perf() - t
            if dt > bucket_max:
                bucket_max = dt
        step += 1
        bucket_steps += 1
        if sleep_s:
            time.sleep(sleep_s)
        now = time.monotonic()
        if now - bucket_start >= BUCKET_S:
            buckets.append((bucket_start, bucket_steps, bucket_max))
            samples.append((now, rss_kib(), dir_bytes(spool)))
            bucket_start, bucket_steps, bucket_max = now, 0, 0.0
            if stop.exists():
                break
    producer_id = run.engine.producer_id
    t1 = time.perf_counter()
    delivered = run.end(timeout=end_timeout)
    result = {
        "producer_id": producer_id,
        "rank": rank,
        "steps": step,
        "keys": names,
        "start_s": start_s,
        "end_s": time.perf_counter() - t1,
        "delivered": delivered,
        "buckets": buckets,
        "samples": samples,
    }
    Path(out_file).write_text(json.dumps(result))


@dataclass
class Measured:
    """What one `train` process reported."""

    producer_id: str
    rank: int
    steps: int
    keys: list[str]
    start_s: float
    end_s: float
    delivered: bool
    buckets: list[tuple[float, int, float]] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Measured:
        return cls(**json.loads(path.read_text()))

    def window(self, t0: float, t1: float) -> tuple[float, float]:
        """(steps per second, max log_metric seconds) over the buckets inside [t0, t1]."""
        inside = [b for b in self.buckets if b[0] >= t0 and b[0] + BUCKET_S <= t1]
        if not inside:
            raise AssertionError(f"no measurement bucket inside [{t0:.2f}, {t1:.2f}]")
        steps = sum(b[1] for b in inside)
        return steps / (len(inside) * BUCKET_S), max(b[2] for b in inside)


def wait_started(out_files: list[Path], procs: list[Any], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    for out in out_files:
        marker = Path(str(out) + ".started")
        while not marker.exists():
            dead = [p for p in procs if not p.is_alive()]
            if dead:
                raise AssertionError(f"a training process exited early: {dead}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{marker} did not appear in {timeout} s")
            time.sleep(0.1)


def check_every_point_once(events: list[Any], measured: list[Measured]) -> Counter[str]:
    """Assert each (producer, key, step) logged arrived exactly once; return event kinds."""
    from schemas.metrics import unpack_points

    seen: set[str] = set()
    unique = []
    for e in events:
        if e.envelope.event_id not in seen:
            seen.add(e.envelope.event_id)
            unique.append(e)
    got: Counter[tuple[str, str, int]] = Counter()
    values: dict[tuple[str, str, int], float] = {}
    for e in unique:
        if type(e).__name__ != "MetricsLogged":
            continue
        for p in unpack_points(e).points():
            ident = (e.envelope.producer_id, p.key, p.step)
            got[ident] += 1
            values[ident] = p.value
    expected = {
        (m.producer_id, k, s): m.rank * 1e6 + s
        for m in measured
        for k in m.keys
        for s in range(m.steps)
    }
    missing = expected.keys() - got.keys()
    extra = got.keys() - expected.keys()
    repeated = [i for i, n in got.items() if n != 1]
    assert not missing, f"{len(missing)} points lost, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected points, e.g. {sorted(extra)[:3]}"
    assert not repeated, f"{len(repeated)} points twice (distinct events), e.g. {repeated[:3]}"
    wrong = [i for i, v in expected.items() if values[i] != v]
    assert not wrong, f"{len(wrong)} points with a wrong value, e.g. {wrong[:3]}"
    return Counter(type(e).__name__ for e in unique)


def run_statuses(events: list[Any], run_id: str) -> list[str]:
    seen: set[str] = set()
    out = []
    for e in events:
        if e.envelope.event_id in seen or e.envelope.run_id != run_id:
            continue
        seen.add(e.envelope.event_id)
        if type(e).__name__ == "RunStatusChanged":
            out.append(e.status.value)
    return out


class TcpProxy:
    """Forwards connections on 127.0.0.1:`port` to `upstream` (host:port) once started."""

    def __init__(self, port: int, upstream: str) -> None:
        host, _, p = upstream.rpartition(":")
        self.port = port
        self.upstream = (host, int(p))
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._closed = threading.Event()

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self._sock = s
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._closed.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        if self._sock is not None:
            self._sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


def pool_worker(cfg_kwargs: dict[str, Any], n: int, block_sigterm_in_main: bool) -> dict[str, Any]:
    """A spawn-Pool task: start a run (this process owns it), log n points, leave it open.

    With `block_sigterm_in_main` the main thread then blocks SIGTERM, so the kernel hands a
    SIGTERM to one of the process's other threads (what it may do whenever the main thread
    cannot take it), while the main thread sits in the pool's queue semaphore.
    """
    import signal

    import producers
    from producers.config import ClientConfig

    run = producers.start_run(
        "pool",
        config=ClientConfig(**cfg_kwargs),
        capture_code=False,
        capture_environment=False,
    )
    for step in range(n):
        run.log_metric("loss", float(step), step=step)
    if block_sigterm_in_main:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    return {"pid": os.getpid(), "run_id": run.id, "producer_id": run.engine.producer_id}
