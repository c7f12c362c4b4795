"""`make demo`: a distributed training run on the real local stack, end to end.

Several rank processes log ONE run concurrently through the SDK (metrics every step,
validation metrics, params, a model artifact to S3, an alert) to Kafka; `runstream serve`
(started by `runstream up`) projects the log into ClickHouse (chDB) and the demo then reads
back through the query API what really arrived. Nothing is simulated: a point that did not
flow is not shown, and the demo fails if any logged point is missing.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import random
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from runstream.settings import default_home
from runstream.stack import LocalStack, StackNotRunning

WORLD_SIZE = 4
STEPS = 20_000

console = Console(soft_wrap=True)


def train_rank(run_id: str, rank: int, world_size: int, steps: int) -> None:
    """One rank of a data-parallel job: what a user's training script looks like."""
    import runstream as rs

    rng = random.Random(rank)
    with rs.start_run(
        experiment="demo-resnet",
        name=f"demo-{time.strftime('%H%M%S')}",
        run_id=run_id,
        rank=rank,
        world_size=world_size,
        params={"lr": 3e-4, "batch_size": 256, "optimizer": "adamw", "world_size": world_size},
        tags={"team": "vision", "demo": "true"},
    ) as run:
        if rank == 0:
            run.alert_on("loss", "<", 0.3, text="val loss fell below 0.3", split="val")
        for step in range(steps):
            loss = 2.5 * math.exp(-step / (steps / 4)) + 0.05 * rng.random()
            run.log_metrics({"loss": loss, "acc": 1 - loss / 3}, step=step, split="train")
            if step % 100 == 0:
                run.log_metrics({"loss": loss * 1.1, "acc": 1 - loss / 2.8}, step=step, split="val")
        if rank == 0:
            run.log_artifact(os.urandom(256 * 1024), key="model/weights.bin")
            run.set_notes("demo run: 4 ranks, one run id")


def _get(api: str, path: str, **params: Any) -> Any:
    import httpx

    token = os.environ.get("RUNSTREAM_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{api}{path}", params=params, headers=headers, timeout=10)
    r.raise_for_status()
    return r.json()


def _wait_visible(api: str, run_id: str, expected: int, timeout: float = 120) -> float:
    """Poll the API until every logged point of the run is visible; return the wait."""
    import httpx

    t0 = time.monotonic()
    seen = 0
    while time.monotonic() - t0 < timeout:
        try:
            run = _get(api, f"/api/v1/runs/{run_id}")["run"]
            seen = sum(m["count"] for m in run["metrics"] if m["split"] != "system")
            if seen >= expected and run["status"] != "RUNNING":
                return time.monotonic() - t0
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
        time.sleep(0.2)
    raise SystemExit(f"only {seen:,} of {expected:,} points visible after {timeout:.0f}s")


def main() -> int:
    home = default_home()
    try:
        conn = LocalStack(home).connection()
    except StackNotRunning as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    if not conn.api_url:
        console.print("[red]serve is not running: `runstream up` starts it[/red]")
        return 2
    os.environ.update(conn.env())
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    run_id = f"demo-{os.urandom(8).hex()}"
    console.rule(f"[bold]training: {WORLD_SIZE} ranks x {STEPS:,} steps, one run {run_id}")
    t0 = time.monotonic()
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=train_rank, args=(run_id, r, WORLD_SIZE, STEPS))
        for r in range(WORLD_SIZE)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    failed = [r for r, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        console.print(f"[red]ranks {failed} failed[/red]")
        return 1
    console.print(f"ranks finished in {time.monotonic() - t0:.1f}s")
    expected = WORLD_SIZE * (2 * STEPS + 2 * math.ceil(STEPS / 100))
    waited = _wait_visible(conn.api_url, run_id, expected)
    console.print(
        f"all {expected:,} points visible through the API {waited:.2f}s after the ranks ended"
    )
    _report(conn.api_url, run_id)
    console.rule("[bold]where to look")
    api = conn.api_url
    console.print(f"  web UI:       {api}/#/run/{run_id}")
    console.print(f"  run:          {api}/api/v1/runs/{run_id}")
    console.print(
        f"  loss chart:   {api}/api/v1/runs/{run_id}/metrics/loss/buckets?split=train&n=100"
    )
    console.print(
        f'  search:       POST {api}/api/v1/runs/search  {{"filter": "metrics.loss@train < 0.1"}}'
    )
    console.print(f"  MLflow REST:  {api}/api/2.0/mlflow/runs/get?run_id={run_id}")
    console.print(f"  API docs:     {api}/docs")
    console.print(f"  stack:        .venv/bin/runstream status --home {home}")
    console.print(f"  logs:         {home / 'stack' / 'logs'}")
    console.print(f"  stop:         make down   (or .venv/bin/runstream down --home {home})")
    return 0


def _report(api: str, run_id: str) -> None:
    run = _get(api, f"/api/v1/runs/{run_id}")["run"]
    console.print(f"run [bold]{run['name']}[/bold]: status {run['status']}, params {run['params']}")
    table = Table("metric", "split", "points", "min", "last", "last step")
    for m in sorted(run["metrics"], key=lambda m: (m["key"], m["split"])):
        table.add_row(
            m["key"],
            m["split"],
            f"{m['count']:,}",
            f"{m['min']:.4f}",
            f"{m['last']:.4f}",
            str(m["last_step"]),
        )
    console.print(table)
    for a in run["artifacts"]:
        console.print(f"artifact {a['key']}: {a['size']:,} bytes, sha256 {a['sha256'][:12]}…")
    view = _get(api, f"/api/v1/runs/{run_id}/metrics/loss/buckets", split="train", n=5)
    console.print("train loss in 5 buckets (min / max / count — every rank's points):")
    for b in view["buckets"]:
        console.print(
            f"  steps {b['x_start']:>5}-{b['x_end']:<5} {b['min']:.3f} / "
            f"{b['max']:.3f} / {b['count']:,}"
        )


if __name__ == "__main__":
    sys.exit(main())
