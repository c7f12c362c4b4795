"""One writer process of the load test (a spawn entry point: importable, top level)."""

from __future__ import annotations

import time
from typing import Any

KEYS = ("loss", "acc", "lr", "grad_norm", "tokens_per_s", "gpu_util", "mem_gb", "throughput")


def _vm_hwm_mb() -> float:
    """Peak RSS of this process image (not ru_maxrss: that one keeps the forking parent's
    peak across fork + exec, i.e. the test runner's)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def write(
    cfg_kwargs: dict[str, Any],
    run_id: str,
    rank: int,
    world: int,
    seconds: float,
    step_sleep: float,
) -> dict[str, Any]:
    """Log every key of `KEYS` per step for `seconds` (a `step_sleep` "training step" between
    steps), with params and tags on the way; end the run; report what was logged."""
    import producers
    from producers.config import ClientConfig

    run = producers.start_run(
        "load",
        run_id=run_id,
        rank=rank,
        world_size=world,
        config=ClientConfig(**cfg_kwargs),
        capture_code=False,
        capture_environment=False,
    )
    if rank == 0:
        run.log_params({"lr": 0.001, "batch": 256, "model": "load-test"})
    worst = 0.0
    calls: list[float] = []
    step = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        values = {k: step * 1e-3 + i + rank for i, k in enumerate(KEYS)}
        t = time.perf_counter()
        run.log_metrics(values, step=step)
        dt = time.perf_counter() - t
        calls.append(dt)
        worst = max(worst, dt)
        if step % 5000 == 0:
            run.set_tag(f"rank{rank}.progress", str(step))
        step += 1
        if step_sleep:
            time.sleep(step_sleep)
    delivered = run.end(timeout=300)
    calls.sort()
    return {
        "run_id": run_id,
        "rank": rank,
        "producer_id": run.engine.producer_id,
        "steps": step,
        "points": step * len(KEYS),
        "delivered": bool(delivered),
        "call_p50_us": calls[len(calls) // 2] * 1e6,
        "call_p99_us": calls[int(len(calls) * 0.99)] * 1e6,
        "call_max_ms": worst * 1e3,
        "peak_rss_mb": _vm_hwm_mb(),
    }
