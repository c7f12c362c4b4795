"""MetricsLogged codec throughput: pack + encode + decode + unpack, in points/s.

Run: ``python benchmarks/bench_codec.py`` (a benchmark, not a timed test; ~11 s, one core).

Each batch holds 10 keys x (n / 10) steps (1 point for n = 1), split "train", one timestamp
per point, no epoch. Every phase is timed separately (best of 5 repeats):

- pack:   `pack_points(keys, values, steps, timestamps=..., splits=...)` from Python lists
- encode: `encode_record("MetricsLogged", record)` incl. schema validation + column checks
- decode: `decode_record(bytes)` incl. header, fingerprint lookup and column checks
- unpack: `unpack_points(record)` to columns (key/split lists, numeric `array`s)

The layout decision (issue 3) was measured with this script BEFORE freezing v1; the
alternative is the same record with parallel Avro arrays (keys: array<string> per point,
steps/epochs/timestamps: array<long>, values: array<double>) encoded/decoded by fastavro.
Figures on the 2-core dev box shared with other jobs (load ~2.5; Python 3.11.7, fastavro
1.13.1), `.venv/bin/python benchmarks/bench_codec.py`:

    points  pack us  encode us  decode us  unpack us  total us  M points/s
         1      2.4       13.9       10.5        1.5      28.2        0.04
       100     12.1       15.8        9.3        3.5      40.8        2.45
      1000     61.5       27.3       12.0       17.4     118.2        8.46

    alternative layout (parallel Avro arrays, per-point strings), encode + decode only:
       100      148.6 us   0.67 M points/s
      1000     1099.6 us   0.91 M points/s

For 1,000 points, encode + decode is 39 us packed vs 1,100 us with parallel arrays (~28x),
and the whole path with pack and unpack stays ~9x faster, above the >= 5 M points/s goal
(three runs on this box: 7.5-8.5 M points/s under the load of other jobs). So MetricsLogged
v1 uses the packed layout. Small batches are dominated by per-message costs (validation,
envelope, header): the SDK should batch. Re-run and compare after changes.
"""

from __future__ import annotations

import io
import random
import sys
import timeit
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastavro import parse_schema, schemaless_reader, schemaless_writer  # noqa: E402

from schemas import (  # noqa: E402
    Envelope,
    decode_record,
    encode_record,
    new_event_id,
    pack_points,
    unpack_points,
    writer_schema,
)
from schemas.avsc import strip_logical_types  # noqa: E402

SIZES = (1, 100, 1000)
REPEATS = 5
TARGET_SECONDS = 0.15  # per repeat


def best_seconds(fn: Callable[[], Any]) -> float:
    """Best per-call time of `fn` over REPEATS repeats of an auto-sized loop."""
    number = 1
    while True:
        elapsed = timeit.timeit(fn, number=number)
        if elapsed >= TARGET_SECONDS / 4:
            break
        number *= 4
    number = max(1, int(number * TARGET_SECONDS / elapsed))
    return min(timeit.repeat(fn, number=number, repeat=REPEATS)) / number


def batch(n: int, rng: random.Random) -> tuple[list[str], list[float], list[int], list[int]]:
    keys = [f"train/metric_{i % 10}" for i in range(n)]
    values = [rng.random() for _ in range(n)]
    steps = [i // 10 for i in range(n)]
    timestamps = [1_700_000_000_000 + 100 * (i // 10) for i in range(n)]
    return keys, values, steps, timestamps


def envelope() -> dict[str, Any]:
    return Envelope(
        event_id=new_event_id(),
        experiment_id="exp-1",
        run_id="run-1",
        producer_id="producer-1",
        seq=42,
        occurred_at=1_700_000_000_000,
    ).to_record()


def measure_packed(n: int, rng: random.Random) -> dict[str, float]:
    keys, values, steps, timestamps = batch(n, rng)
    env = envelope()

    def pack() -> dict[str, Any]:
        return pack_points(keys, values, steps, timestamps=timestamps, splits="train")

    record = {"envelope": env, **pack()}
    data = encode_record("MetricsLogged", record)
    _, decoded = decode_record(data)
    columns = unpack_points(decoded)
    if list(columns.value) != values or list(columns.key) != keys:
        raise SystemExit("round trip mismatch")
    return {
        "pack": best_seconds(pack),
        "encode": best_seconds(lambda: encode_record("MetricsLogged", record)),
        "decode": best_seconds(lambda: decode_record(data)),
        "unpack": best_seconds(lambda: unpack_points(decoded)),
    }


def alternative_schema() -> Any:
    """MetricsLogged with parallel Avro arrays instead of packed columns (for comparison)."""
    envelope_schema = strip_logical_types(writer_schema("MetricsLogged")["fields"][0]["type"])
    return parse_schema(
        {
            "type": "record",
            "name": "MetricsLoggedArrays",
            "namespace": "bench",
            "fields": [
                {"name": "envelope", "type": envelope_schema},
                {"name": "keys", "type": {"type": "array", "items": "string"}},
                {"name": "splits", "type": {"type": "array", "items": "string"}},
                {"name": "steps", "type": {"type": "array", "items": "long"}},
                {"name": "epochs", "type": {"type": "array", "items": "long"}},
                {"name": "timestamps", "type": {"type": "array", "items": "long"}},
                {"name": "values", "type": {"type": "array", "items": "double"}},
            ],
        }
    )


def measure_arrays(n: int, rng: random.Random, schema: Any) -> float:
    keys, values, steps, timestamps = batch(n, rng)
    record = {
        "envelope": envelope(),
        "keys": keys,
        "splits": ["train"] * n,
        "steps": steps,
        "epochs": [-1] * n,
        "timestamps": timestamps,
        "values": values,
    }

    def round_trip() -> Any:
        out = io.BytesIO()
        schemaless_writer(out, schema, record)
        out.seek(0)
        return schemaless_reader(out, schema)

    return best_seconds(round_trip)


def main() -> None:
    rng = random.Random(7)
    print("MetricsLogged, packed columns (v1 layout)")
    print("points  pack us  encode us  decode us  unpack us  total us  M points/s")
    for n in SIZES:
        t = measure_packed(n, rng)
        total = sum(t.values())
        print(
            f"{n:6d} {t['pack'] * 1e6:8.1f} {t['encode'] * 1e6:10.1f} {t['decode'] * 1e6:10.1f}"
            f" {t['unpack'] * 1e6:10.1f} {total * 1e6:9.1f} {n / total / 1e6:11.2f}"
        )
    print()
    print("alternative layout (parallel Avro arrays, per-point strings), encode + decode only:")
    schema = alternative_schema()
    for n in SIZES[1:]:
        seconds = measure_arrays(n, rng, schema)
        print(f"{n:6d} {seconds * 1e6:10.1f} us {n / seconds / 1e6:6.2f} M points/s")


if __name__ == "__main__":
    main()
