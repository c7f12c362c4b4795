"""The codec: Avro single-object encoding of events.

Rule: one wire format, the standard one. A message is ``C3 01`` + the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form + the Avro binary body
(no Confluent framing), so any Avro tool decodes it given the `.avsc`. The fingerprint names
the event type and its schema version; bytes written by any frozen version are decoded into
the current schema (Avro schema resolution). Encode refuses an event that does not match its
schema (`InvalidEvent` naming the field); decode refuses bytes that are not an event
(`UndecodableEvent`, for the DLQ). Neither ever lets a foreign exception escape.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from . import avsc
from .errors import InvalidEvent, UndecodableEvent
from .events import EVENT_TYPES, Event
from .metrics import check_columns
from .validate import Check, compile_validator

__all__ = [
    "DLQ_TOPIC",
    "EVENTS_TOPIC",
    "EXPERIMENT_EVENTS",
    "HEADER_SIZE",
    "MAGIC",
    "decode",
    "decode_record",
    "encode",
    "encode_record",
    "fingerprint",
    "partition_key",
    "writer_schema",
]

EVENTS_TOPIC = "runstream.events.v1"
"""The one topic all events go to (key: `partition_key`)."""
DLQ_TOPIC = "runstream.events.v1.dlq"
"""Where processors route messages that cannot be decoded or projected."""
MAGIC = b"\xc3\x01"
"""Avro single-object encoding marker."""
HEADER_SIZE = 10
"""Marker (2 bytes) + CRC-64-AVRO fingerprint (8 bytes, little-endian)."""

EXPERIMENT_EVENTS = frozenset(
    {
        "ExperimentCreated",
        "ExperimentRenamed",
        "ExperimentDeleted",
        "ExperimentRestored",
        "ExperimentTagsSet",
        "ExperimentTagsRemoved",
    }
)
"""Experiment-level events: envelope.run_id is null and the Kafka key is experiment_id.
Every other event belongs to a run: envelope.run_id is required and is the Kafka key."""

_CONTENT_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "MetricsLogged": check_columns,
}
_UNDECODABLE_ERRORS = (
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
    StopIteration,
)


@dataclass(frozen=True)
class _Writer:
    name: str
    schema: Mapping[str, Any]  # expanded, with logical types: the published writer schema
    parsed: Any  # fastavro-parsed, logical types stripped
    header: bytes
    check: Check


@dataclass(frozen=True)
class _Reader:
    name: str
    writer: Any  # fastavro-parsed writer schema (of the version that wrote the bytes)
    reader: Optional[Any]  # fastavro-parsed current schema; None when writer is current


def _build() -> tuple[dict[str, _Writer], dict[bytes, _Reader]]:
    writers: dict[str, _Writer] = {}
    readers: dict[bytes, _Reader] = {}
    for name, schema in avsc.load_current().items():
        parsed = parse_schema(avsc.strip_logical_types(schema))
        fp = avsc.canonical_fingerprint(schema)
        writers[name] = _Writer(name, schema, parsed, MAGIC + fp, compile_validator(schema))
        readers[fp] = _Reader(name, parsed, None)
    for directory in avsc.version_dirs():
        for name, schema in avsc.load_version(directory).items():
            fp = avsc.canonical_fingerprint(schema)
            if fp in readers or name not in writers:
                continue  # unchanged since, or gone (the compatibility check reports that)
            old = parse_schema(avsc.strip_logical_types(schema))
            readers[fp] = _Reader(name, old, writers[name].parsed)
    return writers, readers


_WRITERS, _READERS = _build()


def _check_scope(name: str, record: Mapping[str, Any]) -> None:
    run_id = record["envelope"].get("run_id")
    if name in EXPERIMENT_EVENTS:
        if run_id is not None:
            raise InvalidEvent("envelope.run_id", "must be null for an experiment event", name)
    elif run_id is None:
        raise InvalidEvent("envelope.run_id", "is required for a run event", name)


def encode_record(name: str, record: Mapping[str, Any]) -> bytes:
    """Encode a plain record (dict) of event type `name` into single-object-encoded bytes.

    Raises:
        InvalidEvent: unknown event type, or the record does not match the schema; the error
            names the dotted field path (e.g. "envelope.seq", "values").
    """
    writer = _WRITERS.get(name)
    if writer is None:
        raise InvalidEvent("", f"unknown event type {name!r}")
    try:
        writer.check(record, "")
        _check_scope(name, record)
        content_check = _CONTENT_CHECKS.get(name)
        if content_check is not None:
            content_check(record)
    except InvalidEvent as exc:
        if exc.event is None:
            raise InvalidEvent(exc.field, exc.reason, name) from None
        raise
    out = io.BytesIO()
    out.write(writer.header)
    try:
        schemaless_writer(out, writer.parsed, record)
    except Exception as exc:  # validated above; anything left is a bug worth naming
        raise InvalidEvent("", f"fastavro refused the record: {exc!r}", name) from exc
    return out.getvalue()


def encode(event: Event) -> bytes:
    """Encode a typed event (see `schemas.events`) into single-object-encoded bytes.

    Raises:
        InvalidEvent: the event does not match its schema, naming the field.
    """
    return encode_record(event.NAME, event.to_record())


def decode_record(data: Union[bytes, bytearray, memoryview]) -> tuple[str, dict[str, Any]]:
    """Decode single-object-encoded bytes into (event type name, plain record dict).

    The record always has the CURRENT schema's fields (older writers are resolved into it);
    timestamps are int epoch milliseconds and UUIDs str. This is the processors' fast path.

    Raises:
        UndecodableEvent: with `reason` one of too short, bad marker, unknown fingerprint,
            truncated or corrupt body, trailing bytes, invalid content.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise UndecodableEvent(
            UndecodableEvent.TOO_SHORT, data, f"{len(data)} bytes, the header alone is 10"
        )
    if data[:2] != MAGIC:
        raise UndecodableEvent(UndecodableEvent.BAD_MARKER, data, "expected C3 01")
    reader = _READERS.get(data[2:HEADER_SIZE])
    if reader is None:
        raise UndecodableEvent(
            UndecodableEvent.UNKNOWN_FINGERPRINT, data, f"fingerprint {data[2:10].hex()}"
        )
    buf = io.BytesIO(data)
    buf.seek(HEADER_SIZE)
    try:
        record = cast("dict[str, Any]", schemaless_reader(buf, reader.writer, reader.reader))
    except _UNDECODABLE_ERRORS as exc:
        raise UndecodableEvent(
            UndecodableEvent.CORRUPT, data, f"{reader.name}: {type(exc).__name__}: {exc}"
        ) from exc
    if buf.tell() != len(data):
        raise UndecodableEvent(
            UndecodableEvent.TRAILING_BYTES,
            data,
            f"{reader.name} ends at byte {buf.tell()} of {len(data)}",
        )
    try:
        _check_scope(reader.name, record)
        content_check = _CONTENT_CHECKS.get(reader.name)
        if content_check is not None:
            content_check(record)
    except InvalidEvent as exc:
        raise UndecodableEvent(
            UndecodableEvent.INVALID_CONTENT, data, f"{reader.name}.{exc.field}: {exc.reason}"
        ) from exc
    return reader.name, record


def decode(data: Union[bytes, bytearray, memoryview]) -> Event:
    """Decode single-object-encoded bytes into a typed event.

    Raises:
        UndecodableEvent: see `decode_record`.
    """
    name, record = decode_record(data)
    return EVENT_TYPES[name].from_record(record)


def fingerprint(name: str) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of the current schema of event type `name`.

    Raises:
        KeyError: unknown event type.
    """
    return _WRITERS[name].header[2:]


def writer_schema(name: str) -> dict[str, Any]:
    """The current, self-contained (expanded) writer schema of event type `name` (a copy).

    This JSON is what to give any Avro tool to decode our bytes for that event type.
    """
    return copy.deepcopy(dict(_WRITERS[name].schema))


def partition_key(event: Union[Event, Mapping[str, Any]]) -> bytes:
    """The Kafka message key: run_id, or experiment_id for experiment-level events.

    Accepts a typed event or a plain record (its "envelope" entry is used).
    """
    if isinstance(event, Mapping):
        envelope = event["envelope"]
        run_id, experiment_id = envelope.get("run_id"), envelope["experiment_id"]
    else:
        run_id, experiment_id = event.envelope.run_id, event.envelope.experiment_id
    return str(run_id if run_id is not None else experiment_id).encode("utf-8")
