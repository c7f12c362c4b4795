"""ClickHouse sink on the real engine (chDB): migrations, idempotent writes, positions, and the
property that no interleaving of crashes, redeliveries and resends changes the read models."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from processors import pipeline as pipeline_module
from processors.digest import APPEND_ONLY, digest, rollup_mismatches, summary_mismatches
from processors.errors import ConfigError, PartitionTaken, ReadModelWriteFailed
from processors.faust_app import FaustProjector
from processors.migrate import migrate, migrations, pack_small_parts
from processors.model import SourceEvent
from processors.pipeline import BatchProcessor
from processors.sink import PARALLEL_INSERT_ROWS, ClickHouseSink, Resume, sql_literal
from processors.tables import SCHEMAS
from processors.worker import ProjectionWorker
from schemas.metrics import series_key

from .conftest import new_db_name
from .documents import current_documents_agree
from .factory import Writer, source
from .stackutil import is_write

pytestmark = pytest.mark.stack


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.text(max_size=12), max_size=6))
def test_a_string_list_parameter_reads_back_the_same_strings(
    chdb_client: Any, values: list[str]
) -> None:
    """`sql_literal` (the sink's fast binding of IN lists) writes what clickhouse-connect
    writes, and ClickHouse reads every string back unchanged (quotes, backslashes, tabs,
    newlines, backticks, NUL, any code point)."""
    from clickhouse_connect.driver.binding import format_query_value

    literal = sql_literal(values)
    assert literal == str(format_query_value(values))
    got = chdb_client.query(f"SELECT {literal}::Array(String)").result_rows[0][0]
    assert got == values


def test_migrate_is_idempotent_and_recorded(chdb_client: Any, ch_database: str) -> None:
    assert migrate(chdb_client, ch_database) == [m.name for m in migrations()]
    assert migrate(chdb_client, ch_database) == []
    rows = chdb_client.query(
        f"SELECT version FROM {ch_database}.schema_migrations ORDER BY version"
    ).result_rows
    assert [r[0] for r in rows] == [m.version for m in migrations()]


def test_a_small_batch_writes_packed_parts_and_a_large_one_full_parts(
    chdb_client: Any, read_db: str
) -> None:
    """Every read-model table stores small parts as one file (a one-event batch creates a part
    per table it touches: with full storage ~10 files each, most of its insert time), while
    a large batch's points stay in full parts (read column by column)."""
    tables = chdb_client.query(
        "SELECT name FROM system.tables WHERE database = {d:String} AND engine LIKE '%MergeTree'",
        parameters={"d": read_db},
    ).result_rows
    assert len(tables) > 15
    assert pack_small_parts(chdb_client, read_db) == []  # migrate did it already

    w = Writer()
    small = [("RunCreated", w.record("RunCreated", "r1", name="one"))]
    small.append(("MetricsLogged", w.metrics("r1", np.arange(3), ["loss"])))
    big = [("MetricsLogged", w.metrics("r1", np.arange(3, 250_003), ["loss"]))]
    proc = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    recs = source(small + big)
    for batch in (recs[:2], recs[2:]):
        prepared = proc.prepare("t", 0, batch)
        assert prepared is not None
        asyncio.run(proc.commit(prepared))

    rows = chdb_client.query(
        "SELECT table, rows, part_storage_type FROM system.parts WHERE database = {d:String}"
        " AND active AND table IN ('runs', 'events', 'metric_points', 'projection_position')",
        parameters={"d": read_db},
    ).result_rows
    storage = {(t, n >= 250_000): s for t, n, s in rows}
    assert storage == {
        ("runs", False): "Packed",
        ("events", False): "Packed",
        ("projection_position", False): "Packed",
        ("metric_points", False): "Packed",
        ("metric_points", True): "Full",
    }
    got = chdb_client.query(f"SELECT count() FROM {read_db}.metric_points").result_rows
    assert got == [(250_003,)]


def test_a_reserved_database_name_is_refused_before_anything_is_created(
    chdb_client: Any,
) -> None:
    with pytest.raises(ConfigError, match="'r' is reserved"):
        migrate(chdb_client, "r")
    found = chdb_client.query("SELECT count() FROM system.databases WHERE name = 'r'")
    assert found.result_rows == [(0,)]


def test_arrow_schemas_match_the_tables(chdb_client: Any, read_db: str) -> None:
    for table, schema in SCHEMAS.items():
        cols = [r[0] for r in chdb_client.query(f"DESCRIBE TABLE {read_db}.{table}").result_rows]
        assert cols == schema.names, table


def _log() -> dict[int, list[SourceEvent]]:
    """Two partitions with conflicts, a resend and metrics of three ranks (one naming another
    experiment: its summaries still belong to the run's experiment, also after a restart)."""
    a, b, e = Writer(), Writer(), Writer(experiment_id="e-rank")
    steps = np.arange(50, dtype=np.int64)
    created = a.record("RunCreated", "r1", name="one", params={"lr": "0.1"})
    p0 = [
        ("RunCreated", created),
        ("MetricsLogged", a.metrics("r1", steps, ["loss", "acc"], seed=1)),
        ("MetricsLogged", b.metrics("r1", steps, ["loss"], seed=2)),
        ("MetricsLogged", e.metrics("r1", steps, ["loss"], seed=5)),
        ("ParamsLogged", a.record("ParamsLogged", "r1", params={"lr": "0.3", "bs": "2"})),
        ("RunCreated", created),  # client resend
        ("ArtifactStored", a.record("ArtifactStored", "r1", key="m", uri="s3://x/1")),
        ("ArtifactStored", a.record("ArtifactStored", "r1", key="m", uri="s3://x/2")),
        ("TagsSet", a.record("TagsSet", "r1", tags={"t": "1"})),
        ("RunStatusChanged", a.record("RunStatusChanged", "r1", status="FINISHED")),
        ("MetricsLogged", a.metrics("r1", steps + 50, ["loss"], seed=3)),
    ]
    c, d, f = Writer(experiment_id="e2"), Writer(experiment_id="e3"), Writer(experiment_id="e4")
    p1 = [
        ("ExperimentCreated", c.record("ExperimentCreated", None, name="exp")),
        ("RunCreated", c.record("RunCreated", "r2", name="two")),
        ("MetricsLogged", c.metrics("r2", steps, ["acc"], split="val", seed=4)),
        ("ExperimentRenamed", c.record("ExperimentRenamed", None, name="exp2")),
        ("RunRenamed", c.record("RunRenamed", "r2", name="two-b")),
        ("ParamsLogged", c.record("ParamsLogged", "r2", params={"x": "1"})),
        ("ExperimentDeleted", c.record("ExperimentDeleted", None)),  # frees "exp2"
        ("ExperimentCreated", d.record("ExperimentCreated", None, name="exp2")),
        ("ExperimentRestored", c.record("ExperimentRestored", None)),  # e2 < e3 holds it
        ("ExperimentCreated", f.record("ExperimentCreated", None, name="exp2")),  # rejected
    ]
    recs = {0: source(p0, 0), 1: source(p1, 1)}
    recs[1].insert(3, SourceEvent("t", 1, 0, 0, b"r2", b"garbage"))  # poison
    recs[1] = [SourceEvent("t", 1, i, r.timestamp, r.key, r.value) for i, r in enumerate(recs[1])]
    return recs


LOG = _log()


class _Crash(Exception):
    pass


class _Flaky:
    """A client that dies at the Nth write (a SIGKILL in the middle of a batch)."""

    def __init__(self, client: Any, fail_at: int | None) -> None:
        self._client, self._left = client, fail_at

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in ("insert", "insert_arrow", "command"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._left is not None and is_write(name, args):
                if self._left == 0:
                    raise _Crash()
                self._left -= 1
            return attr(*args, **kwargs)

        return call


def _drive(client: Any, db: str, schedule: list[tuple[int, int | None, int]]) -> None:
    """Consume LOG into db. Each step = (batch size, crash after N inserts or None, stale):
    `stale` > 0 redelivers that many already-done records in front of the batch to a
    restarted consumer (a stale committed offset), which must change nothing."""
    steps = iter(schedule)
    proc: BatchProcessor | None = None
    while True:
        positions = ClickHouseSink(client, db).positions("t")
        pending = [
            (p, positions.get(p, Resume(0)))
            for p in sorted(LOG)
            if positions.get(p, Resume(0)).offset < len(LOG[p])
        ]
        if not pending:
            return
        size, crash, stale = next(steps, (50, None, 0))
        partition, resume = pending[size % len(pending)]
        recs = LOG[partition]
        start = resume.offset
        if resume.redo_last is not None:
            last = resume.redo_last
        else:
            last = min(resume.offset + size, len(recs)) - 1
            if stale:
                start, proc = max(0, start - stale), None
        sink = ClickHouseSink(_Flaky(client, crash), db)
        if proc is None:
            proc = BatchProcessor(sink)
        proc.sink = sink
        try:
            batch = proc.prepare("t", partition, recs[start : last + 1])
            assert batch is not None
            assert batch.first == resume.offset  # redelivered records were dropped
            asyncio.run(proc.commit(batch))
        except ReadModelWriteFailed as exc:
            if not isinstance(exc.__cause__, _Crash):
                raise
            proc = None  # the process died: its in-memory state is gone


def _reference(client: Any, dbs: list[str]) -> dict[str, Any]:
    db = new_db_name("ref")
    dbs.append(db)
    migrate(client, db)
    _drive(client, db, [(50, None, 0)] * 4)
    return digest(client, db)


_REF: dict[str, Any] = {}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    schedule=st.lists(
        st.tuples(st.integers(1, 7), st.one_of(st.none(), st.integers(0, 9)), st.integers(0, 3)),
        min_size=1,
        max_size=12,
    )
)
def test_crashes_redeliveries_and_resends_never_change_the_read_models(
    chdb_client: Any, scratch_dbs: list[str], schedule: list[tuple[int, int | None]]
) -> None:
    if not _REF:
        _REF.update(_reference(chdb_client, scratch_dbs))
    db = new_db_name("hyp")
    scratch_dbs.append(db)
    migrate(chdb_client, db)
    _drive(chdb_client, db, schedule)
    got = digest(chdb_client, db)
    assert got == _REF
    current_documents_agree(chdb_client, db)  # a crashed batch's documents too
    for table in APPEND_ONLY:  # plain reads (no FINAL) see no duplicate either
        assert got[table]["raw_count"] == got[table]["count"], table
    chdb_client.command(f"DROP DATABASE {db} SYNC")


def test_reference_content(chdb_client: Any, scratch_dbs: list[str]) -> None:
    ref = _reference(chdb_client, scratch_dbs)
    db = scratch_dbs[-1]
    q = chdb_client.query
    assert current_documents_agree(chdb_client, db) == 2  # r1 and r2: each new in a batch
    assert ref["metric_points"]["count"] == 100 + 50 + 50 + 50 + 50
    assert (
        q(f"SELECT sum(count) FROM {db}.metric_summary WHERE key = 'loss'").result_rows[0][0] == 200
    )
    owners = q(f"SELECT DISTINCT experiment_id FROM {db}.metric_summary WHERE run_id = 'r1'")
    assert owners.result_rows == [("exp-1",)]
    assert ref["events"]["count"] == len(LOG[0]) - 1 + len(LOG[1]) - 1  # resend, poison
    assert sorted(r[0] for r in q(f"SELECT reason FROM {db}.rejected_events").result_rows) == [
        "artifact_exists",
        "experiment_name_taken",
        "param_conflict",
    ]
    assert q(f"SELECT name, status FROM {db}.runs FINAL ORDER BY run_id").result_rows == [
        ("one", "FINISHED"),
        ("two-b", "RUNNING"),
    ]
    assert q(
        f"SELECT experiment_id, name, deleted FROM {db}.experiments FINAL ORDER BY experiment_id"
    ).result_rows == [("e2", "exp2", 0), ("e3", "exp2", 0)]
    # run_search: one merged row per run, under the run's experiment (the rank that named
    # another experiment included), equal to the tables it summarises
    rows = q(
        "SELECT experiment_id, run_id, tupleElement(run, 'name'), tupleElement(run, 'status'),"
        " params, mapApply((k, v) -> (k, tupleElement(v, 'value')), tags), m_count,"
        f" mapKeys(m_last) FROM {db}.run_search FINAL ORDER BY run_id"
    ).result_rows
    assert rows == [
        ("exp-1", "r1", "one", "FINISHED", {"lr": "0.1", "bs": "2"}, {"t": "1"},
         {series_key("loss", "train"): 200, series_key("acc", "train"): 50},
         [series_key("acc", "train"), series_key("loss", "train")]),
        ("e2", "r2", "two-b", "RUNNING", {"x": "1"}, {}, {series_key("acc", "val"): 50},
         [series_key("acc", "val")]),
    ]  # fmt: skip


def test_a_worker_goes_on_when_a_pending_batch_left_the_log(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """A crash left batch 0-3 at its intent; retention then deleted those records before the
    partition was picked up again, so the consumer, sought to 0, gets 4 onwards. The worker
    projects 4 onwards and resumes after them (an empty redo batch crashed it on every
    restart)."""
    db = new_db_name("gone")
    scratch_dbs.append(db)
    migrate(chdb_client, db)
    recs = LOG[0]
    ClickHouseSink(chdb_client, db).mark_intent("t", 0, 0, 3)
    worker = ProjectionWorker(chdb_client, bootstrap="unused", database=db, topic="t")
    assert ClickHouseSink(chdb_client, db).positions("t") == {0: Resume(0, 3)}
    worker._assigned = {0}
    worker.next_offsets[0] = 0  # where `_seek_assigned` puts a pending intent
    worker._redo[0] = 3
    msgs = [
        ConsumerRecord("t", 0, r.offset, r.timestamp, 0, r.key, r.value, None, 0, 0, [])
        for r in recs[4:]
    ]
    done = asyncio.run(worker._process_all(None, 0, msgs))  # type: ignore[arg-type]
    assert done == len(recs) - 4
    assert ClickHouseSink(chdb_client, db).positions("t") == {0: Resume(len(recs))}
    offsets = chdb_client.query(f"SELECT log_offset FROM {db}.events ORDER BY 1").result_rows
    assert [o for (o,) in offsets] == [r.offset for r in recs[4:]]


class _FaustConsumer:
    """What the faust projector asks of faust's consumer: the assignment, a seek, the log
    start of a partition."""

    def __init__(self, earliest: int = 0) -> None:
        self.earliest = earliest
        self.seeks: list[int] = []
        self._read_offset: dict[Any, Any] = {}
        self._committed_offset: dict[Any, Any] = {}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", 0)}

    async def seek_wait(self, offsets: dict[Any, int]) -> None:
        self.seeks += list(offsets.values())

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return {tp: self.earliest for tp in tps}


def _faust_projector(client: Any, db: str, earliest: int) -> tuple[FaustProjector, _FaustConsumer]:
    """A faust projector over `db` whose app is a stand-in (generation 1, no rebalance)
    around a `_FaustConsumer` whose log starts at `earliest`."""
    p = FaustProjector(client, bootstrap="unused:9092", database=db, topic="t")
    consumer = _FaustConsumer(earliest=earliest)
    p.app = SimpleNamespace(  # type: ignore[assignment]
        rebalancing_count=0,
        consumer_generation_id=1,
        should_stop=False,
        rebalancing=False,
        consumer=consumer,
    )
    return p, consumer


def _faust_events(recs: list[SourceEvent]) -> list[Any]:
    return [
        SimpleNamespace(
            message=SimpleNamespace(
                topic="t",
                partition=0,
                offset=r.offset,
                timestamp=r.timestamp / 1000,
                key=r.key,
                value=r.value,
                generation_id=1,
            )
        )
        for r in recs
    ]


@pytest.mark.parametrize("earliest", [0, 5])
def test_the_faust_agent_never_projects_past_records_it_was_not_given(
    chdb_client: Any, scratch_dbs: list[str], earliest: int
) -> None:
    """A stale faust worker's batch 0-7 is refused (another worker wrote 0-4) and re-sought
    to 5; records 8-10, fetched before the seek, still come out of faust's stream buffer.
    They must not be projected ahead of 5-7 (which were then lost for good): they are
    dropped and the partition re-sought, and 5-10 are projected once they come. When the
    log itself starts at 8 now (retention), 8 onwards go on."""
    db = new_db_name("fgap")
    scratch_dbs.append(db)
    migrate(chdb_client, db)
    recs = LOG[0][:11]
    owner = BatchProcessor(ClickHouseSink(chdb_client, db))
    batch = owner.prepare("t", 0, recs[:5])
    assert batch is not None
    asyncio.run(owner.commit(batch))
    p, consumer = _faust_projector(chdb_client, db, earliest=8 if earliest else 0)
    p.next_offsets[0] = 0  # the stale worker's view
    p.processor.done[0] = 0
    asyncio.run(p._handle(_faust_events(recs[0:8])))  # refused: re-sought to 5
    assert p.next_offsets[0] == 5
    asyncio.run(p._handle(_faust_events(recs[8:11])))  # fetched before the seek
    if earliest:
        assert p.next_offsets[0] == 11  # the log starts at 8: nothing before it to wait for
        return
    assert p.next_offsets[0] == 5
    asyncio.run(p._handle(_faust_events(recs[5:11])))  # what the seek fetches
    assert ClickHouseSink(chdb_client, db).positions("t") == {0: Resume(11)}
    clean = new_db_name("fclean")
    scratch_dbs.append(clean)
    migrate(chdb_client, clean)
    alone = BatchProcessor(ClickHouseSink(chdb_client, clean))
    once = alone.prepare("t", 0, recs)
    assert once is not None
    asyncio.run(alone.commit(once))
    assert digest(chdb_client, db) == digest(chdb_client, clean)  # each record once


def test_the_faust_agent_goes_on_past_a_pending_batch_whose_head_left_the_log(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """A crash left batch 0-3 at its intent, and retention deleted offsets 0-1: the agent
    gets 2-3, cannot redo the batch with its bounds, skips them, and goes on from 4 without
    taking 4 for a hole (it re-sought back to the intent, for ever)."""
    db = new_db_name("fredo")
    scratch_dbs.append(db)
    migrate(chdb_client, db)
    recs = LOG[0][:8]
    ClickHouseSink(chdb_client, db).mark_intent("t", 0, 0, 3)
    p, consumer = _faust_projector(chdb_client, db, earliest=2)
    p.next_offsets[0] = 0  # where the seek to a pending intent puts it
    p._redo[0] = 3
    asyncio.run(p._handle(_faust_events(recs[2:4])))
    asyncio.run(p._handle(_faust_events(recs[4:8])))
    assert consumer.seeks == []
    assert p.next_offsets[0] == 8
    assert ClickHouseSink(chdb_client, db).positions("t") == {0: Resume(8)}


def test_a_zombie_worker_cannot_write_over_the_new_owner(chdb_client: Any, read_db: str) -> None:
    """Worker A prepared a batch, then stalled past its session timeout; B took the partition
    over and wrote part of the same offsets with other batch bounds. A's late commit must be
    refused (PartitionTaken) and write nothing: no doubled summary, no stray position."""
    recs = LOG[0]
    zombie = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    stale = zombie.prepare("t", 0, recs)
    assert stale is not None
    owner = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    head = owner.prepare("t", 0, recs[:4])
    assert head is not None
    asyncio.run(owner.commit(head))
    before = digest(chdb_client, read_db)
    with pytest.raises(PartitionTaken, match="another worker"):
        asyncio.run(zombie.commit(stale))
    assert digest(chdb_client, read_db) == before
    tail = owner.prepare("t", 0, recs)
    assert tail is not None
    assert tail.first == 4
    asyncio.run(owner.commit(tail))
    clean = new_db_name("clean")
    migrate(chdb_client, clean)
    try:
        alone = BatchProcessor(ClickHouseSink(chdb_client, clean))
        once = alone.prepare("t", 0, recs)
        assert once is not None
        asyncio.run(alone.commit(once))
        mine, theirs = digest(chdb_client, read_db), digest(chdb_client, clean)
        assert {t: v for t, v in mine.items() if t != "projection_position"} == {
            t: v for t, v in theirs.items() if t != "projection_position"
        }
    finally:
        chdb_client.command(f"DROP DATABASE IF EXISTS {clean} SYNC")


def test_a_worker_frozen_after_its_ownership_check_is_fenced_when_it_wakes(
    chdb_client: Any, read_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's ownership query found the partition free; the worker froze (GC, SIGSTOP)
    before it used the answer, past its session timeout, and the new owner wrote the same
    offsets meanwhile. Waking, it must check again, not trust the old answer as a fresh
    lease: its batch is refused and writes nothing."""
    recs = LOG[0]
    now = [1000.0]
    monkeypatch.setattr(pipeline_module.time, "monotonic", lambda: now[0])
    sink = ClickHouseSink(chdb_client, read_db)
    zombie = BatchProcessor(sink, lease_s=1.0)
    stale = zombie.prepare("t", 0, recs[:4])
    assert stale is not None
    owner = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    asked = sink.check_owner

    def check_then_freeze(*args: Any) -> None:
        asked(*args)  # nobody else wrote: the partition is ours
        monkeypatch.setattr(sink, "check_owner", asked)
        now[0] += 30.0  # frozen past the session timeout; the new owner takes over
        batch = owner.prepare("t", 0, recs)
        assert batch is not None
        asyncio.run(owner.commit(batch))

    monkeypatch.setattr(sink, "check_owner", check_then_freeze)
    before: dict[str, Any] = {}

    def intent(*args: Any) -> None:
        before.update(digest(chdb_client, read_db))
        ClickHouseSink.mark_intent(sink, *args)

    monkeypatch.setattr(sink, "mark_intent", intent)
    with pytest.raises(PartitionTaken, match="another worker"):
        asyncio.run(zombie.commit(stale))
    assert before  # the refusal came after the freeze
    assert digest(chdb_client, read_db) == before


class _CountingSink(ClickHouseSink):
    """Counts the ownership checks."""

    checks = 0

    def check_owner(self, topic: str, partition: int, first: int, last: int) -> None:
        self.checks += 1
        super().check_owner(topic, partition, first, last)


def test_batches_of_a_partition_share_one_ownership_check_per_lease(
    chdb_client: Any, read_db: str
) -> None:
    """Back-to-back batches of one partition trust one ownership check for `lease_s` (a
    query each time is a tenth of a small batch's cost); a gap longer than the lease, or
    the partition forgotten (revoked, re-sought), checks again. Listeners hear each batch."""
    recs = LOG[0]
    sink = _CountingSink(chdb_client, read_db)
    proc = BatchProcessor(sink, lease_s=60.0)
    heard: list[int] = []
    proc.on_done.append(lambda: heard.append(proc.done[0]))

    def commit(start: int, stop: int) -> None:
        batch = proc.prepare("t", 0, recs[start:stop])
        assert batch is not None
        asyncio.run(proc.commit(batch))

    commit(0, 3)
    commit(3, 6)
    assert sink.checks == 1
    proc.forget(0)
    commit(6, 9)
    assert sink.checks == 2
    proc.lease_s = 0.0
    commit(9, len(recs))
    assert sink.checks > 2
    assert heard == [3, 6, 9, len(recs)]


def test_records_delivered_twice_in_one_batch_are_projected_once(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """Records fetched on both sides of a consumer seek come twice in one batch, at the same
    offsets. Projected twice, their points would be counted twice by metric_summary and
    run_search (metric_points collapses them, hiding it); each must be projected once."""
    recs = LOG[0]
    twice, once = new_db_name("twice"), new_db_name("once")
    for db, batch in ((twice, recs[:6] + recs[1:]), (once, recs)):
        scratch_dbs.append(db)
        migrate(chdb_client, db)
        proc = BatchProcessor(ClickHouseSink(chdb_client, db))
        prepared = proc.prepare("t", 0, batch)
        assert prepared is not None
        assert [r.offset for r in prepared.records] == [r.offset for r in recs]
        asyncio.run(proc.commit(prepared))
    assert digest(chdb_client, twice) == digest(chdb_client, once)
    assert summary_mismatches(chdb_client, twice) == []
    assert rollup_mismatches(chdb_client, twice) == []


def test_summary_mismatches_lists_series_whose_summary_disagrees_with_their_points(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """`--verify`'s check for read models projected before the fix of duplicated offsets: a
    summary row written twice (as that bug did) shows up with both counts; none otherwise."""
    _reference(chdb_client, scratch_dbs)
    db = scratch_dbs[-1]
    assert summary_mismatches(chdb_client, db) == []
    run_id, key, split, n = chdb_client.query(
        f"SELECT run_id, key, split, sum(count) FROM {db}.metric_summary"
        " GROUP BY run_id, key, split ORDER BY run_id, key, split LIMIT 1"
    ).result_rows[0]
    chdb_client.command(
        f"INSERT INTO {db}.metric_summary SELECT * FROM {db}.metric_summary"
        " WHERE run_id = {r:String} AND key = {k:String} AND split = {s:String}",
        parameters={"r": run_id, "k": key, "s": split},
        settings={"insert_deduplicate": 0},
    )
    assert summary_mismatches(chdb_client, db) == [
        {"run_id": run_id, "key": key, "split": split, "summary_count": 2 * n, "points": n}
    ]


def test_rollup_mismatches_lists_levels_whose_rollup_disagrees_with_their_points(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """`--verify`'s check of `metric_rollup`: none in projected read models; a level that
    lost a block shows up with both counts."""
    _reference(chdb_client, scratch_dbs)
    db = scratch_dbs[-1]
    assert chdb_client.query(f"SELECT count() FROM {db}.metric_rollup").result_rows[0][0] > 0
    assert rollup_mismatches(chdb_client, db) == []
    run_id, key, split, n, lost = chdb_client.query(
        f"SELECT run_id, key, split, sum(count), any(count) FROM {db}.metric_rollup"
        " WHERE level = 1 GROUP BY run_id, key, split ORDER BY run_id, key, split LIMIT 1"
    ).result_rows[0]
    chdb_client.command(
        f"DELETE FROM {db}.metric_rollup WHERE run_id = {{r:String}} AND key = {{k:String}}"
        " AND split = {s:String} AND level = 1 AND count = {c:UInt64}",
        parameters={"r": run_id, "k": key, "s": split, "c": lost},
    )
    got = rollup_mismatches(chdb_client, db)
    assert [(g["run_id"], g["key"], g["split"], g["level"], g["points"]) for g in got] == [
        (run_id, key, split, 1, n)
    ]
    assert got[0]["rollup_count"] < n


def test_a_batch_touching_thousands_of_runs_stays_under_the_query_size_limit(
    chdb_client: Any, read_db: str
) -> None:
    """The state load binds the batch's run ids into IN lists: 6,000 runs with long ids
    (~400 KB of ids) must not exceed ClickHouse's 256 KiB query limit (the batch would fail
    and be retried forever, stalling the partition)."""
    w = Writer()
    runs = [f"bulk-run-{i:06d}-" + "x" * 48 for i in range(6000)]
    items = [("RunCreated", w.record("RunCreated", r, name=r[:20])) for r in runs]
    proc = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    batch = proc.prepare("t", 0, source(items))
    assert batch is not None
    asyncio.run(proc.commit(batch))
    got = chdb_client.query(f"SELECT count() FROM {read_db}.runs FINAL").result_rows[0][0]
    assert got == len(runs)


def test_run_search_backfill_equals_the_projection(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """A database migrated before run_search existed gets it filled by migration 0002 from
    the tables it summarises, equal to what the projection writes; running the migration's
    statements again (a crash before it was recorded) adds nothing."""
    _reference(chdb_client, scratch_dbs)
    src = scratch_dbs[-1]
    db = new_db_name("backfill")
    scratch_dbs.append(db)
    first, second = migrations()[:2]
    assert second.name == "0002_run_search.sql"
    chdb_client.command(f"CREATE DATABASE {db}")
    for stmt in first.statements(db):
        chdb_client.command(stmt)
    for table in ("runs", "params", "tags", "metric_summary"):
        chdb_client.command(f"INSERT INTO {db}.{table} SELECT * FROM {src}.{table}")
    for _ in range(2):
        for stmt in second.statements(db):
            chdb_client.command(stmt)
        got = digest(chdb_client, db, only={"run_search"})
        assert got == digest(chdb_client, src, only={"run_search"})


def test_metric_rollup_backfill_equals_the_projection(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """A database migrated before metric_rollup existed gets it filled by migration 0005
    from its points, equal to what the projection writes; running the migration's
    statements again (a crash before it was recorded) adds nothing."""
    _reference(chdb_client, scratch_dbs)
    src = scratch_dbs[-1]
    # and a series over several blocks of every level (negative steps too)
    w = Writer()
    spread = np.arange(-20_000, 30_000, 7, dtype=np.int64)
    proc = BatchProcessor(ClickHouseSink(chdb_client, src))
    batch = proc.prepare("wide", 0, source([("MetricsLogged", w.metrics("wide", spread, ["x"]))]))
    assert batch is not None
    asyncio.run(proc.commit(batch))
    db = new_db_name("rollup")
    scratch_dbs.append(db)
    before, rollup = migrations()[:4], migrations()[4]
    assert rollup.name == "0005_metric_rollup.sql"
    chdb_client.command(f"CREATE DATABASE {db}")
    for mig in before:
        for stmt in mig.statements(db):
            chdb_client.command(stmt)
    chdb_client.command(f"INSERT INTO {db}.metric_points SELECT * FROM {src}.metric_points")
    want = digest(chdb_client, src)["metric_rollup"]
    assert want["count"] > 0
    for _ in range(2):
        for stmt in rollup.statements(db):
            chdb_client.command(stmt)
        assert digest(chdb_client, db)["metric_rollup"] == want
    assert rollup_mismatches(chdb_client, db) == []


def test_compact_search_leaves_one_part_and_the_same_rows(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    _reference(chdb_client, scratch_dbs)
    db = scratch_dbs[-1]
    rows = f"SELECT * FROM {db}.run_search FINAL ORDER BY project, experiment_id, run_id"
    parts = (
        "SELECT count() FROM system.parts WHERE database = %(db)s"
        " AND table = 'run_search' AND active"
    )
    before = chdb_client.query(rows).result_rows
    assert before
    ClickHouseSink(chdb_client, db).compact_search()
    assert chdb_client.query(parts, parameters={"db": db}).result_rows[0][0] == 1
    assert chdb_client.query(rows).result_rows == before
    ClickHouseSink(chdb_client, db).compact_search()  # one part already: nothing to do
    assert chdb_client.query(rows).result_rows == before


def test_point_codecs_apply_to_old_parts_when_merged_and_keep_every_point(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """Migration 0004 (Delta codecs of metric_points' step and idx) on a database that
    already holds points: metadata only, the points read back the same, and the parts
    merged afterwards store step and idx in a fraction of the space."""
    db = new_db_name("codecs")
    scratch_dbs.append(db)
    # every migration but 0004 (the sink writes every table)
    older = [m for m in migrations() if m.version != 4]
    codecs = migrations()[3]
    assert codecs.name == "0004_point_codecs.sql"
    chdb_client.command(f"CREATE DATABASE {db}")
    for m in older:
        for stmt in m.statements(db):
            chdb_client.command(stmt)
    # wide parts (one file per column) even when small, so each column's size is known
    chdb_client.command(
        f"ALTER TABLE {db}.metric_points MODIFY SETTING min_bytes_for_wide_part = 0"
    )
    w = Writer()
    steps = np.arange(50_000, dtype=np.int64)
    items = [("MetricsLogged", w.metrics("r1", steps, ["loss", "acc"], seed=s)) for s in range(2)]
    proc = BatchProcessor(ClickHouseSink(chdb_client, db))
    batch = proc.prepare("t", 0, source(items))
    assert batch is not None
    asyncio.run(proc.commit(batch))

    def sizes() -> dict[str, int]:
        rows = chdb_client.query(
            "SELECT column, sum(column_data_compressed_bytes) FROM system.parts_columns"
            " WHERE database = %(db)s AND table = 'metric_points' AND active"
            " AND column IN ('step', 'idx') GROUP BY column",
            parameters={"db": db},
        ).result_rows
        return {c: int(n) for c, n in rows}

    before, plain = digest(chdb_client, db)["metric_points"], sizes()
    for _ in range(2):  # a crash before it was recorded runs it again
        for stmt in codecs.statements(db):
            chdb_client.command(stmt)
    chdb_client.command(f"OPTIMIZE TABLE {db}.metric_points FINAL")
    assert digest(chdb_client, db)["metric_points"] == before
    assert before["count"] == 200_000
    delta = sizes()
    for column in ("step", "idx"):
        assert delta[column] * 4 < plain[column], (column, plain, delta)


def test_a_large_batch_still_finds_resent_events_of_runs_stored_before(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """A batch of more than 1,000 events looks up stored events only for runs that have
    some (most of a bulk load's runs are new): a client's resend of an event stored by an
    earlier batch, inside such a batch, is still a duplicate. The same log in small batches
    (every event looked up) gives the same read models."""
    w = Writer()
    first = [
        ("RunCreated", w.record("RunCreated", "old", name="old")),
        ("MetricsLogged", w.metrics("old", np.arange(5), ["loss"])),
    ]
    new_runs = [f"new-{i:04d}" for i in range(1200)]
    second = [("RunCreated", w.record("RunCreated", r, name=r)) for r in new_runs]
    second[600:600] = first  # resent by the client, later in the log
    records = source(first + second)
    dbs = {"large": new_db_name("large"), "small": new_db_name("small")}
    dups = {}
    for name, db in dbs.items():
        scratch_dbs.append(db)
        migrate(chdb_client, db)
        proc = BatchProcessor(ClickHouseSink(chdb_client, db))
        size = len(second) if name == "large" else 100
        dups[name] = 0
        for batch in [records[:2]] + [records[i : i + size] for i in range(2, len(records), size)]:
            prepared = proc.prepare("t", 0, batch)
            assert prepared is not None
            dups[name] += prepared.projected.progress.duplicates
            asyncio.run(proc.commit(prepared))
    assert dups == {"large": 2, "small": 2}
    assert digest(chdb_client, dbs["large"]) == digest(chdb_client, dbs["small"])
    summary = chdb_client.query(
        f"SELECT sum(count) FROM {dbs['large']}.metric_summary WHERE run_id = 'old'"
    ).result_rows[0][0]
    assert summary == 5


def _position_rows(client: Any, db: str) -> dict[int, list[tuple[int, int, int]]]:
    """Partition -> its position rows (first, last offset, state), merged (FINAL)."""
    out: dict[int, list[tuple[int, int, int]]] = {}
    for p, first, last, state in client.query(
        f"SELECT log_partition, first_offset, last_offset, state FROM {db}.projection_position"
        " FINAL WHERE topic = 't' ORDER BY log_partition, first_offset"
    ).result_rows:
        out.setdefault(int(p), []).append((int(first), int(last), int(state)))
    return out


def test_pruning_positions_keeps_the_resume_points_the_fence_and_the_projected_offsets(
    chdb_client: Any, read_db: str
) -> None:
    """`prune_positions` drops the rows of a partition holding more than `above` that end
    before its newest done batch; what readers use stays: each partition's resume point
    (a pending intent included), the projected offset the consistency wait reads, the
    fence that refuses a zombie's late batch, and every read model."""
    sink = ClickHouseSink(chdb_client, read_db)
    zombie = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    stale = zombie.prepare("t", 0, LOG[0][:3])
    assert stale is not None
    proc = BatchProcessor(sink)
    for part, size in ((0, 2), (1, 4)):
        recs = LOG[part]
        for start in range(0, len(recs), size):
            batch = proc.prepare("t", part, recs[start : start + size])
            assert batch is not None
            asyncio.run(proc.commit(batch))
    end1 = len(LOG[1])
    sink.mark_intent("t", 1, end1, end1 + 4)  # a batch of partition 1 in flight
    before = _position_rows(chdb_client, read_db)
    assert len(before[0]) == 6
    assert len(before[1]) == 4
    resume = sink.positions("t")
    models = {t: v for t, v in digest(chdb_client, read_db).items() if t != "projection_position"}
    projected = (
        f"SELECT log_partition, max(last_offset) FROM {read_db}.projection_position FINAL"
        " WHERE topic = 't' AND state = 1 GROUP BY log_partition ORDER BY log_partition"
    )
    offsets = chdb_client.query(projected).result_rows

    assert sink.prune_positions("t", above=1_000) == 0  # no partition holds that many
    assert _position_rows(chdb_client, read_db) == before
    dropped = sink.prune_positions("t", above=3)
    after = _position_rows(chdb_client, read_db)
    assert after == {0: before[0][-1:], 1: before[1][-2:]}
    assert dropped >= 5 + 2  # older rows: 5 of partition 0, 2 of 1 (unmerged intents too)
    assert sink.positions("t") == resume
    assert chdb_client.query(projected).result_rows == offsets
    assert {
        t: v for t, v in digest(chdb_client, read_db).items() if t != "projection_position"
    } == models
    assert sink.prune_positions("t", above=0) == 0  # nothing older left
    with pytest.raises(PartitionTaken, match="another worker"):
        asyncio.run(zombie.commit(stale))
    fresh = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    assert fresh.prepare("t", 0, LOG[0]) is None  # resumes after the last batch: all done


class _Reads:
    """A client that records the read-model tables its SELECTs read (FROM {db}.<table>;
    the position table aside; "events?" for the existence query)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.tables: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.lstrip().startswith("SELECT"):
            names = [p.split()[0].split(".")[1] for p in sql.split(" FROM ")[1:] if "." in p]
            if sql.startswith("SELECT DISTINCT run_id FROM"):
                names = ["events?"]  # the existence query
            self.tables.extend(n for n in names if n != "projection_position")
        return self._client.query(sql, *args, **kwargs)


def test_a_new_runs_state_is_not_read_and_a_stored_ones_is_after_a_restart(
    chdb_client: Any, read_db: str
) -> None:
    """A batch's runs with no event stored have no state stored: one existence query on
    `events` stands for the event-id lookup and the run, producer and param reads (an MLflow
    create_run's batch: 1 query instead of 5). A run the cache knows needs no existence
    query. After a restart (empty cache) a stored run is found and read again: a resent
    event is a duplicate, and its params conflict with what is stored."""
    w = Writer()
    created = w.record("RunCreated", "r1", name="one", params={"lr": "0.1"})
    log = source(
        [
            ("RunCreated", created),
            ("MetricsLogged", w.metrics("r1", np.arange(3), ["loss"])),
            ("MetricsLogged", w.metrics("r1", np.arange(3, 6), ["loss"])),
            ("RunCreated", created),  # the client's resend
            ("ParamsLogged", w.record("ParamsLogged", "r1", params={"lr": "0.2"})),
        ]
    )
    reads = _Reads(chdb_client)
    proc = BatchProcessor(ClickHouseSink(reads, read_db))

    def prepare(p: BatchProcessor, start: int, stop: int) -> Any:
        reads.tables.clear()
        batch = p.prepare("t", 0, log[start:stop])
        assert batch is not None
        return batch

    new = prepare(proc, 0, 2)
    assert reads.tables == ["events?"]  # existence only: no event lookup, no state read
    asyncio.run(proc.commit(new))
    known = prepare(proc, 2, 3)
    assert reads.tables == ["events"]  # the event lookup only: the cache knows r1
    asyncio.run(proc.commit(known))
    restarted = BatchProcessor(ClickHouseSink(reads, read_db))
    again = prepare(restarted, 3, 5)
    assert reads.tables[:2] == ["events?", "events"]  # exists, then its events looked up
    assert {"run_versions", "params"} <= set(reads.tables)
    assert again.projected.progress.duplicates == 1
    asyncio.run(restarted.commit(again))
    params = chdb_client.query(
        f"SELECT key, value FROM {read_db}.params FINAL WHERE run_id = 'r1'"
    ).result_rows
    rejected = chdb_client.query(
        f"SELECT count() FROM {read_db}.rejected_events WHERE run_id = 'r1'"
    ).result_rows[0][0]
    assert params == [("lr", "0.1")]
    assert rejected == 1  # lr cannot change: known only from the stored state


class _Counted:
    """A client whose inserts are counted, slowed by `delay_s`, or fail while `fail` > 0."""

    def __init__(self, client: Any, delay_s: float = 0.0) -> None:
        self._client, self.delay_s = client, delay_s
        self.inserts = 0
        self.fail = 0
        self.tables: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay_s)
        if self.fail > 0:
            self.fail -= 1
            raise _Crash()
        self.inserts += 1
        self.tables.append(str(args[0]).split(".")[-1])
        return self._client.insert_arrow(*args, **kwargs)


def _side_by_side(
    chdb_client: Any, stack: Any, scratch_dbs: list[str]
) -> tuple[_Counted, _Counted, dict[str, str]]:
    """The main client, one more (slowed by 50 ms an insert) on the same chDB, and two
    migrated databases: "one" for a single client, "side" for both."""
    import clickhouse_connect

    other = _Counted(clickhouse_connect.get_client(dsn=f"chdb://{stack.chdb_dir}"), 0.05)
    dbs = {"one": new_db_name("one"), "side": new_db_name("side")}
    for db in dbs.values():
        scratch_dbs.append(db)
        migrate(chdb_client, db)
    return _Counted(chdb_client), other, dbs


def test_a_small_batch_inserted_side_by_side_writes_what_one_client_writes(
    chdb_client: Any, stack: Any, scratch_dbs: list[str]
) -> None:
    """With `writers`, a small batch's inserts run on several clients at once: the read
    models equal those of one client inserting table after table. A failed insert fails
    the batch only once the other clients' inserts ended (no insert of a batch outlives its
    failure into its redo), and the redo, same tokens, is exact."""
    main, other, dbs = _side_by_side(chdb_client, stack, scratch_dbs)
    one = BatchProcessor(ClickHouseSink(chdb_client, dbs["one"]))
    side = BatchProcessor(ClickHouseSink(main, dbs["side"], writers=(other,)))
    for part, recs in LOG.items():
        for start in range(0, len(recs), 3):
            for proc in (one, side):
                batch = proc.prepare("t", part, recs[start : start + 3])
                assert batch is not None
                if proc is side and start == 3:
                    main.fail = 1  # the main client's first insert of this batch fails
                    before = other.inserts
                    t = time.monotonic()
                    with pytest.raises(ReadModelWriteFailed):
                        asyncio.run(proc.commit(batch))
                    assert other.inserts > before  # its share ran to its end meanwhile
                    assert time.monotonic() - t >= 0.05
                    proc.forget(part)
                    batch = proc.prepare("t", part, recs[start : start + 3])
                    assert batch is not None
                asyncio.run(proc.commit(batch))
    assert other.inserts > 0  # the other client took its share
    assert main.inserts > 0
    assert digest(chdb_client, dbs["side"]) == digest(chdb_client, dbs["one"])


def test_a_large_batch_inserts_its_largest_table_beside_the_others(
    chdb_client: Any, stack: Any, scratch_dbs: list[str]
) -> None:
    """A batch of more than PARALLEL_INSERT_ROWS rows shares its inserts out by rows: its
    points go alone on one client, its other tables on the other, and the read models
    equal one client's. A failed insert fails the batch once the other client's share
    ended; the redo is exact."""
    main, other, dbs = _side_by_side(chdb_client, stack, scratch_dbs)
    w = Writer()
    n = 10 * PARALLEL_INSERT_ROWS  # a catch-up batch: its points outweigh the rest
    points = schemas.pack_points(
        "loss", np.linspace(1.0, 0.0, n), np.arange(n, dtype=np.int64), timestamps=w.clock
    )
    log = source(
        [
            ("RunCreated", w.record("RunCreated", "big", name="big", params={"lr": "0.1"})),
            ("MetricsLogged", w.record("MetricsLogged", "big", **points)),
            ("TagsSet", w.record("TagsSet", "big", tags={"team": "a"})),
            ("RunStatusChanged", w.record("RunStatusChanged", "big", status="FINISHED")),
        ]
    )
    one = BatchProcessor(ClickHouseSink(chdb_client, dbs["one"]))
    batch = one.prepare("t", 0, log)
    assert batch is not None
    asyncio.run(one.commit(batch))

    side = BatchProcessor(ClickHouseSink(main, dbs["side"], writers=(other,)))
    batch = side.prepare("t", 0, log)
    assert batch is not None
    main.fail = 1  # the points insert fails at once; the other share is slow
    with pytest.raises(ReadModelWriteFailed):
        asyncio.run(side.commit(batch))
    others = set(other.tables)  # what the other share had inserted when the batch failed
    assert {"metric_rollup", "runs", "events", "run_search"} <= others  # all of it
    assert len(other.tables) == other.inserts >= 8
    assert "metric_points" not in others
    assert main.tables == []
    asyncio.run(side.commit(batch))  # the redo, same tokens
    assert main.tables == ["metric_points"]
    assert set(other.tables[len(others) :]) == others
    assert digest(chdb_client, dbs["side"]) == digest(chdb_client, dbs["one"])


def test_migration_0007_shows_runs_the_old_run_state_hid(
    chdb_client: Any, scratch_dbs: list[str]
) -> None:
    """A run created at offset 0 and unchanged since, written with the old `run_state`
    (version * 2 + deleted = 0), gets a run state searches see; other runs keep theirs."""
    db = new_db_name("rs0")
    scratch_dbs.append(db)
    *before, last = migrations()
    assert last.name == "0007_run_state_at_offset_0.sql"
    chdb_client.command(f"CREATE DATABASE {db}")
    for mig in before:
        for stmt in mig.statements(db):
            chdb_client.command(stmt)
    w = Writer()
    log = source(
        [
            ("RunCreated", w.record("RunCreated", "first", name="first")),
            ("RunCreated", w.record("RunCreated", "later", name="later")),
        ]
    )
    proc = BatchProcessor(ClickHouseSink(chdb_client, db))
    batch = proc.prepare("t", 0, log)
    assert batch is not None
    rows = batch.projected.rows
    ids = rows.column("run_search", "run_id")
    versions = [r["version"] for r in rows.column("run_search", "run")]
    rows.column("run_search", "run_state")[:] = [v * 2 for v in versions]  # the old scale
    asyncio.run(proc.commit(batch))

    def states() -> dict[str, tuple[int, int]]:
        got = chdb_client.query(
            f"SELECT run_id, run_state, touches FROM {db}.run_search FINAL"
        ).result_rows
        return {r: (int(s), int(t)) for r, s, t in got}

    assert dict(zip(ids, versions)) == {"first": 0, "later": 1}
    assert states() == {"first": (0, 1), "later": (2, 1)}
    for _ in range(2):  # run again (a crash before it was recorded): nothing more
        for stmt in last.statements(db):
            chdb_client.command(stmt)
        assert states() == {"first": (2, 2), "later": (2, 1)}
