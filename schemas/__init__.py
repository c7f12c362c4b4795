"""Runstream event schemas: the one contract between the SDK, the processors and the API.

Rule: the `.avsc` files in `schemas/avro/` are the only hand-written definition of the events;
the typed classes (`schemas.events`) are generated from them, the wire format is Avro
single-object encoding, and every released version is frozen under `schemas/versions/`.
Imports nothing of ours; its only runtime dependency is fastavro.

Typical use::

    from schemas import Envelope, RunRenamed, encode, decode, new_event_id, partition_key

    event = RunRenamed(envelope=Envelope(event_id=new_event_id(), experiment_id="e1",
                       run_id="r1", producer_id="p1", seq=0, occurred_at=1700000000000),
                       name="baseline")
    producer.send(EVENTS_TOPIC, key=partition_key(event), value=encode(event))
    assert decode(encode(event)) == event
"""

from __future__ import annotations

from .codec import (
    DLQ_TOPIC,
    EVENTS_TOPIC,
    EXPERIMENT_EVENTS,
    HEADER_SIZE,
    MAGIC,
    decode,
    decode_record,
    encode,
    encode_record,
    fingerprint,
    partition_key,
    writer_schema,
)
from .errors import IncompatibleSchema, InvalidEvent, SchemaError, UndecodableEvent
from .events import (
    EVENT_TYPES,
    AlertLevel,
    AlertTriggered,
    ArtifactDeleted,
    ArtifactKind,
    ArtifactStored,
    AttributesLogged,
    ClassificationMetricsLogged,
    CodeCaptured,
    ConsoleLogged,
    ConsoleStream,
    DatasetLinked,
    Envelope,
    EnvironmentCaptured,
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagsRemoved,
    ExperimentTagsSet,
    LineageDirection,
    LineageKind,
    MetricsLogged,
    ParamsLogged,
    ProducerExited,
    ProducerJoined,
    RunCreated,
    RunDeleted,
    RunNoteSet,
    RunRenamed,
    RunRestored,
    RunStatus,
    RunStatusChanged,
    TagsRemoved,
    TagsSet,
)
from .ids import new_event_id, uuid7_time_ms
from .metrics import (
    NO_EPOCH,
    MetricArrays,
    MetricColumns,
    MetricPoint,
    pack_points,
    unpack_points,
    unpack_points_numpy,
)

__all__ = [
    "DLQ_TOPIC",
    "EVENTS_TOPIC",
    "EVENT_TYPES",
    "EXPERIMENT_EVENTS",
    "HEADER_SIZE",
    "MAGIC",
    "NO_EPOCH",
    "AlertLevel",
    "AlertTriggered",
    "ArtifactDeleted",
    "ArtifactKind",
    "ArtifactStored",
    "AttributesLogged",
    "ClassificationMetricsLogged",
    "CodeCaptured",
    "ConsoleLogged",
    "ConsoleStream",
    "DatasetLinked",
    "Envelope",
    "EnvironmentCaptured",
    "Event",
    "ExperimentCreated",
    "ExperimentDeleted",
    "ExperimentRenamed",
    "ExperimentRestored",
    "ExperimentTagsRemoved",
    "ExperimentTagsSet",
    "IncompatibleSchema",
    "InvalidEvent",
    "LineageDirection",
    "LineageKind",
    "MetricArrays",
    "MetricColumns",
    "MetricPoint",
    "MetricsLogged",
    "ParamsLogged",
    "ProducerExited",
    "ProducerJoined",
    "RunCreated",
    "RunDeleted",
    "RunNoteSet",
    "RunRenamed",
    "RunRestored",
    "RunStatus",
    "RunStatusChanged",
    "SchemaError",
    "TagsRemoved",
    "TagsSet",
    "UndecodableEvent",
    "decode",
    "decode_record",
    "encode",
    "encode_record",
    "fingerprint",
    "new_event_id",
    "pack_points",
    "partition_key",
    "unpack_points",
    "unpack_points_numpy",
    "uuid7_time_ms",
    "writer_schema",
]
