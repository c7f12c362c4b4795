"""Plain data carried between the consumer, the projection and the sinks (no I/O here)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SourceEvent:
    """One log record as read (Kafka or the S3 archive): position + original bytes."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Envelope:
    """The common first field of every event record; `run_id` is "" for run-less events."""

    event_id: str
    project: str
    experiment_id: str
    run_id: str
    producer_id: str
    seq: int
    occurred_at: int

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Envelope:
        env = rec["envelope"]
        return cls(
            event_id=str(env["event_id"]),
            project=str(env.get("project") or ""),
            experiment_id=str(env.get("experiment_id") or ""),
            run_id=str(env.get("run_id") or ""),
            producer_id=str(env.get("producer_id") or ""),
            seq=int(env.get("seq") or 0),
            occurred_at=epoch_ms(env.get("occurred_at")),
        )


@dataclass(frozen=True)
class Decoded:
    """A decoded event with its log position."""

    src: SourceEvent
    name: str
    record: dict[str, Any]
    env: Envelope

    @property
    def offset(self) -> int:
        return self.src.offset


@dataclass(frozen=True)
class Poison:
    """An event the projection could not take, with the reason sent to the DLQ."""

    src: SourceEvent
    error: str
    reason: str


@dataclass
class PartitionProgress:
    """Counters of one projected batch (feed the prometheus metrics)."""

    events: int = 0
    points: int = 0
    duplicates: int = 0
    rejected: int = 0
    poison: list[Poison] = field(default_factory=list)


#: |epoch ms| beyond this (±1e11 s, year 5138: the SDK's bound) is not a timestamp in ms; the
#: projection refuses it (DLQ, projection_failed) rather than store what readers cannot parse
MAX_ABS_EPOCH_MS = 100_000_000_000_000


def epoch_ms(value: Any) -> int:
    """Epoch milliseconds from an int (ms) or a datetime (fastavro's timestamp-millis)."""
    if value is None:
        return 0
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp() * 1000)
    return int(value)
