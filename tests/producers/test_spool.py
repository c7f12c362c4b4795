"""Spool segment format: framing, CRC, torn-tail recovery, cursor, reader following a writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.errors import SpoolCorrupt, SpoolError
from producers.spool import (
    HEADER,
    MAGIC,
    Cursor,
    Position,
    SpoolReader,
    SpoolWriter,
    encode_frame,
    list_segments,
    pending_bytes,
    recover_segment,
    scan_segment,
    segment_path,
)


def _records(n: int, size: int = 10) -> list[tuple[bytes, bytes]]:
    return [(f"run-{i % 3}".encode(), bytes([i % 251]) * size) for i in range(n)]


def _write(tmp: Path, recs: list[tuple[bytes, bytes]], **kw: object) -> SpoolWriter:
    w = SpoolWriter(tmp, **kw)  # type: ignore[arg-type]
    w.append([encode_frame(k, p) for k, p in recs])
    return w


def test_roundtrip_in_order(tmp_path: Path) -> None:
    recs = _records(50)
    w = _write(tmp_path, recs)
    got = SpoolReader(tmp_path).read(1 << 30, limit=w.position)
    assert [(r.key, r.payload) for r in got] == recs
    assert got[-1].end == w.position
    w.close()


def test_segment_starts_with_magic_and_frames_are_length_crc_prefixed(tmp_path: Path) -> None:
    w = _write(tmp_path, [(b"k", b"payload")])
    w.close()
    data = segment_path(tmp_path, 1).read_bytes()
    assert data[:HEADER] == MAGIC
    assert data[HEADER:] == encode_frame(b"k", b"payload")
    assert int.from_bytes(data[HEADER : HEADER + 4], "little") == 2 + 1 + 7


def test_segments_roll_and_reader_crosses_them(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, segment_bytes=200)
    recs = _records(30, size=40)
    for k, p in recs:
        w.append([encode_frame(k, p)])
    assert len(list_segments(tmp_path)) > 5
    reader = SpoolReader(tmp_path)
    got = []
    while batch := reader.read(100, limit=w.position):
        got.extend(batch)
    assert [(r.key, r.payload) for r in got] == recs
    w.close()


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_tail_is_ignored_by_reader_and_truncated_by_recovery(tmp_path: Path, cut: int) -> None:
    recs = _records(5)
    w = _write(tmp_path, recs)
    w.close()
    seg = segment_path(tmp_path, 1)
    whole = seg.read_bytes()
    partial = encode_frame(b"k", b"x" * 100)[:cut]
    seg.write_bytes(whole + partial)
    reader = SpoolReader(tmp_path)
    got = reader.read(1 << 30)
    assert [(r.key, r.payload) for r in got] == recs
    assert reader.discarded_bytes == cut
    assert scan_segment(seg).discarded == cut
    assert recover_segment(seg) == cut
    assert seg.read_bytes() == whole
    assert recover_segment(seg) == 0


def test_corrupt_crc_stops_reading_there(tmp_path: Path) -> None:
    recs = _records(4)
    w = _write(tmp_path, recs)
    w.close()
    seg = segment_path(tmp_path, 1)
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # flip a payload byte of the last frame
    seg.write_bytes(bytes(data))
    got = SpoolReader(tmp_path).read(1 << 30)
    assert [(r.key, r.payload) for r in got] == recs[:3]


def test_new_writer_recovers_last_segment_and_starts_a_new_one(tmp_path: Path) -> None:
    w = _write(tmp_path, _records(3))
    w.close()
    seg = segment_path(tmp_path, 1)
    seg.write_bytes(seg.read_bytes() + b"\x05\x00")
    w2 = SpoolWriter(tmp_path)
    assert w2.position.segment == 2
    assert scan_segment(seg).discarded == 0
    w2.close()


def test_not_a_segment_is_reported(tmp_path: Path) -> None:
    segment_path(tmp_path, 1).write_bytes(b"garbage-header and more")
    with pytest.raises(SpoolCorrupt):
        SpoolReader(tmp_path).read(100)


def test_lock_is_exclusive(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path)
    with pytest.raises(SpoolError, match="in use"):
        SpoolWriter(tmp_path)
    w.close()
    SpoolWriter(tmp_path).close()


def test_cursor_commit_persists_and_deletes_acked_segments(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, segment_bytes=100)
    for k, p in _records(10, size=60):
        w.append([encode_frame(k, p)])
    segs = list_segments(tmp_path)
    cur = Cursor(tmp_path)
    cur.commit(Position(segs[3], HEADER))
    assert list_segments(tmp_path) == segs[3:]
    assert Cursor(tmp_path).position == Position(segs[3], HEADER)
    cur.commit(Position(segs[1], HEADER))  # never goes back
    assert Cursor(tmp_path).position == Position(segs[3], HEADER)
    assert pending_bytes(tmp_path, cur.position) > 0
    w.close()


def test_reader_never_passes_live_limit(tmp_path: Path) -> None:
    w = _write(tmp_path, _records(3))
    limit = w.position
    w.append([encode_frame(b"k", b"later")])
    reader = SpoolReader(tmp_path)
    assert len(reader.read(1 << 30, limit=limit)) == 3
    assert reader.read(1 << 30, limit=limit) == []
    assert [r.payload for r in reader.read(1 << 30, limit=w.position)] == [b"later"]
    w.close()


def test_budget_always_returns_at_least_one_record(tmp_path: Path) -> None:
    w = _write(tmp_path, _records(3, size=1000))
    reader = SpoolReader(tmp_path)
    assert len(reader.read(1, limit=w.position)) == 1
    assert len(reader.read(1, limit=w.position)) == 1
    w.close()
