"""The Runstream half of `python -m benchmarks`: SDK -> Kafka -> `runstream serve` -> API.

Every figure ends at the query API: a point counts once the API returns it. The SDK's
configuration comes from the RUNSTREAM_* environment the suite sets from the stack's
Connection (inherited by the rank processes).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.servers import REPO, RssSampler, cpu_seconds, proc_status_kb, reset_peak

ARROW = "application/vnd.apache.arrow.stream"
QUIET: dict[str, Any] = {"capture_code": False, "capture_environment": False}


def api_client(api: str) -> httpx.Client:
    return httpx.Client(base_url=api, timeout=120)


def loss_points(http: httpx.Client, run_id: str, key: str = "loss") -> int:
    """Points of `key` (all splits) the API shows for the run; 0 while the run is unknown."""
    r = http.get(f"/api/v1/runs/{run_id}")
    if r.status_code == 404:
        return 0
    r.raise_for_status()
    return sum(int(m["count"]) for m in r.json()["run"]["metrics"] if m["key"] == key)


def wait_points(
    http: httpx.Client,
    run_ids: list[str],
    total: int,
    timeout: float,
    poll: float = 0.1,
    stall: float = 60.0,
) -> float:
    """Block until the runs' `loss` counts sum to `total`; returns time.time() at that moment."""
    deadline = time.monotonic() + timeout
    seen = last = 0
    moved = time.monotonic()
    pending = dict.fromkeys(run_ids, 0)
    while time.monotonic() < deadline:
        for rid in list(pending):
            pending[rid] = loss_points(http, rid)
        seen = sum(pending.values())
        if seen >= total:
            return time.time()
        if seen != last:
            last, moved = seen, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise TimeoutError(
                f"stalled: {seen:,} of {total:,} points visible, none new in {stall:.0f}s"
            )
        time.sleep(poll)
    raise TimeoutError(f"only {seen:,} of {total:,} points visible after {timeout:.0f}s")


# ------------------------------------------------------------------------ 1 + 7: ranks
def _rank_loop(inbox: Any, outbox: Any) -> None:
    """One rank process, reused for every round: task -> start run -> "ready" -> "go" -> log."""
    import producers

    while True:
        task = inbox.get()
        if task is None:
            return
        if not isinstance(task, tuple):  # a "cancel"/"go" of a round this rank left early
            continue
        exp, run_id, rank, world, n, one = task
        try:
            run = producers.start_run(
                exp,
                name=f"rank{rank}" if not one else "all-ranks",
                run_id=run_id,
                rank=rank if one else None,
                world_size=world if one else None,
                **QUIET,
            )
            run.log_metric("warmup", 0.0, step=0)
            outbox.put("ready")
            if inbox.get() != "go":
                raise RuntimeError("round cancelled")
            t0, cpu0 = time.time(), time.process_time()
            lm = run.log_metric
            for step in range(n):
                lm("loss", step * 1e-6, step=step)
            t_logged = time.time()
            ok = run.end(timeout=900)
            cpu = time.process_time() - cpu0  # every thread: the loop AND the SDK's sender
            outbox.put(
                {
                    "t0": t0,
                    "logged": t_logged,
                    "ended": time.time(),
                    "cpu_s": cpu,
                    "ok": ok,
                    "err": None,
                }
            )
        except Exception as exc:  # reported, never hidden
            outbox.put(
                {
                    "t0": 0.0,
                    "logged": 0.0,
                    "ended": 0.0,
                    "cpu_s": 0.0,
                    "ok": False,
                    "err": repr(exc)[:300],
                }
            )


class RankPool:
    """`procs` spawned rank processes (imports paid once), driven round by round."""

    def __init__(self, procs: int) -> None:
        ctx = mp.get_context("spawn")
        self.procs = procs
        self.inboxes = [ctx.Queue() for _ in range(procs)]
        self.outbox = ctx.Queue()
        self.ps = [
            ctx.Process(target=_rank_loop, args=(self.inboxes[r], self.outbox), daemon=True)
            for r in range(procs)
        ]
        for p in self.ps:
            p.start()

    def close(self) -> None:
        for box in self.inboxes:
            box.put(None)
        for p in self.ps:
            p.join(30)
            if p.is_alive():
                p.terminate()

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.outbox.get(timeout=5)
            except queue.Empty:
                if not all(p.is_alive() for p in self.ps):
                    raise RuntimeError("a rank process died") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer from the ranks in {timeout:.0f}s") from None

    def ranks(
        self,
        api: str,
        serve_pid: int,
        total: int,
        one_run: bool,
        timeout: float,
        kafka_pid: int | None = None,
    ) -> dict[str, Any]:
        """The ranks log `total` points (one run per rank or ONE run); timed from the moment
        all ranks start until the API shows every point. Samples serve's RSS meanwhile, and
        counts the CPU seconds of the ranks, the serve process and the broker."""
        procs = self.procs
        exp = f"bench-ranks-{uuid.uuid4().hex[:6]}"
        tag = uuid.uuid4().hex[:10]
        run_ids = [f"bench-{tag}"] if one_run else [f"bench-{tag}-r{r}" for r in range(procs)]
        per = total // procs
        for r, box in enumerate(self.inboxes):
            box.put((exp, run_ids[0 if one_run else r], r, procs, per, one_run))
        hwm_reset = reset_peak(serve_pid)
        with api_client(api) as http, RssSampler(lambda: [serve_pid]) as rss:
            answers = [self._get(600) for _ in range(procs)]
            failed = [a for a in answers if a != "ready"]
            if failed:
                for box in self.inboxes:
                    box.put("cancel")
                for _ in range(procs - len(failed)):
                    self._get(60)
                raise RuntimeError(f"a rank failed while starting: {failed[0]['err']}")
            cpu0 = {n: cpu_seconds(p) for n, p in (("serve", serve_pid), ("kafka", kafka_pid)) if p}
            for box in self.inboxes:
                box.put("go")
            t_start = time.time()
            t_visible = wait_points(http, run_ids, per * procs, timeout)
            cpu = {
                n: cpu_seconds(p) - cpu0[n]
                for n, p in (("serve", serve_pid), ("kafka", kafka_pid))
                if p
            }
            results = [self._get(120) for _ in range(procs)]
        errs = [r["err"] for r in results if r["err"]]
        if errs:
            raise RuntimeError(f"{len(errs)} rank(s) failed: {errs[0]}")
        hwm = proc_status_kb(serve_pid, "VmHWM") or 0
        pts = per * procs
        wall = t_visible - t_start
        return {
            "points": pts,
            "seconds": wall,
            "points_per_s": pts / wall,
            "logged_s": max(r["logged"] for r in results) - t_start,
            "delivered_s": max(r["ended"] for r in results) - t_start,
            "all_delivered": all(r["ok"] for r in results),
            "serve_peak_rss_kb": max(rss.peak_kb, hwm if hwm_reset else 0),
            "serve_vmhwm_kb": hwm,
            "vmhwm_reset": hwm_reset,
            "cpu_s": {"ranks": sum(r["cpu_s"] for r in results), **cpu},
            "cores": os.cpu_count() or 1,
        }

    def backlog(self, rs: Any, total: int, timeout: float) -> dict[str, Any]:
        """The projection catching up, in one-machine mode: serve is stopped, the ranks log
        `total` points (one run per rank) into Kafka, then serve starts. Timed from its
        spawn until its projection position (`/api/v1/health`, one small query per poll,
        where polling each run's counts would cost serve ~40 requests/s) reaches the
        topic's end; then every point is checked through the API. Samples serve's RSS."""
        rs.stop_serve()
        boot = rs.conn.kafka_bootstrap
        base = end_offsets(boot)
        procs = self.procs
        exp = f"bench-backlog-{uuid.uuid4().hex[:6]}"
        tag = uuid.uuid4().hex[:10]
        run_ids = [f"bench-{tag}-r{r}" for r in range(procs)]
        per = total // procs
        for r, box in enumerate(self.inboxes):
            box.put((exp, run_ids[r], r, procs, per, False))
        answers = [self._get(600) for _ in range(procs)]
        if any(a != "ready" for a in answers):
            for box in self.inboxes:
                box.put("cancel")
            raise RuntimeError(f"a rank failed while starting: {answers}")
        for box in self.inboxes:
            box.put("go")
        results = [self._get(timeout) for _ in range(procs)]
        errs = [r["err"] for r in results if r["err"]]
        if errs or not all(r["ok"] for r in results):
            raise RuntimeError(f"ranks did not deliver everything to Kafka: {errs[:1]}")
        target = end_offsets(boot)
        t_spawn = time.time()
        rs.start_serve()  # returns once /health answers
        pid = rs.serve_pid
        t_first = None
        with api_client(rs.conn.api_url) as http, RssSampler(lambda: [pid]) as rss:
            t_health = time.time()
            cpu0 = cpu_seconds(pid)
            deadline = time.monotonic() + timeout
            while True:
                pos = http.get("/api/v1/health").json().get("projection_position", {})
                now = time.time()
                done = {p: int(pos.get(str(p), -1)) + 1 for p in target}
                if t_first is None and any(done[p] > base.get(p, 0) for p in target):
                    t_first = now
                if all(done[p] >= target[p] for p in target):
                    t_caught_up = now
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"projection at {done}, topic end {target}")
                time.sleep(0.05)
            cpu = cpu_seconds(pid) - cpu0
            seen = sum(loss_points(http, rid) for rid in run_ids)
        if seen != per * procs:
            raise RuntimeError(f"caught up, but the API shows {seen:,} of {per * procs:,} points")
        hwm = proc_status_kb(pid, "VmHWM") or 0
        pts = per * procs
        assert t_first is not None
        return {
            "points": pts,
            "seconds": t_caught_up - t_spawn,
            "points_per_s_incl_start": pts / (t_caught_up - t_spawn),
            "points_per_s": pts / max(t_caught_up - t_first, 1e-9),
            "start_s": t_health - t_spawn,
            "first_batch_s": t_first - t_spawn,
            "serve_peak_rss_kb": max(rss.peak_kb, hwm),
            "serve_cpu_s": cpu,
            "events": sum(target[p] - base.get(p, 0) for p in target),
        }


def end_offsets(bootstrap: str) -> dict[int, int]:
    """The events topic's end offset per partition."""
    import asyncio

    from processors.replay import end_offsets as ends
    from schemas.codec import EVENTS_TOPIC

    return asyncio.run(ends(bootstrap, EVENTS_TOPIC))


# ------------------------------------------------------------------------ 2: call cost
def call_cost(calls: int, batch: int = 10_000) -> list[float]:
    """Median-able per-call µs of Run.log_metric in this process (batches of `batch` calls)."""
    import producers

    run = producers.start_run(f"bench-call-{uuid.uuid4().hex[:6]}", **QUIET)
    lm = run.log_metric
    for i in range(batch):  # warm-up
        lm("warmup", 0.5, step=i)
    out = []
    step = 0
    for _ in range(max(1, calls // batch)):
        t = time.perf_counter()
        for _ in range(batch):
            lm("loss", 0.5, step=step)
            step += 1
        out.append((time.perf_counter() - t) / batch * 1e6)
    run.end(timeout=120)
    return out


# ------------------------------------------------------------------------ 3: freshness
def freshness(api: str, samples: int, timeout: float = 30.0) -> list[float]:
    """ms from log_metric() returning to the point being returned by the history endpoint."""
    import producers

    run = producers.start_run(f"bench-fresh-{uuid.uuid4().hex[:6]}", **QUIET)
    rid = run.id
    out = []
    with api_client(api) as http:

        def visible(step: int, value: float) -> bool:
            r = http.get(
                f"/api/v1/runs/{rid}/metrics/fresh/history", params={"start": step, "end": step}
            )
            if r.status_code == 404:
                return False
            r.raise_for_status()
            return any(p["value"] == value for p in r.json()["points"])

        for i in range(samples + 1):  # i == 0: warm-up (the run must exist first)
            value = i + random.random()
            t = time.perf_counter()
            run.log_metric("fresh", value, step=i)
            deadline = t + timeout
            while not visible(i, value):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"point {i} not visible after {timeout:.0f}s")
                time.sleep(0.002)
            if i:
                out.append((time.perf_counter() - t) * 1e3)
    run.end(timeout=30)
    return out


# ------------------------------------------------------------------------ 4: series read
def series(api: str, points: int, repeats: int, timeout: float) -> dict[str, Any]:
    """Log one `points`-long series, wait until visible, then read it whole (Arrow) and as a
    1,000-bucket view, `repeats` times each."""
    import pyarrow.ipc as ipc

    import producers

    run = producers.start_run(f"bench-series-{uuid.uuid4().hex[:6]}", **QUIET)
    rid = run.id
    lm = run.log_metric
    t0 = time.time()
    for step in range(points):
        lm("loss", 1.0 / (step + 1), step=step)
    run.end(timeout=600)
    full, view = [], []
    rows = buckets = counted = 0
    with api_client(api) as http:
        visible_s = wait_points(http, [rid], points, timeout, poll=0.2) - t0
        for _ in range(repeats):
            t = time.perf_counter()
            r = http.get(f"/api/v1/runs/{rid}/metrics/loss/history", headers={"Accept": ARROW})
            r.raise_for_status()
            rows = ipc.open_stream(r.content).read_all().num_rows
            full.append(time.perf_counter() - t)
        for _ in range(repeats):
            t = time.perf_counter()
            r = http.get(f"/api/v1/runs/{rid}/metrics/loss/buckets", params={"n": 1000})
            r.raise_for_status()
            got = r.json()["buckets"]
            view.append(time.perf_counter() - t)
            buckets, counted = len(got), sum(int(b["count"]) for b in got)
    if rows != points:
        raise RuntimeError(f"Arrow history returned {rows:,} rows, expected {points:,}")
    if counted != points:
        raise RuntimeError(f"buckets count {counted:,} points, expected {points:,}")
    return {"full_s": full, "view_s": view, "buckets": buckets, "visible_s": visible_s}


# ------------------------------------------------------------------------ 5: search
SEARCH = {"filter": "metrics.loss < 0.5", "order_by": ["metrics.loss ASC"], "max_results": 100}
#: scenario 5 searches again this long after the runs became visible (both servers)
SETTLE_S = 10.0


BULK_ABOVE = 1000  # more runs than this are produced in bulk (`bulk_runs`), not via the SDK
BULK_BATCH = 5000  # events per KafkaTransport.send


def bulk_runs(exp: str, runs: int, seed: int = 5) -> tuple[str, list[str]]:
    """`runs` finished runs of experiment `exp` (params lr/bs, loss and acc at step 0),
    produced straight to Kafka: the events 3 SDK calls per run emit (ExperimentCreated once,
    then per run RunCreated, ProducerJoined, RunStatusChanged RUNNING, MetricsLogged,
    ProducerExited, RunStatusChanged FINISHED), encoded with the schemas codec and sent
    through the SDK's KafkaTransport in batches, without a run object each. (The full set
    also keeps a projection batch of 20,000 records at ~3,300 distinct runs: far fewer
    events per run made the sink's run-id list exceed ClickHouse's max_query_size.)
    Returns (experiment id, run ids)."""
    import asyncio
    import socket

    from producers.config import ClientConfig
    from producers.emit import SDK_VERSION, encode_event, experiment_id_for, now_ms
    from producers.spool import Position, Record
    from producers.transport import KafkaTransport
    from schemas import events as ev
    from schemas.ids import new_event_id
    from schemas.metrics import pack_points

    cfg = ClientConfig.from_env()
    if not cfg.kafka_bootstrap:
        raise RuntimeError("RUNSTREAM_KAFKA_BOOTSTRAP is not set")
    exp_id = experiment_id_for(cfg.project, exp)
    producer_id = f"bench-bulk-{uuid.uuid4().hex[:8]}"
    rng = random.Random(seed)
    seq = 0
    at = Position(0, 0)
    host, pid = socket.gethostname(), os.getpid()

    def envelope(run_id: str | None) -> ev.Envelope:
        nonlocal seq
        seq += 1
        return ev.Envelope(
            event_id=new_event_id(),
            experiment_id=exp_id,
            producer_id=producer_id,
            seq=seq,
            occurred_at=now_ms(),
            project=cfg.project,
            run_id=run_id,
        )

    def record(event: Any) -> Record:
        enc = encode_event(event)
        return Record(enc.key, enc.payload, at)

    ids: list[str] = []

    async def produce() -> None:
        transport = KafkaTransport(cfg.kafka_bootstrap or "", cfg.topic, linger_ms=20)
        await transport.start()
        try:
            batch = [record(ev.ExperimentCreated(envelope=envelope(None), name=exp))]
            for i in range(runs):
                run_id = new_event_id()
                ids.append(run_id)
                params = {"lr": str(rng.choice([1e-3, 3e-4])), "bs": "64"}
                t = now_ms()
                points = pack_points(
                    ["loss", "acc"], [rng.random(), rng.random()], [0, 0], timestamps=[t, t]
                )
                finished = ev.RunStatus.FINISHED
                batch += [
                    record(e)
                    for e in (
                        ev.RunCreated(
                            envelope=envelope(run_id), name=f"r{i}", params=params, start_time=t
                        ),
                        ev.ProducerJoined(
                            envelope=envelope(run_id), host=host, pid=pid, sdk_version=SDK_VERSION
                        ),
                        ev.RunStatusChanged(envelope=envelope(run_id), status=ev.RunStatus.RUNNING),
                        ev.MetricsLogged(envelope=envelope(run_id), **points),
                        ev.ProducerExited(envelope=envelope(run_id), status=finished),
                        ev.RunStatusChanged(envelope=envelope(run_id), status=finished),
                    )
                ]
                if len(batch) >= BULK_BATCH:
                    await transport.send(batch)
                    batch = []
            if batch:
                await transport.send(batch)
        finally:
            await transport.close()

    asyncio.run(produce())
    return exp_id, ids


def _sdk_runs(exp: str, runs: int, budget: float | None) -> tuple[list[str], int]:
    """`runs` runs through the SDK (3 calls each); with `budget` (s), creating runs stops
    when it is spent. Returns (run ids, runs created)."""
    import producers

    rng = random.Random(5)
    t = time.perf_counter()
    # an open run elsewhere keeps the SDK's engine alive between the runs below (the last
    # run to end closes it); ending it at the end waits until every event is delivered
    anchor = producers.start_run(f"{exp}-anchor", **QUIET)
    ids: list[str] = []
    for i in range(runs):
        run = producers.start_run(
            exp, name=f"r{i}", params={"lr": rng.choice([1e-3, 3e-4]), "bs": 64}, **QUIET
        )
        run.log_metrics({"loss": rng.random(), "acc": rng.random()}, step=0)
        run.end(timeout=0)
        ids.append(run.id)
        if budget is not None and time.perf_counter() - t > budget:
            runs = i + 1
            break
    if not anchor.end(timeout=600):
        raise TimeoutError("the search runs were not delivered to Kafka within 600 s")
    return ids, runs


def runs_with_loss(http: httpx.Client, exp_id: str) -> int:
    """How many runs of the experiment show a loss summary (one aggregate query)."""
    r = http.post(
        "/api/v1/analytics/aggregate",
        json={
            "experiment_ids": [exp_id],
            "metric": "loss",
            "aggregates": ["count"],
            "group_by": [],
        },
    )
    r.raise_for_status()
    rows = r.json()["rows"]
    return int(rows[0]["count"]) if rows else 0


def search(
    api: str,
    runs: int,
    repeats: int,
    timeout: float,
    budget: float | None = None,
    settle: float = SETTLE_S,
) -> dict[str, Any]:
    """`runs` runs (loss, acc, 2 params) in a fresh experiment, then the filtered search:
    `repeats` times as soon as every run is visible ("s", after one more: "first", the
    first search of these runs, before the API holds any of their results), and again
    `settle` seconds later ("s_settled": the server's work after a load, such as search
    documents and merges, done).

    Up to BULK_ABOVE runs go through the SDK (3 calls per run); more are produced in bulk
    (`bulk_runs`). With `budget` (s), SDK run creation stops when it is spent: the search
    then runs over the runs created (returned as "runs"). Visibility = a count query until
    every run shows its loss."""
    exp = f"bench-search-{uuid.uuid4().hex[:6]}"
    t = time.perf_counter()
    if runs > BULK_ABOVE:
        exp_id, ids = bulk_runs(exp, runs)
    else:
        ids, runs = _sdk_runs(exp, runs, budget)
        exp_id = ""
    logged_s = time.perf_counter() - t
    with api_client(api) as http:
        deadline = time.monotonic() + timeout
        if not exp_id:
            r = http.get(f"/api/v1/runs/{ids[0]}")
            while r.status_code == 404 and time.monotonic() < deadline:
                time.sleep(0.2)
                r = http.get(f"/api/v1/runs/{ids[0]}")
            r.raise_for_status()
            exp_id = r.json()["run"]["experiment_id"]
        seen = runs_with_loss(http, exp_id)
        while seen < runs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen:,} of {runs:,} runs visible after {timeout:.0f}s")
            time.sleep(0.5)
            seen = runs_with_loss(http, exp_id)
        visible_s = time.perf_counter() - t
        rows = 0

        def searches() -> list[float]:
            nonlocal rows
            lat = []
            for _ in range(repeats + 1):  # +1: the first is reported alone
                t1 = time.perf_counter()
                r = http.post("/api/v1/runs/search", json={"experiment_ids": [exp_id], **SEARCH})
                r.raise_for_status()
                rows = len(r.json()["runs"])
                lat.append(time.perf_counter() - t1)
            return lat

        first, *now = searches()
        time.sleep(settle)
        settled = searches()[1:]
    return {
        "first": first,
        "s": now,
        "s_settled": settled,
        "settle_s": settle,
        "rows": rows,
        "runs": runs,
        "logged_s": logged_s,
        "visible_s": visible_s,
    }


# ------------------------------------------------------------------------ 6: replay
REPLAY_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from processors.cli import clickhouse_client
from processors.replay import replay
client = clickhouse_client(sys.argv[2])
t = time.perf_counter()
res = replay(client, database="runstream", bootstrap=sys.argv[3], switch=False)
secs = time.perf_counter() - t
pts = client.query(f"SELECT count() FROM {res.database}.metric_points").result_rows[0][0]
print(json.dumps({"seconds": secs, "events": res.events, "points": int(pts),
                  "completed": res.completed, "database": res.database}))
"""


def replay_available() -> bool:
    return (REPO / "processors" / "replay.py").exists()


def replay(rs: Any, timeout: float) -> dict[str, Any]:
    """Stop serve (chDB has one owner), replay the whole topic into a fresh versioned
    database without switching reads, count the points it holds."""
    rs.stop_serve()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            REPLAY_SCRIPT,
            str(REPO),
            rs.conn.clickhouse_url,
            rs.conn.kafka_bootstrap,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        cwd=str(Path(REPO)),
    )
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit {out.returncode}")
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if not res["completed"]:
        raise RuntimeError("replay stopped before catching up")
    res["points_per_s"] = res["points"] / res["seconds"]
    return res
