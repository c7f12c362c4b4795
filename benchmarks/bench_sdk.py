"""SDK benchmarks: log_metric call cost, points/s to a real Kafka, many processes, memory with
the broker down.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_sdk.py                  # starts a throwaway local stack
    .venv/bin/python benchmarks/bench_sdk.py --bootstrap 127.0.0.1:9092
    .venv/bin/python benchmarks/bench_sdk.py --procs 8 --proc-points 1000000 --mem-points 10000000

Kept short by default (the machine is shared): 1 M points for one process, 8 x 250 k for the
concurrent run, 2 M points for the memory bound. Every figure is printed as a JSON line too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import producers  # noqa: E402
from producers.config import ClientConfig  # noqa: E402
from producers.engine import EngineOptions  # noqa: E402


def _report(name: str, **figures: Any) -> None:
    print(json.dumps({"bench": name, **figures}))


def _rss_kb(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _start(cfg: ClientConfig, **kw: Any) -> producers.Run:
    return producers.start_run(
        "bench", config=cfg, capture_code=False, capture_environment=False, **kw
    )


def bench_call_cost(spool: str, calls: int = 200_000, batch: int = 10_000) -> None:
    """Median per-call cost of log_metric (validation on, explicit and automatic steps)."""
    cfg = ClientConfig(mode="offline", spool_dir=spool)
    run = _start(cfg)
    lm = run.log_metric
    for label, with_step in (("explicit step", True), ("auto step", False)):
        per_call = []
        step = 0
        for _ in range(calls // batch):
            t0 = time.perf_counter()
            if with_step:
                for _ in range(batch):
                    lm("loss", 0.5, step=step)
                    step += 1
            else:
                for _ in range(batch):
                    lm("loss", 0.5)
            per_call.append((time.perf_counter() - t0) / batch * 1e6)
        _report(
            "log_metric_call",
            mode=label,
            median_us=round(statistics.median(per_call), 3),
            p90_us=round(sorted(per_call)[int(len(per_call) * 0.9)], 3),
            calls=calls,
        )
    run.end()


def _log_and_flush(cfg: ClientConfig, n: int, rank: int | None = None) -> tuple[float, float]:
    run = _start(
        cfg,
        rank=rank,
        world_size=None if rank is None else 8,
        run_id=None if rank is None else os.environ.get("BENCH_RUN_ID"),
    )
    lm = run.log_metric
    t0 = time.perf_counter()
    for step in range(n):
        lm("loss", step * 0.001, step=step)
    t_logged = time.perf_counter() - t0
    if not run.end(timeout=300):
        raise RuntimeError("not delivered in 300 s")
    return t_logged, time.perf_counter() - t0


def bench_one_process(cfg: ClientConfig, n: int) -> None:
    t_logged, total = _log_and_flush(cfg, n)
    _report(
        "one_process_to_kafka",
        points=n,
        log_s=round(t_logged, 3),
        logged_and_flushed_s=round(total, 3),
        points_per_s=int(n / total),
    )


def _worker(args: tuple[dict[str, Any], int, int]) -> tuple[float, float, float]:
    cfg_kwargs, n, rank = args
    t_start = time.time()
    t_logged, total = _log_and_flush(ClientConfig(**cfg_kwargs), n, rank)
    return t_start, t_start + total, t_logged


def bench_many_processes(cfg: ClientConfig, procs: int, n: int) -> None:
    os.environ["BENCH_RUN_ID"] = "bench-" + uuid.uuid4().hex[:12]
    kwargs = {
        "kafka_bootstrap": cfg.kafka_bootstrap,
        "topic": cfg.topic,
        "spool_dir": cfg.spool_dir,
        "mode": "kafka",
    }
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        pool.map(_worker, [(kwargs, 1, 0)] * procs)  # warm up imports in every worker
        results = pool.map(_worker, [(kwargs, n, r) for r in range(procs)])
    wall = max(end for _s, end, _l in results) - min(start for start, _e, _l in results)
    _report(
        "many_processes_to_kafka",
        processes=procs,
        points_each=n,
        total_points=procs * n,
        wall_s=round(wall, 3),
        aggregate_points_per_s=int(procs * n / wall),
        median_log_s=round(statistics.median(t for _s, _e, t in results), 3),
    )


MEM_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[4])
import producers
from producers.config import ClientConfig
from producers.engine import EngineOptions

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

n, bound = int(sys.argv[1]), int(sys.argv[3])
cfg = ClientConfig(kafka_bootstrap=sys.argv[2], mode="kafka", spool_dir=sys.argv[5],
                   topic="bench.unreachable")
opts = EngineOptions(max_buffer_points=bound, backoff_max_s=1.0)
run = producers.start_run("bench", config=cfg, capture_code=False,
                          capture_environment=False, options=opts)
base = rss("VmRSS")
t0 = time.perf_counter()
peak_pending = 0
for step in range(n):
    run.log_metric("loss", 0.5, step=step)
    if step % 100000 == 0:
        peak_pending = max(peak_pending, run.engine.pending_points)
elapsed = time.perf_counter() - t0
status = run.engine.status()
run.end(timeout=1.0)
print(json.dumps({"points": n, "buffer_bound_points": bound, "rss_before_mb": base / 1024,
                  "peak_rss_mb": rss("VmHWM") / 1024, "growth_mb": (rss("VmHWM") - base) / 1024,
                  "peak_pending_points": peak_pending, "log_s": elapsed,
                  "spooled_mb": status.spooled_bytes / 1e6,
                  "delivered": status.acked == status.written}))
"""


def bench_memory_broker_down(n: int, bound: int, spool: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    out = __import__("subprocess").run(
        [sys.executable, "-c", MEM_SCRIPT, str(n), dead, str(bound), str(REPO), spool],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    _report(
        "memory_broker_down",
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()},
    )


def _stack(bootstrap: str | None) -> tuple[str, Any]:
    if bootstrap:
        return bootstrap, None
    from runstream.stack import LocalStack

    stack = LocalStack(
        REPO / ".runstream" / "bench-stack" / str(os.getpid()),
        cache=REPO / ".runstream" / "cache",
        partitions=4,
    )
    conn = stack.up(progress=lambda m: print(f"[stack] {m}", file=sys.stderr))
    return conn.kafka_bootstrap, stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", default=os.environ.get("RUNSTREAM_KAFKA_BOOTSTRAP"))
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--proc-points", type=int, default=250_000)
    ap.add_argument("--mem-points", type=int, default=2_000_000)
    ap.add_argument("--mem-bound", type=int, default=EngineOptions().max_buffer_points)
    ap.add_argument("--only", choices=["call", "one", "many", "mem"], action="append")
    args = ap.parse_args()
    only = set(args.only or ["call", "one", "many", "mem"])
    tmp = tempfile.mkdtemp(prefix="rs-bench-")
    os.environ["RUNSTREAM_HOME"] = tmp
    stack = None
    try:
        if "call" in only:
            bench_call_cost(os.path.join(tmp, "spool-call"))
        if "mem" in only:
            bench_memory_broker_down(
                args.mem_points, args.mem_bound, os.path.join(tmp, "spool-mem")
            )
        if only & {"one", "many"}:
            bootstrap, stack = _stack(args.bootstrap)
            from runstream.stack.kafka import create_topics

            topic = f"bench.{uuid.uuid4().hex[:8]}"
            create_topics(bootstrap, {topic: 4})
            cfg = ClientConfig(
                kafka_bootstrap=bootstrap,
                topic=topic,
                mode="kafka",
                spool_dir=os.path.join(tmp, "spool"),
            )
            if "one" in only:
                bench_one_process(cfg, args.points)
            if "many" in only:
                bench_many_processes(cfg, args.procs, args.proc_points)
    finally:
        producers.shutdown(timeout=5)
        if stack is not None:
            stack.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
