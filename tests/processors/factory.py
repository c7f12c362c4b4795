"""Test events built through `schemas` (never hand-written Avro): records, bytes, Decoded."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import schemas
from processors.codec import decode
from processors.model import Decoded, SourceEvent
from schemas.ids import new_event_id

_DEFAULTS: dict[str, dict[str, Any]] = {
    "ExperimentCreated": {"description": None, "tags": {}, "artifact_location": None},
    "RunCreated": {
        "description": None,
        "tags": {},
        "params": {},
        "parent_run_id": None,
        "fork_step": None,
        "cloned_from_run_id": None,
        "start_time": None,
    },
    "RunStatusChanged": {"reason": None},
    "ArtifactStored": {
        "sha256": "",
        "kind": "FILE",
        "content_type": "",
        "overwrite": False,
        "step": None,
        "metadata": {},
        "size": 1,
    },
    "DatasetLinked": {
        "kind": "DATASET",
        "version": None,
        "digest": None,
        "source_uri": None,
        "context": None,
        "metadata": {},
    },
    "ProducerJoined": {
        "host": "h",
        "pid": 1,
        "sdk_version": "0",
        "rank": None,
        "world_size": None,
        "python_version": None,
    },
}


@dataclass
class Writer:
    """One producer: envelopes with its producer_id and increasing seq."""

    project: str = "proj"
    experiment_id: str = "exp-1"
    producer_id: str = field(default_factory=lambda: "prod-" + new_event_id()[-8:])
    clock: int = 1_700_000_000_000
    _seq: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]

    def record(self, event: str, run_id: str | None, **fields: Any) -> dict[str, Any]:
        self.clock += 1
        env = {
            "event_id": new_event_id(),
            "experiment_id": self.experiment_id,
            "producer_id": self.producer_id,
            "seq": next(self._seq),
            "occurred_at": self.clock,
            "project": self.project,
            "run_id": None if event in schemas.EXPERIMENT_EVENTS else run_id,
            "user": None,
        }
        return {"envelope": env, **_DEFAULTS.get(event, {}), **fields}

    def metrics(
        self, run_id: str, steps: np.ndarray, keys: list[str], split: str = "train", seed: int = 0
    ) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        n = len(steps) * len(keys)
        key_col = np.tile(np.arange(len(keys)), len(steps))
        packed = schemas.pack_points(
            [keys[i] for i in key_col],
            rng.random(n),
            np.repeat(steps, len(keys)),
            timestamps=np.full(n, self.clock, dtype=np.int64),
            splits=split,
        )
        return self.record("MetricsLogged", run_id, **packed)


def encode(name: str, record: dict[str, Any]) -> bytes:
    return schemas.encode_record(name, record)


def key_of(record: dict[str, Any]) -> bytes:
    return schemas.partition_key(record)


def decoded(
    items: list[tuple[str, dict[str, Any]]], partition: int = 0, start: int = 0, topic: str = "t"
) -> list[Decoded]:
    """(name, record) pairs -> Decoded at consecutive offsets, through the real codec."""
    out = []
    for i, (name, rec) in enumerate(items):
        src = SourceEvent(
            topic, partition, start + i, 1_700_000_000_000 + i, key_of(rec), encode(name, rec)
        )
        out.append(decode(src))
    return out


def source(
    items: list[tuple[str, dict[str, Any]]], partition: int = 0, start: int = 0, topic: str = "t"
) -> list[SourceEvent]:
    return [
        SourceEvent(topic, partition, start + i, 1_700_000_000_000 + i, key_of(r), encode(n, r))
        for i, (n, r) in enumerate(items)
    ]
