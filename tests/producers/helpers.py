"""Shared helpers of the producer tests: read a topic back and decode it with schemas."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from producers.config import ClientConfig
from schemas import codec
from schemas.metrics import unpack_points


def kafka_config(bootstrap: str, topic: str, spool_dir: str, **kw: Any) -> ClientConfig:
    return ClientConfig(
        kafka_bootstrap=bootstrap, topic=topic, spool_dir=spool_dir, mode="kafka", **kw
    )


def consume(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every event of `topic` (all partitions, from the start to the current end), decoded."""

    async def run() -> list[bytes]:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            ends: dict[Any, int] | None = None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=300, max_records=10000)
                for msgs in batch.values():
                    got.extend(m.value for m in msgs if m.value is not None)
                parts = consumer.assignment()
                if parts and ends is None:
                    ends = await consumer.end_offsets(list(parts))
                if ends is not None:
                    positions = [await consumer.position(tp) for tp in ends]
                    if all(p >= e for p, e in zip(positions, ends.values())):
                        break
            else:
                raise AssertionError(f"topic {topic} not read to its end in {timeout} s")
            return got
        finally:
            await consumer.stop()

    return [codec.decode(b) for b in asyncio.run(run())]


def points(events: list[Any]) -> dict[tuple[str, int, int], tuple[str, str, int, float]]:
    """(producer_id, seq, index) -> (key, split, step, value) of every metric point.

    Fails when one identity appears twice with different content (a real duplicate of an
    event is the same bytes: the processors drop it on event_id)."""
    out: dict[tuple[str, int, int], tuple[str, str, int, float]] = {}
    for e in events:
        if type(e).__name__ != "MetricsLogged":
            continue
        cols = unpack_points(e)
        for p in cols.points():
            ident = (e.envelope.producer_id, e.envelope.seq, p.index)
            row = (p.key, p.split, p.step, p.value)
            if ident in out and out[ident] != row:
                raise AssertionError(f"{ident} carries two different points")
            out[ident] = row
    return out


def kinds(events: list[Any]) -> Counter[str]:
    return Counter(type(e).__name__ for e in events)


def unique_events(events: list[Any]) -> list[Any]:
    """Drop resent copies by event_id (what the processors do)."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e.envelope.event_id not in seen:
            seen.add(e.envelope.event_id)
            out.append(e)
    return out
