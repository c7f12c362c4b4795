"""A producer process for the stack tests and the benchmark: encoded events via aiokafka.

`python -m tests.processors.produce BOOTSTRAP TOPIC --producer N --runs r1,r2 --events E
--points P [--resend-every K] [--rate-events S]` prints one JSON line: what it produced
(points, exact value sums per run and key: values are multiples of 1/4, so float sums are
exact in any order).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer

import schemas

from .factory import Writer

KEYS = ["loss", "acc", "lr", "grad_norm"]


def build(
    producer: int, runs: list[str], events: int, points: int, seed: int = 0
) -> tuple[list[tuple[bytes, bytes]], dict[str, Any]]:
    """The (key, value) messages of one producer and the expected totals."""
    w = Writer(producer_id=f"rank-{producer}")
    rng = np.random.default_rng(seed * 1000 + producer)
    msgs: list[tuple[bytes, bytes]] = []
    expect: dict[str, Any] = {"points": 0, "sums": {}, "counts": {}}
    per_key = points // len(KEYS)
    for e in range(events):
        for run in runs:
            steps = np.arange(e * per_key, (e + 1) * per_key, dtype=np.int64)
            n = per_key * len(KEYS)
            values = rng.integers(0, 4000, n) / 4.0
            keys = np.tile(np.arange(len(KEYS)), per_key)
            rec = w.record(
                "MetricsLogged",
                run,
                **schemas.pack_points(
                    [KEYS[k] for k in keys],
                    values,
                    np.repeat(steps, len(KEYS)),
                    timestamps=np.full(n, w.clock, dtype=np.int64),
                    splits="train",
                ),
            )
            msgs.append((run.encode(), schemas.encode_record("MetricsLogged", rec)))
            expect["points"] += n
            for k in range(len(KEYS)):
                sk = f"{run}/{KEYS[k]}"
                expect["sums"][sk] = expect["sums"].get(sk, 0.0) + float(values[keys == k].sum())
                expect["counts"][sk] = expect["counts"].get(sk, 0) + int((keys == k).sum())
    return msgs, expect


async def send(
    bootstrap: str,
    topic: str,
    msgs: list[tuple[bytes, bytes]],
    resend_every: int = 0,
    rate: float = 0.0,
) -> None:
    prod = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        max_request_size=8 * 1024 * 1024,
        linger_ms=5,
    )
    await prod.start()
    try:
        futs = []
        for i, (key, value) in enumerate(msgs):
            futs.append(await prod.send(topic, value, key=key))
            if resend_every and i % resend_every == resend_every - 1:
                futs.append(await prod.send(topic, value, key=key))  # client resend
            if rate:
                await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*futs)
    finally:
        await prod.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("--producer", type=int, default=0)
    ap.add_argument("--runs", default="r1")
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--resend-every", type=int, default=0)
    ap.add_argument("--rate-events", type=float, default=0.0)
    a = ap.parse_args(argv)
    msgs, expect = build(a.producer, a.runs.split(","), a.events, a.points)
    t0 = time.perf_counter()
    asyncio.run(send(a.bootstrap, a.topic, msgs, a.resend_every, a.rate_events))
    expect["seconds"] = time.perf_counter() - t0
    expect["messages"] = len(msgs)
    sys.stdout.write(json.dumps(expect) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
