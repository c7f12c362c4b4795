"""Replay from the archive into a versioned database: interruptible, resumable, equal to a
straight projection, then the pointer switches (chDB; the S3 client is an in-memory fake)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import io
import sys
import threading
from typing import Any

import avro.datafile
import avro.io
import fastavro
import pytest

from processors import EventArchive, digest, migrate, replay
from processors.archive import ARCHIVE_SCHEMA, CODEC, decode_segment, encode_segment
from processors.errors import ReplayError
from processors.pipeline import BatchProcessor
from processors.sink import ClickHouseSink, Resume

from .conftest import new_db_name
from .documents import documents
from .factory import Writer, source
from .stackutil import stale_pages
from .test_sink import LOG, _drive

replay_module = importlib.import_module("processors.replay")
ReplayResult = replay_module.ReplayResult

pytestmark = pytest.mark.stack


class _Obj:
    def __init__(self, name: str) -> None:
        self.object_name = name


class _FakeS3:
    """The four minio calls EventArchive makes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, bucket: str, key: str, data: io.BytesIO, length: int, **_: Any) -> None:
        self.objects[key] = data.read(length)

    def list_objects(self, bucket: str, prefix: str, recursive: bool) -> list[_Obj]:
        return [_Obj(k) for k in sorted(self.objects) if k.startswith(prefix)]

    def get_object(self, bucket: str, key: str) -> Any:
        data = io.BytesIO(self.objects[key])
        data.release_conn = lambda: None  # type: ignore[attr-defined]
        return data


def test_segment_round_trip_keeps_the_original_bytes() -> None:
    recs = LOG[0]
    assert list(decode_segment(encode_segment(recs))) == recs


def test_a_segment_is_a_standard_avro_file_and_older_deflate_ones_still_read() -> None:
    """Any Avro tool reads a segment (here Apache's own `avro` library); segments written
    with the earlier deflate codec decode the same."""
    recs = LOG[0]
    data = encode_segment(recs)
    with avro.datafile.DataFileReader(io.BytesIO(data), avro.io.DatumReader()) as reader:
        assert reader.codec == CODEC == "zstandard"
        rows = list(reader)
    assert [(r["offset"], r["key"], r["value"]) for r in rows] == [
        (r.offset, r.key, r.value) for r in recs
    ]
    old = io.BytesIO()
    fastavro.writer(old, ARCHIVE_SCHEMA, (dataclasses.asdict(r) for r in recs), codec="deflate")
    assert list(decode_segment(old.getvalue())) == recs


def test_replay_from_archive_is_interruptible_resumable_and_equal(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    ref = new_db_name("ref")
    scratch_dbs.append(ref)
    migrate(chdb_client, ref)
    _drive(chdb_client, ref, [(50, None, 0)] * 4)
    s3 = _FakeS3()
    archive = EventArchive(s3, "bucket", "pre/")
    for p, recs in LOG.items():
        for i in range(0, len(recs), 3):  # segments as a live worker would have cut them
            archive.put("t", p, recs[i : i + 3])
    assert all(k.startswith("pre/archive/t/") for k in s3.objects)

    base = new_db_name("base")
    scratch_dbs.append(base)
    stop = threading.Event()
    seen: list[int] = []

    def progress(p: Any) -> None:
        seen.append(p.next_offset)
        stop.set()  # interrupt after the first batch

    first = replay(
        chdb_client,
        database=base,
        archive=archive,
        source="archive",
        topic="t",
        progress=progress,
        stop=stop,
        batch_size=2,
    )
    assert not first.completed
    assert not first.switched
    assert first.database == f"{base}_v1"
    assert ClickHouseSink(chdb_client, base).active_database() == base
    done = replay(
        chdb_client, database=base, archive=archive, source="archive", topic="t", batch_size=4
    )
    assert done.database == first.database  # resumed, not restarted elsewhere
    assert done.completed
    assert done.switched
    assert done.events < sum(len(r) for r in LOG.values())
    assert digest(chdb_client, done.database) == digest(chdb_client, ref)
    assert stale_pages(chdb_client, done.database) == []  # the interrupted attempt's too
    assert ClickHouseSink(chdb_client, base).active_database() == done.database


@pytest.mark.parametrize("full_above", [4, 100])
def test_replay_leaves_no_stale_document(
    chdb_client: Any, scratch_dbs: list[str], monkeypatch: pytest.MonkeyPatch, full_above: int
) -> None:
    """New runs get their documents with their rows; the run written by two batches is
    rewritten at the end: chunk by chunk while such runs are few (one run of 13 here), in
    one pass over every run once they are 1/`FULL_REFRESH_ABOVE` of the table or more."""
    # the module (`processors.replay` is also the package's function of that name)
    monkeypatch.setattr(sys.modules["processors.replay"], "FULL_REFRESH_ABOVE", full_above)
    refreshed: list[object] = []
    real = ClickHouseSink.refresh_pages

    def spy(self: ClickHouseSink, keys: Any = None) -> None:
        refreshed.append(None if keys is None else sorted(k[2] for k in keys))
        real(self, keys)

    monkeypatch.setattr(ClickHouseSink, "refresh_pages", spy)
    w = Writer()
    items = [("RunCreated", w.record("RunCreated", "long", name="long"))]
    items += [("RunCreated", w.record("RunCreated", f"r{i:02d}", name=str(i))) for i in range(12)]
    items.append(("RunRenamed", w.record("RunRenamed", "long", name="longer")))
    archive = EventArchive(_FakeS3(), "bucket", "pre/")
    archive.put("t", 0, source(items, topic="t"))
    base = new_db_name("docs")
    scratch_dbs.append(base)
    done = replay(
        chdb_client, database=base, archive=archive, source="archive", topic="t", batch_size=10
    )
    assert done.completed
    assert refreshed == ([["long"]] if full_above == 4 else [None])
    assert stale_pages(chdb_client, done.database) == []
    assert sorted(documents(chdb_client, done.database)) == sorted(
        ("proj", "exp-1", r) for r in ["long", *(f"r{i:02d}" for i in range(12))]
    )


def test_a_resumed_replay_leaves_no_stale_document(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """A run that the interrupted attempt wrote in two batches and the resumed one never
    touches again: only the interrupted attempt knew it was stale, so the resumed replay
    rewrites every run's document."""
    w = Writer()
    items = [
        ("RunCreated", w.record("RunCreated", "early", name="early")),
        ("RunRenamed", w.record("RunRenamed", "early", name="renamed")),
    ]
    items += [("RunCreated", w.record("RunCreated", f"r{i:02d}", name=str(i))) for i in range(12)]
    archive = EventArchive(_FakeS3(), "bucket", "pre/")
    archive.put("t", 0, source(items, topic="t"))
    base = new_db_name("resume")
    scratch_dbs.append(base)
    stop = threading.Event()

    def progress(p: Any) -> None:
        if p.next_offset >= 2:
            stop.set()  # interrupted once `early` was written by two batches

    kw: dict[str, Any] = {"database": base, "archive": archive, "source": "archive", "topic": "t"}
    first = replay(chdb_client, **kw, batch_size=1, progress=progress, stop=stop)
    assert not first.completed
    assert stale_pages(chdb_client, first.database) == [("proj", "exp-1", "early")]
    done = replay(chdb_client, **kw, batch_size=10)
    assert done.database == first.database
    assert done.completed
    assert stale_pages(chdb_client, done.database) == []


def _archive_without(missing: tuple[int, int]) -> EventArchive:
    """LOG archived in 3-record segments, but for partition 0's segment `missing` (its first
    and last offsets): pruned, or written before the archive was enabled."""
    archive = EventArchive(_FakeS3(), "bucket")
    for p, recs in LOG.items():
        for i in range(0, len(recs), 3):
            seg = recs[i : i + 3]
            if p != 0 or (seg[0].offset, seg[-1].offset) != missing:
                archive.put("t", p, seg)
    return archive


def test_a_replay_never_switches_to_read_models_with_a_hole(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """A segment missing from the archive, with no Kafka to take its records from: the
    replay fails naming the offsets, and reads stay where they were (it projected up to the
    hole, records after it were never projected past it)."""
    base = new_db_name("hole")
    scratch_dbs.append(base)
    archive = _archive_without((3, 5))
    with pytest.raises(ReplayError, match=r"t\[0\]: offsets 3-5 are gone"):
        replay(chdb_client, database=base, archive=archive, source="archive", topic="t")
    assert ClickHouseSink(chdb_client, base).active_database() == base
    target = f"{base}_v1"
    scratch_dbs.append(target)
    assert ClickHouseSink(chdb_client, target).positions("t").get(0, Resume(0)).offset <= 3


def test_the_archive_pass_stops_at_a_hole_for_kafka_to_go_on_from(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """With Kafka to read from, the archive pass of a partition ends at a missing segment:
    projected up to it, the Kafka pass then starts there (not after it)."""
    db = new_db_name("stop")
    scratch_dbs.append(db)
    migrate(chdb_client, db)
    archive = _archive_without((3, 5))
    proc = BatchProcessor(ClickHouseSink(chdb_client, db))
    result = ReplayResult(db, completed=False, switched=False)

    async def archive_pass() -> bool:
        records = replay_module._aiter(archive.read("t", 0, 0))
        return await replay_module._run_partition(
            proc,
            "t",
            0,
            Resume(0),
            records,
            None,
            2,
            None,
            threading.Event(),
            result,
            gap="stop",
        )

    assert asyncio.run(archive_pass())
    assert ClickHouseSink(chdb_client, db).positions("t") == {0: Resume(3)}
    assert result.events == 3
