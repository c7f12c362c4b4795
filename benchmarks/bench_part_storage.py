"""Small batches' commit time with full and with packed part storage, side by side.

    .venv/bin/python -m benchmarks.bench_part_storage [--batches 60] [--sizes 1,100]

One chDB opened as `runstream serve` opens it, two databases migrated alike, then one set
back to full part storage (`min_bytes_for_full_part_storage = 0`, ClickHouse's default) and
the other left as `processors.migrate` leaves it (packed below `PACKED_PART_BYTES`). Batches
of SDK-shaped MetricsLogged events (12 points each, 8 runs) are committed through
`BatchProcessor` (decode, state, project, intent, every table insert, done), alternating the
databases batch by batch so that both see the same host. Prints the median and p90 of the
table inserts (`sink`) and of the whole commit per batch size, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_processors import events  # noqa: E402
from processors.cli import clickhouse_client  # noqa: E402
from processors.migrate import PACKED_PART_BYTES, migrate, pack_small_parts  # noqa: E402
from processors.pipeline import BatchProcessor  # noqa: E402
from processors.sink import ClickHouseSink  # noqa: E402

MODES = {"full": 0, "packed": PACKED_PART_BYTES}


def _p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=60, help="batches per size and mode")
    ap.add_argument("--sizes", default="1,100", help="events per batch, comma-separated")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        client = clickhouse_client(chdb_path=str(Path(tmp) / "chdb"))
        procs = {}
        for mode, threshold in MODES.items():
            migrate(client, mode)
            pack_small_parts(client, mode, threshold)
            procs[mode] = BatchProcessor(ClickHouseSink(client, mode))
        for part, size in enumerate(sizes):  # a partition per size: each log starts at 0
            srcs = events(12 * size * (a.batches + 1), 12)
            sink: dict[str, list[float]] = {m: [] for m in MODES}
            commit: dict[str, list[float]] = {m: [] for m in MODES}
            offset = {m: 0 for m in MODES}  # each database continues its own log
            for i in range(a.batches + 1):
                for mode in MODES if i % 2 else reversed(MODES):
                    o = offset[mode]
                    batch = procs[mode].prepare("bench", part, srcs[o : o + size])
                    offset[mode] = o + size
                    assert batch is not None
                    t = time.perf_counter()
                    s = asyncio.run(procs[mode].commit(batch))
                    if i:  # the first batch of each size warms caches
                        sink[mode].append(s * 1000)
                        commit[mode].append((time.perf_counter() - t) * 1000)
            for mode in MODES:
                key = f"{size}_events_{mode}"
                out[key] = {
                    "sink_ms_median": statistics.median(sink[mode]),
                    "sink_ms_p90": _p90(sink[mode]),
                    "commit_ms_median": statistics.median(commit[mode]),
                    "commit_ms_p90": _p90(commit[mode]),
                }
                print(
                    f"{size:>5} events/batch {mode:>6}: table inserts median"
                    f" {out[key]['sink_ms_median']:6.1f} ms (p90 {out[key]['sink_ms_p90']:6.1f}),"
                    f" commit median {out[key]['commit_ms_median']:6.1f} ms"
                    f" (p90 {out[key]['commit_ms_p90']:6.1f})"
                )
        client.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
