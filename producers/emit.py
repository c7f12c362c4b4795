"""Building and encoding events for one producer; the only module that names schemas' codec.

Rule: events other than metric batches are built and encoded at the call site (so a
contract violation is raised there, naming the field); metric batches are packed and encoded
by the sealer. Envelopes get their `seq` under the engine lock, in the order items enter the
pending list, so the spool order is the seq order.
"""

from __future__ import annotations

import importlib.metadata
import time
import uuid
from typing import Any

from producers.columns import Columns, KeyTable, pack
from producers.engine import Encoded, Engine
from schemas import codec
from schemas import events as ev
from schemas.ids import new_event_id


def _sdk_version() -> str:
    try:
        return importlib.metadata.version("runstream")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


SDK_VERSION = _sdk_version()

EXPERIMENT_NAMESPACE = uuid.UUID("6f0c1d2e-7a3b-5c4d-8e9f-0a1b2c3d4e5f")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def experiment_id_for(project: str, name: str) -> str:
    """Deterministic experiment id: the same (project, name) gives the same id everywhere.

    So two offline processes creating experiment "x" emit ExperimentCreated events with the
    same id; the processors keep the first by log order and nothing needs remapping.
    """
    return str(uuid.uuid5(EXPERIMENT_NAMESPACE, f"{project}\x00{name}"))


def encode_event(event: Any) -> Encoded:
    """(partition key, Avro single-object bytes) of an event, via the schemas codec."""
    return Encoded(codec.partition_key(event), codec.encode(event))


class Emitter:
    """Stamps envelopes for one run (experiment, run, project, producer) on one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        project: str,
        experiment_id: str,
        run_id: str,
        user: str | None = None,
    ) -> None:
        self.engine = engine
        self.project = project
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.user = user

    def envelope(
        self, seq: int, occurred_at: int | None = None, *, run_id: bool = True
    ) -> ev.Envelope:
        """An envelope for the next event; run_id=False for experiment-level events."""
        return ev.Envelope(
            event_id=new_event_id(),
            experiment_id=self.experiment_id,
            producer_id=self.engine.producer_id,
            seq=seq,
            occurred_at=now_ms() if occurred_at is None else occurred_at,
            project=self.project,
            run_id=self.run_id if run_id else None,
            user=self.user,
        )


class MetricBatch:
    """A closed batch of one run's points, waiting for the sealer to pack and encode it."""

    __slots__ = ("cols", "table", "envelope")

    def __init__(self, cols: Columns, table: KeyTable, envelope: ev.Envelope) -> None:
        self.cols = cols
        self.table = table
        self.envelope = envelope

    def encode(self) -> tuple[bytes, bytes]:
        event = ev.MetricsLogged(envelope=self.envelope, **pack(self.cols, self.table))
        enc = encode_event(event)
        return enc.key, enc.payload
