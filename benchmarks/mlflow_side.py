"""The MLflow half of `python -m benchmarks`: runs INSIDE the MLflow venv (not ours).

    .runstream/mlflow-venv/bin/python benchmarks/mlflow_side.py SCENARIO --uri URI [options]

Imports only the standard library, `mlflow` and `requests` (both in that venv); prints one JSON
object on the last line of stdout. Every figure is measured against the server at --uri through
the real `mlflow` client (or plain HTTP where we do the same on our side).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any, name: str) -> str:
    return str(client.create_experiment(f"{name}-{time.strftime('%H%M%S')}-{os.getpid()}"))


def _batch(key: str, start: int, n: int, rng: random.Random) -> list[Any]:
    from mlflow.entities import Metric

    ts = _now_ms()
    return [Metric(key, rng.random(), ts, start + i) for i in range(n)]


# ------------------------------------------------------------------------ 1: concurrent ranks
def _rank(uri: str, bs: int, seed: int, inbox: Any, outbox: Any) -> None:
    """One rank process reused for every round: (run_id, n) -> "ready" -> "go" -> log."""
    client = _client(uri)
    rng = random.Random(seed)
    while True:
        task = inbox.get()
        if task is None:
            return
        if not isinstance(task, tuple):
            continue
        run_id, n = task
        try:
            client.log_batch(run_id, metrics=_batch("warmup", 0, 10, rng))
            outbox.put("ready")
            if inbox.get() != "go":
                raise RuntimeError("round cancelled")
            t0 = time.time()
            done = 0
            while done < n:
                k = min(bs, n - done)
                client.log_batch(run_id, metrics=_batch("loss", done, k, rng))
                done += k
            outbox.put({"points": done, "t0": t0, "t1": time.time(), "error": None})
        except Exception as exc:  # reported, never hidden
            outbox.put({"points": 0, "t0": time.time(), "t1": time.time(), "error": repr(exc)})


def ranks(a: argparse.Namespace) -> dict[str, Any]:
    """--procs processes log_batch each size of --points (total), for each of --shapes
    ("runs": one run per rank, "one": all ranks in ONE run); rank processes are reused."""
    client = _client(a.uri)
    exp = _experiment(client, "rs-bench-ranks")
    ctx = mp.get_context("spawn")
    inboxes = [ctx.Queue() for _ in range(a.procs)]
    outbox = ctx.Queue()
    procs = [
        ctx.Process(target=_rank, args=(a.uri, a.batch_size, r, inboxes[r], outbox), daemon=True)
        for r in range(a.procs)
    ]
    for p in procs:
        p.start()
    rounds = []
    try:
        for shape in a.shapes.split(","):
            for total in [int(x) for x in a.points.split(",")]:
                if shape == "one":
                    rid = client.create_run(exp, run_name=f"all-ranks-{total}").info.run_id
                    runs = [rid] * a.procs
                else:
                    runs = [
                        client.create_run(exp, run_name=f"rank{r}-{total}").info.run_id
                        for r in range(a.procs)
                    ]
                per = total // a.procs
                for r, box in enumerate(inboxes):
                    box.put((runs[r], per))
                answers = [outbox.get(timeout=900) for _ in procs]
                failed = [x for x in answers if x != "ready"]
                for box in inboxes:
                    box.put("cancel" if failed else "go")
                if failed:
                    rounds.append({"shape": shape, "total": total, "errors": [failed[0]["error"]]})
                    continue
                t_start = time.time()
                results = [outbox.get(timeout=3600) for _ in procs]
                t_end = max(r["t1"] for r in results)
                pts = sum(r["points"] for r in results)
                rounds.append(
                    {
                        "shape": shape,
                        "total": total,
                        "points": pts,
                        "seconds": t_end - t_start,
                        "points_per_s": pts / (t_end - t_start),
                        "errors": [r["error"] for r in results if r["error"]],
                    }
                )
    finally:
        for box in inboxes:
            box.put(None)
        for p in procs:
            p.join(30)
    return {
        "rounds": rounds,
        "note": "sync log_batch: a call returns after the SQL commit, so points are queryable",
    }


# ------------------------------------------------------------------------ 2: log_metric cost
def call(a: argparse.Namespace) -> dict[str, Any]:
    """Per-call wall time of the fluent `mlflow.log_metric` (synchronous, the default)."""
    import mlflow

    mlflow.set_tracking_uri(a.uri)
    mlflow.set_experiment(f"rs-bench-call-{time.strftime('%H%M%S')}-{os.getpid()}")
    lat = []
    with mlflow.start_run():
        for i in range(5):
            mlflow.log_metric("warmup", float(i), step=i)
        for i in range(a.calls):
            t = time.perf_counter()
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
            lat.append((time.perf_counter() - t) * 1e6)
    return {"us": lat, "median_us": statistics.median(lat)}


# ------------------------------------------------------------------------ 3: freshness
def fresh(a: argparse.Namespace) -> dict[str, Any]:
    """log_metric (sync) -> the point is returned by get_metric_history."""
    client = _client(a.uri)
    exp = _experiment(client, "rs-bench-fresh")
    run = client.create_run(exp, run_name="fresh").info.run_id
    client.log_metric(run, "fresh", 0.0, step=0)
    out = []
    for i in range(1, a.samples + 1):
        value = i + random.random()
        t = time.perf_counter()
        client.log_metric(run, "fresh", value, step=i)
        while not any(m.value == value for m in client.get_metric_history(run, "fresh")[-3:]):
            time.sleep(0.002)
        out.append((time.perf_counter() - t) * 1e3)
    return {"ms": out}


# ------------------------------------------------------------------------ 4: series read
def history(a: argparse.Namespace) -> dict[str, Any]:
    """Log a --points series with log_batch, then read it whole and as a 1,000-point view."""
    import requests

    client = _client(a.uri)
    exp = _experiment(client, "rs-bench-history")
    points = int(a.points)
    run = client.create_run(exp, run_name=f"hist{points}").info.run_id
    rng = random.Random(1)
    t = time.perf_counter()
    done = 0
    while done < points:
        k = min(1000, points - done)
        client.log_batch(run, metrics=_batch("loss", done, k, rng))
        done += k
    log_s = time.perf_counter() - t
    full, got = [], 0
    for _ in range(a.repeats):
        t = time.perf_counter()
        got = len(client.get_metric_history(run, "loss"))
        full.append(time.perf_counter() - t)
    view, view_n = [], 0
    url = f"{a.uri}/api/2.0/mlflow/metrics/get-history-bulk-interval"
    params = {"run_ids": run, "metric_key": "loss", "max_results": 1000}
    with requests.Session() as s:
        for _ in range(a.repeats):
            t = time.perf_counter()
            r = s.get(url, params=params, timeout=600)
            r.raise_for_status()
            view_n = len(r.json().get("metrics", []))
            view.append(time.perf_counter() - t)
    return {"log_s": log_s, "full_s": full, "rows": got, "view_s": view, "view_rows": view_n}


# ------------------------------------------------------------------------ 5: search
def search(a: argparse.Namespace) -> dict[str, Any]:
    """--runs runs with loss/acc/params, then POST runs/search filter + order (plain HTTP)."""
    import requests
    from mlflow.entities import Metric, Param

    client = _client(a.uri)
    exp = _experiment(client, "rs-bench-search")
    rng = random.Random(5)

    def make(i: int) -> None:
        rid = client.create_run(exp, run_name=f"r{i}").info.run_id
        ts = _now_ms()
        client.log_batch(
            rid,
            metrics=[Metric("loss", rng.random(), ts, 0), Metric("acc", rng.random(), ts, 0)],
            params=[Param("lr", str(rng.choice([1e-3, 3e-4]))), Param("bs", "64")],
        )
        client.set_terminated(rid)

    t = time.perf_counter()
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(make, range(a.runs)))
    setup_s = time.perf_counter() - t
    body: dict[str, Any] = {
        "experiment_ids": [exp],
        "filter": "metrics.loss < 0.5",
        "order_by": ["metrics.loss ASC"],
        "max_results": 100,
    }
    rows = 0

    def searches() -> list[float]:
        nonlocal rows
        lat = []
        with requests.Session() as s:
            for _ in range(a.repeats + 1):  # +1: the first is reported alone
                t = time.perf_counter()
                r = s.post(f"{a.uri}/api/2.0/mlflow/runs/search", json=body, timeout=600)
                r.raise_for_status()
                rows = len(r.json().get("runs", []))
                lat.append(time.perf_counter() - t)
        return lat

    first, *now = searches()
    time.sleep(a.settle)
    settled = searches()[1:]
    return {"setup_s": setup_s, "first": first, "s": now, "s_settled": settled, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenario", choices=["ranks", "call", "fresh", "history", "search"])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--points", default="100000", help="ranks: comma list; else one int")
    ap.add_argument("--shapes", default="runs,one", help="ranks: runs (1 per rank), one")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=10.0, help="search: s before the 2nd set")
    a = ap.parse_args()
    out = globals()[a.scenario](a)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
