"""Interop: the official `avro` library reads our bytes given the `.avsc` (and vice versa)."""

from __future__ import annotations

import datetime
import io
import json
from typing import Any

import avro.io
import avro.schema
import pytest
from fastavro.schema import to_parsing_canonical_form

from schemas import EVENT_TYPES, MAGIC, decode_record, encode_record, writer_schema
from schemas.avsc import strip_logical_types

from .conftest import EXAMPLE_IDS, EXAMPLES


def _avro_schema(name: str, logical: bool = True) -> avro.schema.Schema:
    schema = writer_schema(name) if logical else strip_logical_types(writer_schema(name))
    return avro.schema.parse(json.dumps(schema))


def _avro_read(data: bytes, schema: avro.schema.Schema) -> Any:
    decoder = avro.io.BinaryDecoder(io.BytesIO(data[10:]))
    return avro.io.DatumReader(schema).read(decoder)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_avro_fingerprint_matches_our_header(name: str) -> None:
    """Our header is the spec's CRC-64-AVRO of the Parsing Canonical Form.

    The spec's [STRIP] + [PRIMITIVES] rules reduce {"type": "long", "logicalType": ...} to
    "long" (Java's SchemaNormalization and fastavro do). The official Python `avro` package
    keeps {"type": "long"} for logical types (as the Rust crate did before AVRO-4004), so its
    fingerprint of a schema WITH logical types differs; without them the forms coincide.
    """
    schema = _avro_schema(name, logical=False)
    assert schema.fingerprint("CRC-64-AVRO") == encode_record(name, _first_example(name))[2:10]
    assert schema.canonical_form == to_parsing_canonical_form(writer_schema(name))


def test_python_avro_canonical_form_differs_only_in_logical_primitives() -> None:
    ours = to_parsing_canonical_form(writer_schema("RunCreated"))
    theirs = _avro_schema("RunCreated").canonical_form
    normalised = theirs.replace('{"type":"string"}', '"string"').replace(
        '{"type":"long"}', '"long"'
    )
    assert theirs != ours
    assert normalised == ours


@pytest.mark.parametrize(("label", "name", "index", "record"), EXAMPLES, ids=EXAMPLE_IDS)
def test_official_avro_decodes_our_bytes(
    label: str, name: str, index: int, record: dict[str, Any]
) -> None:
    data = encode_record(name, record)
    assert data[:2] == MAGIC
    _, current = decode_record(data)
    assert _avro_read(data, _avro_schema(name, logical=False)) == current


def test_official_avro_applies_logical_types() -> None:
    record = _first_example("RunCreated")
    decoded = _avro_read(encode_record("RunCreated", record), _avro_schema("RunCreated"))
    occurred = decoded["envelope"]["occurred_at"]
    assert isinstance(occurred, datetime.datetime)
    assert int(occurred.timestamp() * 1000) == record["envelope"]["occurred_at"]


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_we_decode_bytes_written_by_official_avro(name: str) -> None:
    record = _first_example(name)
    schema = _avro_schema(name, logical=False)
    out = io.BytesIO()
    out.write(MAGIC + schema.fingerprint("CRC-64-AVRO"))
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(out))
    assert decode_record(out.getvalue()) == (name, record)


def _first_example(name: str) -> dict[str, Any]:
    return next(r for label, n, _, r in EXAMPLES if n == name)
