"""Decode identifies bytes that are not one of our events (processors route them to the DLQ)."""

from __future__ import annotations

import contextlib
import io

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    MAGIC,
    MetricsLogged,
    RunRenamed,
    SchemaError,
    UndecodableEvent,
    decode,
    decode_record,
    encode,
    fingerprint,
    pack_points,
    writer_schema,
)
from schemas.avsc import strip_logical_types

from .conftest import make_envelope


def _valid() -> bytes:
    columns = pack_points(["loss", "acc"], [0.5, 0.9], [1, 2], timestamps=7, splits=["a", "b"])
    return encode(MetricsLogged(envelope=make_envelope(), **columns))


VALID = _valid()


def _reason(data: bytes) -> str:
    with pytest.raises(UndecodableEvent) as info:
        decode_record(data)
    assert info.value.prefix == data[:32]
    return info.value.reason


def test_too_short() -> None:
    assert _reason(b"") == UndecodableEvent.TOO_SHORT
    assert _reason(VALID[:9]) == UndecodableEvent.TOO_SHORT


def test_bad_marker() -> None:
    assert _reason(b"\x00\x01" + VALID[2:]) == UndecodableEvent.BAD_MARKER
    assert _reason(b'{"json": "not avro"}') == UndecodableEvent.BAD_MARKER


def test_confluent_framing_is_not_accepted() -> None:
    assert _reason(b"\x00\x00\x00\x00\x01" + VALID[10:]) == UndecodableEvent.BAD_MARKER


def test_unknown_fingerprint() -> None:
    assert _reason(MAGIC + b"\x01" * 8 + VALID[10:]) == UndecodableEvent.UNKNOWN_FINGERPRINT


def test_every_truncation_is_identified() -> None:
    for end in range(10, len(VALID)):
        assert _reason(VALID[:end]) == UndecodableEvent.CORRUPT, end


def test_trailing_bytes() -> None:
    assert _reason(VALID + b"\x00") == UndecodableEvent.TRAILING_BYTES


def test_other_event_type_body_under_a_fingerprint() -> None:
    renamed = encode(RunRenamed(envelope=make_envelope(), name="x"))
    data = fingerprint("MetricsLogged").join([MAGIC, renamed[10:]])
    assert _reason(data) in (UndecodableEvent.CORRUPT, UndecodableEvent.TRAILING_BYTES)


def test_avro_valid_but_inconsistent_columns_are_identified() -> None:
    """Bytes written by another tool that skip our checks: count says 3, columns hold 2."""
    record = {
        "envelope": make_envelope().to_record(),
        **pack_points("loss", [1.0, 2.0], [1, 2], timestamps=0),
    }
    record["count"] = 3
    out = io.BytesIO()
    out.write(MAGIC + fingerprint("MetricsLogged"))
    schemaless_writer(
        out, parse_schema(strip_logical_types(writer_schema("MetricsLogged"))), record
    )
    with pytest.raises(UndecodableEvent) as info:
        decode_record(out.getvalue())
    assert info.value.reason == UndecodableEvent.INVALID_CONTENT
    assert "MetricsLogged.key_idx" in str(info.value)


def test_undecodable_is_a_schema_error() -> None:
    assert issubclass(UndecodableEvent, SchemaError)
    with pytest.raises(UndecodableEvent):
        decode(b"garbage")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bodies_never_raise_anything_else(body: bytes) -> None:
    for name in ("MetricsLogged", "RunCreated", "ClassificationMetricsLogged"):
        with contextlib.suppress(UndecodableEvent):
            decode(MAGIC + fingerprint(name) + body)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=10, max_value=len(VALID) - 1), st.integers(0, 255))
def test_flipped_bytes_never_raise_anything_else(position: int, value: int) -> None:
    data = bytearray(VALID)
    data[position] = value
    with contextlib.suppress(UndecodableEvent):
        decode(bytes(data))
