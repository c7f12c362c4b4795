"""numpy paths of the MetricsLogged helpers (skipped where numpy is not installed)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings

from schemas import InvalidEvent, decode_record, encode_record, pack_points, unpack_points_numpy

from .conftest import make_envelope
from .test_metrics import batches

np = pytest.importorskip("numpy")


@settings(max_examples=100, deadline=None)
@given(batches())
def test_unpack_points_numpy_matches_the_input(batch: dict[str, Any]) -> None:
    columns = pack_points(
        batch["keys"],
        batch["values"],
        batch["steps"],
        timestamps=batch["timestamps"],
        epochs=batch["epochs"],
        splits=batch["splits"],
    )
    record = {"envelope": make_envelope().to_record(), **columns}
    _, decoded = decode_record(encode_record("MetricsLogged", record))
    arrays = unpack_points_numpy(decoded)
    assert list(arrays.key) == batch["keys"]
    assert list(arrays.split) == batch["splits"]
    assert arrays.step.tolist() == batch["steps"]
    assert arrays.epoch.tolist() == batch["epochs"]
    assert arrays.timestamp.tolist() == batch["timestamps"]
    assert arrays.value.tobytes() == struct.pack(f"<{len(batch['values'])}d", *batch["values"])


def test_numpy_inputs_are_packed_the_same() -> None:
    keys = ["a", "b"] * 50
    values = np.linspace(0, 1, 100)
    steps = np.arange(100, dtype=np.int32)
    from_numpy = pack_points(np.array(keys), values, steps, timestamps=np.arange(100))
    from_lists = pack_points(keys, values.tolist(), steps.tolist(), timestamps=list(range(100)))
    assert from_numpy == from_lists


def test_numpy_float_steps_are_refused() -> None:
    with pytest.raises(InvalidEvent) as info:
        pack_points("a", np.zeros(3), np.zeros(3), timestamps=0)
    assert info.value.field == "steps"
