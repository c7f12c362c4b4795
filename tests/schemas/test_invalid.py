"""Encode refuses events that do not match their schema, naming the field."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from schemas import (
    Envelope,
    ExperimentCreated,
    InvalidEvent,
    MetricsLogged,
    RunStatusChanged,
    SchemaError,
    encode,
    encode_record,
    pack_points,
)

from .conftest import make_envelope

Mutate = Callable[[dict[str, Any]], None]


def _metrics_record() -> dict[str, Any]:
    columns = pack_points(["loss", "acc"], [0.5, 0.9], [1, 1], timestamps=7, splits="train")
    return {"envelope": make_envelope().to_record(), **columns}


def _set(path: str, value: Any) -> Mutate:
    def mutate(record: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = record
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


def _delete(path: str) -> Mutate:
    def mutate(record: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = record
        for part in parents:
            target = target[part]
        del target[last]

    return mutate


METRICS_CASES = [
    ("envelope.seq", _set("envelope.seq", "1"), "expected long"),
    ("envelope.seq", _set("envelope.seq", 1.5), "expected long"),
    ("envelope.seq", _set("envelope.seq", True), "expected long"),
    ("envelope.seq", _set("envelope.seq", 2**63), "out of range"),
    ("envelope.event_id", _set("envelope.event_id", "not-a-uuid"), "UUID"),
    ("envelope.experiment_id", _delete("envelope.experiment_id"), "missing"),
    ("envelope.run_id", _set("envelope.run_id", None), "required for a run event"),
    ("envelope.project", _set("envelope.project", None), "expected string"),
    ("envelope.trace", _set("envelope.trace", "x"), "unknown field"),
    ("count", _set("count", 2**31), "out of range for int"),
    ("count", _delete("count"), "missing"),
    ("count", _set("count", -1), "must be >= 0"),
    ("keys[1]", _set("keys", ["loss", 3]), "expected string"),
    ("keys", _set("keys", "loss"), "expected an array"),
    ("keys", _set("keys", ["loss", "loss"]), "distinct"),
    ("key_idx", _set("key_idx", b"\x00\x00"), "expected count x 2"),
    ("key_idx", _set("key_idx", b"\x00\x00\x02\x00"), "out of range"),
    ("key_idx", _set("key_idx", b"\x00\x00\x00\x01"), "out of range"),
    ("split_idx", _set("split_idx", b"\x00\x01"), "out of range"),
    ("steps", _set("steps", b"\x00" * 15), "expected count x 8"),
    ("values", _set("values", [0.5, 0.9]), "expected bytes"),
    ("values", _delete("values"), "missing"),
    ("timestamps", _set("timestamps", b""), "expected count x 8"),
]


@pytest.mark.parametrize(
    ("field", "mutate", "reason"), METRICS_CASES, ids=[f"{c[0]}:{c[2]}" for c in METRICS_CASES]
)
def test_metrics_refused_naming_the_field(field: str, mutate: Mutate, reason: str) -> None:
    record = _metrics_record()
    encode_record("MetricsLogged", record)  # valid before the mutation
    mutate(record)
    with pytest.raises(InvalidEvent) as info:
        encode_record("MetricsLogged", record)
    assert info.value.field == field
    assert reason in info.value.reason
    assert info.value.event == "MetricsLogged"
    assert str(info.value).startswith(f"MetricsLogged.{field}: ")


def test_bad_enum_symbol_is_refused() -> None:
    record = RunStatusChanged(envelope=make_envelope(), status="RUNNING").to_record()  # type: ignore[arg-type]
    record["status"] = "DONE"
    with pytest.raises(InvalidEvent, match=r"RunStatusChanged\.status: expected one of RUNNING"):
        encode_record("RunStatusChanged", record)


def test_map_value_path_is_named() -> None:
    record = ExperimentCreated(envelope=make_envelope(run_id=None), name="e").to_record()
    record["tags"] = {"ok": "1", "bad": 2}
    with pytest.raises(InvalidEvent) as info:
        encode_record("ExperimentCreated", record)
    assert info.value.field == "tags['bad']"


def test_experiment_event_must_not_carry_run_id() -> None:
    with pytest.raises(InvalidEvent) as info:
        encode(ExperimentCreated(envelope=make_envelope(run_id="run-1"), name="e"))
    assert info.value.field == "envelope.run_id"


def test_typed_event_with_wrong_type_is_refused() -> None:
    event = RunStatusChanged(envelope=make_envelope(seq="7"), status="KILLED")  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent) as info:
        encode(event)
    assert info.value.field == "envelope.seq"


def test_unknown_event_type() -> None:
    with pytest.raises(InvalidEvent, match="unknown event type 'RunExploded'"):
        encode_record("RunExploded", {})


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidEvent) as info:
        encode_record("RunDeleted", {"envelope": ["not", "a", "record"]})
    assert info.value.field == "envelope"


def test_invalid_event_is_a_schema_error_and_value_error() -> None:
    assert issubclass(InvalidEvent, SchemaError)
    assert issubclass(InvalidEvent, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"keys": ["a"], "values": [1.0, 2.0], "steps": 0}, "keys"),
        ({"keys": "a", "values": [1.0, 2.0], "steps": [0]}, "steps"),
        ({"keys": "a", "values": [1.0], "steps": [0.5]}, "steps"),
        ({"keys": "a", "values": ["x"], "steps": 0}, "values"),
        ({"keys": "a", "values": [1.0], "steps": 2**64}, "steps"),
        ({"keys": "a", "values": [1.0], "steps": 0, "splits": ["a", "b"]}, "splits"),
        (
            {
                "keys": "a",
                "values": [1.0] * 257,
                "steps": 0,
                "splits": [str(i) for i in range(257)],
            },
            "splits",
        ),
        ({"keys": "a", "values": [1.0], "steps": 0, "epochs": "1"}, "epochs"),
    ],
)
def test_pack_points_names_the_column(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        pack_points(timestamps=0, **kwargs)
    assert info.value.field == field


def test_hand_built_metrics_event_is_checked() -> None:
    event = MetricsLogged(
        envelope=make_envelope(),
        count=2,
        keys=["a"],
        splits=[""],
        key_idx=b"\x00\x00",
        split_idx=b"\x00\x00",
        steps=b"\x00" * 16,
        epochs=b"\x00" * 16,
        timestamps=b"\x00" * 16,
        values=b"\x00" * 16,
    )
    with pytest.raises(InvalidEvent) as info:
        encode(event)
    assert info.value.field == "key_idx"


def test_envelope_defaults() -> None:
    env = Envelope(event_id="0" * 32, experiment_id="e", producer_id="p", seq=0, occurred_at=0)
    assert env.project == "default"
    assert env.run_id is None
    assert env.user is None
