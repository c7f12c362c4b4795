"""Where `runstream serve`'s memory goes while 8 ranks log live: one scenario-1 round on a
fresh local stack, with serve's RSS (anonymous / file) and its /metrics memory gauges
(`runstream_heap_bytes`, `runstream_chdb_*`) sampled every 0.5 s.

    .venv/bin/python benchmarks/serve_memory.py [--points 10000000] [--json out.json]

Prints the peak and a timeline; the stack is the benchmark's (`.runstream/bench`), stopped
afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import rs_side, servers  # noqa: E402

MB = 2**20
GAUGES = {
    "heap in use": 'runstream_heap_bytes{kind="in_use"}',
    "heap free": 'runstream_heap_bytes{kind="free"}',
    "arrow": 'runstream_heap_bytes{kind="arrow_allocated"}',
    "chdb resident": 'runstream_chdb_jemalloc_bytes{kind="resident"}',
    "chdb allocated": 'runstream_chdb_jemalloc_bytes{kind="allocated"}',
    "chdb tracked": "runstream_chdb_memory_tracked_bytes",
}


def sample(api: str, pid: int, out: list[dict[str, Any]], stop: threading.Event) -> None:
    import httpx

    with httpx.Client(base_url=api, timeout=10) as http:
        while not stop.is_set():
            row: dict[str, Any] = {"t": time.time()}
            for field in ("VmRSS", "RssAnon", "RssFile"):
                row[field] = (servers.proc_status_kb(pid, field) or 0) * 1024
            for line in http.get("/metrics").text.splitlines():
                if line.startswith(("runstream_heap_bytes", "runstream_chdb_")):
                    name, value = line.rsplit(" ", 1)
                    row[name] = float(value)
            out.append(row)
            time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10_000_000)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    rs = servers.runstream_up(print, fresh=True)
    os.environ.update(rs.conn.env())
    os.environ["RUNSTREAM_HOME"] = str(servers.RS_HOME)
    rows: list[dict[str, Any]] = []
    stop = threading.Event()
    sampler = threading.Thread(
        target=sample, args=(rs.conn.api_url, rs.serve_pid, rows, stop), daemon=True
    )
    sampler.start()
    try:
        with rs_side.RankPool(8) as pool:
            r = pool.ranks(
                rs.conn.api_url, rs.serve_pid, a.points, False, 900, kafka_pid=rs.kafka_pid
            )
        time.sleep(3)
    finally:
        stop.set()
        sampler.join()
        rs.stop_serve()
        rs.stack.down()
    print(
        f"{a.points:,} points: {r['points_per_s']:,.0f} points/s, serve VmHWM "
        f"{r['serve_vmhwm_kb'] / 1024:,.0f} MB"
    )
    peak = max(rows, key=lambda row: row["VmRSS"])
    print(
        "sampled peak: "
        + ", ".join(
            f"{k} {peak.get(v, 0) / MB:,.0f} MB"
            for k, v in {"RSS": "VmRSS", "anon": "RssAnon", **GAUGES}.items()
        )
    )
    t0 = rows[0]["t"]
    for row in rows[::4]:
        cells = " ".join(f"{k}={row.get(v, 0) / MB:,.0f}" for k, v in GAUGES.items())
        rss, anon = row["VmRSS"] / MB, row["RssAnon"] / MB
        print(f"{row['t'] - t0:6.1f}s RSS={rss:,.0f} anon={anon:,.0f} {cells}")
    if a.json:
        a.json.write_text(json.dumps({"round": r, "samples": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
