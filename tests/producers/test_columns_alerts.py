"""Packing interned columns into MetricsLogged fields (checked against schemas' unpack), and
alert rules that fire on transitions."""

from __future__ import annotations

import math

import pytest

from producers.alerts import AlertBook, make_rule
from producers.columns import Columns, KeyTable, pack
from producers.errors import InvalidArgument, InvalidType, TooManyKeys
from schemas import codec
from schemas import events as ev
from schemas.metrics import unpack_points


def test_pack_roundtrips_through_schemas() -> None:
    table, cols = KeyTable(), Columns()
    rows = [
        ("loss", "", 0, -1, 1000, 0.5),
        ("acc", "val", 0, 2, 1001, math.inf),
        ("loss", "", 1, -1, 1002, -0.25),
        ("acc", "train", 5, 3, 1003, 1.0),
    ]
    for key, split, step, epoch, ts, value in rows:
        cols.append(table.key(key), table.split(split), step, epoch, ts, value)
    fields = pack(cols, table)
    env = ev.Envelope(
        event_id="01890a5d-ac96-774b-bcce-b302099a8057",
        experiment_id="e",
        producer_id="p",
        seq=0,
        occurred_at=1,
        run_id="r",
    )
    event = codec.decode(codec.encode(ev.MetricsLogged(envelope=env, **fields)))
    got = unpack_points(event)
    assert list(zip(got.key, got.split, got.step, got.epoch, got.timestamp, got.value)) == rows


def test_pack_cuts_tables_to_used_indexes() -> None:
    table, cols = KeyTable(), Columns()
    for k in ("a", "b", "c"):
        table.key(k)
    cols.append(1, 0, 0, -1, 0, 1.0)
    fields = pack(cols, table)
    assert fields["keys"] == ["a", "b"]
    assert fields["splits"] == [""]
    assert pack(Columns(), table)["count"] == 0


def test_key_table_limits() -> None:
    table = KeyTable()
    table.keys = [str(i) for i in range(65536)]
    with pytest.raises(TooManyKeys):
        table.key("one-too-many")


def test_alert_fires_on_transition_and_rearms() -> None:
    book = AlertBook()
    book.add(make_rule("loss", "<", 0.25, "low loss", None))
    fired = [
        bool(book.evaluate("loss", None, x, i))
        for i, x in enumerate([0.5, 0.2, 0.1, math.nan, 0.3, 0.2])
    ]
    assert fired == [False, True, False, False, False, True]


def test_alert_rule_without_split_matches_every_split() -> None:
    book = AlertBook()
    book.add(make_rule("acc", ">=", 0.9, None, None))
    book.add(make_rule("acc", ">=", 0.5, None, "val"))
    assert len(book.evaluate("acc", "val", 0.95, 1)) == 2
    assert book.watches("acc", "test")
    assert not book.watches("loss", None)
    assert book.evaluate("acc", "val", 0.95, 2) == []


def test_alert_rule_validation() -> None:
    with pytest.raises(InvalidArgument, match="op"):
        make_rule("loss", "=<", 1, None, None)
    with pytest.raises(InvalidType, match="threshold"):
        make_rule("loss", "<", "1", None, None)
    assert make_rule("loss", "!=", 1, None, None).text == "loss != 1.0"


def test_pack_repairs_a_half_appended_point() -> None:
    table, cols = KeyTable(), Columns()
    cols.append(table.key("loss"), 0, 0, -1, 1, 0.5)
    cols.key_idx.append(0)  # an async exception landed after the first append of a point
    cols.split_idx.append(0)
    fields = pack(cols, table)
    assert fields["count"] == 1
    assert len(fields["key_idx"]) == 2
    assert len(fields["steps"]) == 8
