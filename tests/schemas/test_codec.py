"""Round trips, the wire header, the typed classes and the public API."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

import schemas
from schemas import (
    DLQ_TOPIC,
    EVENT_TYPES,
    EVENTS_TOPIC,
    EXPERIMENT_EVENTS,
    ArtifactKind,
    ArtifactStored,
    Envelope,
    ExperimentCreated,
    MetricsLogged,
    RunCreated,
    RunStatus,
    RunStatusChanged,
    decode,
    decode_record,
    encode,
    encode_record,
    fingerprint,
    new_event_id,
    pack_points,
    partition_key,
    uuid7_time_ms,
    writer_schema,
)
from schemas.avsc import AVRO_DIR, canonical_fingerprint, load_current

from .conftest import EXAMPLE_IDS, EXAMPLES, make_envelope


@pytest.mark.parametrize(("label", "name", "index", "record"), EXAMPLES, ids=EXAMPLE_IDS)
def test_every_example_round_trips(
    label: str, name: str, index: int, record: dict[str, Any]
) -> None:
    data = encode_record(name, record)
    decoded_name, decoded = decode_record(data)
    assert decoded_name == name
    event = decode(data)
    assert type(event) is EVENT_TYPES[name]
    assert encode(event) == data, "typed re-encode must give the same bytes"
    if label == "v1":  # written by the current schema: the record comes back unchanged
        assert decoded == record


def test_every_event_type_has_examples(versions: Any) -> None:
    assert set(versions[-1].examples) == set(EVENT_TYPES)


def test_event_types_are_the_avsc_files() -> None:
    names = {p.stem for p in AVRO_DIR.glob("*.avsc")} - {"Envelope", "RunStatus"}
    assert set(EVENT_TYPES) == names
    for name, cls in EVENT_TYPES.items():
        assert name == cls.NAME
        assert writer_schema(name)["fields"][0]["name"] == "envelope"


def test_header_is_single_object_encoding(envelope: Envelope) -> None:
    data = encode(RunStatusChanged(envelope=envelope, status=RunStatus.RUNNING))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == fingerprint("RunStatusChanged")
    assert data[2:10] == canonical_fingerprint(writer_schema("RunStatusChanged"))


def test_fingerprints_identify_event_types() -> None:
    prints = {fingerprint(name) for name in EVENT_TYPES}
    assert len(prints) == len(EVENT_TYPES)
    assert all(len(p) == 8 for p in prints)


def test_writer_schemas_are_self_contained_and_keep_logical_types() -> None:
    schema = writer_schema("MetricsLogged")
    envelope = schema["fields"][0]["type"]
    assert envelope["name"] == "Envelope"
    assert envelope["namespace"] == "runstream.events"
    fields = {f["name"]: f["type"] for f in envelope["fields"]}
    assert fields["occurred_at"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["event_id"] == {"type": "string", "logicalType": "uuid"}
    assert json.loads(json.dumps(load_current())) == load_current()


def test_timestamps_stay_int_milliseconds(envelope: Envelope) -> None:
    event = decode(encode(RunCreated(envelope=envelope, name="r", start_time=1_767_225_600_123)))
    assert isinstance(event, RunCreated)
    assert event.envelope.occurred_at == envelope.occurred_at
    assert type(event.envelope.occurred_at) is int
    assert type(event.start_time) is int
    assert event.start_time == 1_767_225_600_123
    assert type(event.envelope.event_id) is str


def test_typed_round_trip_keeps_enums_and_defaults(envelope: Envelope) -> None:
    event = ArtifactStored(
        envelope=envelope,
        key="model.pt",
        uri="s3://b/model.pt",
        size=3,
        sha256="0" * 64,
        kind=ArtifactKind.MODEL,
    )
    back = decode(encode(event))
    assert back == event
    assert isinstance(back, ArtifactStored)
    assert back.kind is ArtifactKind.MODEL
    assert back.content_type == "application/octet-stream"
    assert back.metadata == {}
    assert back.overwrite is False


def test_events_are_frozen(envelope: Envelope) -> None:
    event = RunStatusChanged(envelope=envelope, status=RunStatus.KILLED)
    with pytest.raises(AttributeError):
        event.status = RunStatus.RUNNING  # type: ignore[misc]


def test_plain_strings_work_for_enums_in_records(envelope: Envelope) -> None:
    record = {"envelope": envelope.to_record(), "status": "FINISHED", "reason": None}
    assert decode_record(encode_record("RunStatusChanged", record)) == ("RunStatusChanged", record)


def test_metrics_event_round_trip(envelope: Envelope) -> None:
    columns = pack_points(["a", "b"], [1.0, float("inf")], [1, 2], timestamps=5, splits="val")
    event = MetricsLogged(envelope=envelope, **columns)
    assert decode(encode(event)) == event


def test_partition_key_is_run_or_experiment(envelope: Envelope) -> None:
    run_event = RunStatusChanged(envelope=envelope, status=RunStatus.RUNNING)
    assert partition_key(run_event) == b"run-1"
    assert partition_key(run_event.to_record()) == b"run-1"
    exp_event = ExperimentCreated(envelope=make_envelope(run_id=None), name="e")
    assert partition_key(exp_event) == b"exp-1"
    assert partition_key(exp_event.to_record()) == b"exp-1"
    assert all(name.startswith("Experiment") for name in EXPERIMENT_EVENTS)
    assert {n for n in EVENT_TYPES if n.startswith("Experiment")} == EXPERIMENT_EVENTS


def test_topics() -> None:
    assert EVENTS_TOPIC == "runstream.events.v1"
    assert DLQ_TOPIC == "runstream.events.v1.dlq"


def test_new_event_id_is_uuid7_and_monotonic() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for text in ids[:100]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    import time

    assert abs(uuid7_time_ms(ids[-1]) - time.time() * 1000) < 60_000


def test_public_api_is_pinned() -> None:
    assert sorted(schemas.__all__) == sorted(
        [
            "DLQ_TOPIC", "EVENTS_TOPIC", "EVENT_TYPES", "EXPERIMENT_EVENTS", "HEADER_SIZE",
            "MAGIC", "NO_EPOCH", "AlertLevel", "AlertTriggered", "ArtifactDeleted",
            "ArtifactKind", "ArtifactStored", "AttributesLogged", "ClassificationMetricsLogged",
            "CodeCaptured", "ConsoleLogged", "ConsoleStream", "DatasetLinked", "Envelope",
            "EnvironmentCaptured", "Event", "ExperimentCreated", "ExperimentDeleted",
            "ExperimentRenamed", "ExperimentRestored", "ExperimentTagsRemoved",
            "ExperimentTagsSet", "IncompatibleSchema", "InvalidEvent", "LineageDirection",
            "LineageKind", "MetricArrays", "MetricColumns", "MetricPoint", "MetricsLogged",
            "ParamsLogged", "ProducerExited", "ProducerJoined", "RunCreated", "RunDeleted",
            "RunNoteSet", "RunRenamed", "RunRestored", "RunStatus", "RunStatusChanged",
            "SchemaError", "TagsRemoved", "TagsSet", "UndecodableEvent", "decode",
            "decode_record", "encode", "encode_record", "fingerprint", "new_event_id",
            "pack_points", "partition_key", "unpack_points", "unpack_points_numpy",
            "uuid7_time_ms", "writer_schema",
        ]
    )  # fmt: skip
    for name in schemas.__all__:
        assert hasattr(schemas, name), name


def test_import_is_light() -> None:
    """The client SDK installs light: `import schemas` pulls in no numpy/pyarrow nor our code."""
    code = (
        "import sys, schemas; "
        "heavy = {'numpy', 'pyarrow', 'producers', 'processors', 'query_api', 'runstream'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
