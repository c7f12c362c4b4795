"""The typed classes are generated from the `.avsc` files and have not drifted."""

from __future__ import annotations

import dataclasses

from schemas import EVENT_TYPES, Envelope, writer_schema
from schemas.codegen import EVENTS_PY, generate, main


def test_events_py_has_not_drifted() -> None:
    assert EVENTS_PY.read_text(encoding="utf-8") == generate(), (
        "schemas/events.py is stale: run `python -m schemas.codegen`"
    )
    assert main(["--check"]) == 0


def test_events_py_says_it_is_generated() -> None:
    assert "GENERATED — do not edit; run `python -m schemas.codegen`" in EVENTS_PY.read_text(
        encoding="utf-8"
    )


def test_classes_have_exactly_the_schema_fields() -> None:
    for name, cls in EVENT_TYPES.items():
        schema = writer_schema(name)
        assert {f.name for f in dataclasses.fields(cls)} == {f["name"] for f in schema["fields"]}
        defaults = {f["name"] for f in schema["fields"] if "default" in f}
        for fld in dataclasses.fields(cls):
            has_default = (
                fld.default is not dataclasses.MISSING
                or fld.default_factory is not dataclasses.MISSING
            )
            assert has_default == (fld.name in defaults), f"{name}.{fld.name}"
    envelope = writer_schema("RunDeleted")["fields"][0]["type"]
    assert [f.name for f in dataclasses.fields(Envelope)] == [f["name"] for f in envelope["fields"]]
