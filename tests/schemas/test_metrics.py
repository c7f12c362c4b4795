"""MetricsLogged packed columns: pack/unpack properties and the documented byte layout."""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    NO_EPOCH,
    MetricPoint,
    MetricsLogged,
    decode,
    decode_record,
    encode,
    encode_record,
    pack_points,
    unpack_points,
)
from schemas.metrics import check_columns, parse_series_key, series_key

from .conftest import make_envelope

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOAT64 = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def batches(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(min_value=0, max_value=60))
    key_pool = draw(st.lists(st.text(max_size=8), min_size=1, max_size=300, unique=True))
    split_pool = draw(st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True))
    return {
        "keys": draw(st.lists(st.sampled_from(key_pool), min_size=n, max_size=n)),
        "splits": draw(st.lists(st.sampled_from(split_pool), min_size=n, max_size=n)),
        "values": draw(st.lists(FLOAT64, min_size=n, max_size=n)),
        "steps": draw(st.lists(INT64, min_size=n, max_size=n)),
        "epochs": draw(st.lists(INT64, min_size=n, max_size=n)),
        "timestamps": draw(st.lists(INT64, min_size=n, max_size=n)),
    }


def _same_float(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_pack_encode_decode_unpack_round_trip(batch: dict[str, Any]) -> None:
    columns = pack_points(
        batch["keys"],
        batch["values"],
        batch["steps"],
        timestamps=batch["timestamps"],
        epochs=batch["epochs"],
        splits=batch["splits"],
    )
    check_columns(columns)
    record = {"envelope": make_envelope().to_record(), **columns}
    _, decoded = decode_record(encode_record("MetricsLogged", record))
    out = unpack_points(decoded)
    assert list(out.key) == batch["keys"]
    assert list(out.split) == batch["splits"]
    assert list(out.step) == batch["steps"]
    assert list(out.epoch) == batch["epochs"]
    assert list(out.timestamp) == batch["timestamps"]
    assert all(_same_float(a, b) for a, b in zip(out.value, batch["values"]))


def test_layout_is_the_documented_one() -> None:
    cols = pack_points(
        ["a", "b", "a"], [1.5, -0.0, math.nan], [10, 11, 12], timestamps=[1, 2, 3], epochs=4
    )
    assert cols["count"] == 3
    assert cols["keys"] == ["a", "b"]
    assert cols["splits"] == [""]
    assert cols["key_idx"] == struct.pack("<3H", 0, 1, 0)
    assert cols["split_idx"] == bytes(3)
    assert cols["steps"] == struct.pack("<3q", 10, 11, 12)
    assert cols["epochs"] == struct.pack("<3q", 4, 4, 4)
    assert cols["timestamps"] == struct.pack("<3q", 1, 2, 3)
    assert cols["values"] == struct.pack("<3d", 1.5, -0.0, math.nan)


def test_scalars_broadcast_and_default_epoch() -> None:
    out = unpack_points(pack_points("loss", [1.0, 2.0], 5, timestamps=9, splits="val"))
    assert out.key == ["loss", "loss"]
    assert out.split == ["val", "val"]
    assert list(out.step) == [5, 5]
    assert list(out.epoch) == [NO_EPOCH, NO_EPOCH]
    assert list(out.timestamp) == [9, 9]


def test_many_keys_use_the_uint16_path() -> None:
    keys = [f"k{i}" for i in range(1000)]
    cols = pack_points(keys, [0.0] * 1000, 0, timestamps=0)
    assert len(cols["keys"]) == 1000
    assert cols["key_idx"] == struct.pack("<1000H", *range(1000))
    assert unpack_points(cols).key == keys


def test_points_identity_and_event_input() -> None:
    event = MetricsLogged(
        envelope=make_envelope(),
        **pack_points(["loss", "loss"], [0.1, 0.2], [3, 3], timestamps=0, splits="train"),
    )
    decoded = decode(encode(event))
    points = list(unpack_points(decoded).points())
    assert points == [
        MetricPoint(0, "loss", "train", 3, NO_EPOCH, 0, 0.1),
        MetricPoint(1, "loss", "train", 3, NO_EPOCH, 0, 0.2),
    ]
    assert unpack_points(event) == unpack_points(event.to_record())


@given(st.text(), st.text(), st.text(), st.text())
def test_series_keys_round_trip_and_never_collide(k1: str, s1: str, k2: str, s2: str) -> None:
    assert parse_series_key(series_key(k1, s1)) == (k1, s1)
    assert (series_key(k1, s1) == series_key(k2, s2)) == ((k1, s1) == (k2, s2))
