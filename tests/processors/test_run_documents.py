"""A new run's search document (`run_page`, migration 0003) is written by the batch that
writes its first `run_search` row, and reads back as exactly what `run_search` holds.

Real chDB: the batch goes through `BatchProcessor` (the loader decides which runs are new),
the API searches the database it wrote.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

import schemas
from processors.pipeline import BatchProcessor
from processors.sink import ClickHouseSink
from query_api.app import create_app
from query_api.settings import Settings
from tests.processors.documents import documents, from_document, from_rows
from tests.processors.factory import Writer, source
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack

SEARCH = "/api/v1/runs/search"


def _points(
    w: Writer, run_id: str, key: str, values: list[float], split: str = "val"
) -> dict[str, Any]:
    packed = schemas.pack_points(
        key,
        np.array(values, dtype=np.float64),
        np.arange(len(values), dtype=np.int64),
        timestamps=w.clock,
        splits=split,
    )
    return w.record("MetricsLogged", run_id, **packed)


def _edge_log(w: Writer) -> list[tuple[str, dict[str, Any]]]:
    """Runs whose documents hold the values a document could spell differently from
    ClickHouse: non-finite and negative-zero floats, a sum of -0.0, deleted tags, nulls."""
    inf = math.inf
    return [
        ("RunCreated", w.record("RunCreated", "p", name="p", params={"x": "1"}, tags={"a": "1"})),
        ("MetricsLogged", _points(w, "p", "nan", [math.nan, math.nan])),
        ("MetricsLogged", _points(w, "p", "inf", [inf, -inf, 1.5])),
        ("MetricsLogged", _points(w, "p", "zero", [-0.0])),
        ("MetricsLogged", _points(w, "p", "ints", [3.0, 1e16, -2.0])),
        ("TagsSet", w.record("TagsSet", "p", tags={"b": 'é\u2028"x"'})),
        ("TagsRemoved", w.record("TagsRemoved", "p", keys=["a"])),
        ("RunNoteSet", w.record("RunNoteSet", "p", notes="line\nnext")),
        ("RunRenamed", w.record("RunRenamed", "p", name="p2")),
        ("RunStatusChanged", w.record("RunStatusChanged", "p", status="FINISHED")),
        (
            "RunCreated",
            w.record("RunCreated", "q", name="q", parent_run_id="p", fork_step=7, start_time=5),
        ),
        ("MetricsLogged", _points(w, "q", "loss", [0.25, 0.125])),
        ("RunDeleted", w.record("RunDeleted", "q")),
        ("MetricsLogged", _points(w, "orphan", "loss", [1.0])),  # no run state: no document
    ]


def _commit(proc: BatchProcessor, records: list[Any]) -> None:
    batch = proc.prepare("t", 0, records)
    assert batch is not None
    asyncio.run(proc.commit(batch))


def test_a_new_runs_document_is_written_with_its_rows_and_reads_as_run_search(
    chdb_client: Any, read_db: str
) -> None:
    w = Writer()
    log = source(_edge_log(w))
    proc = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    _commit(proc, log)
    docs = documents(chdb_client, read_db)
    keys = [("proj", "exp-1", "p"), ("proj", "exp-1", "q")]
    assert sorted(docs) == keys  # not the run without a run state
    assert list(proc.stale_pages) == [("proj", "exp-1", "orphan")]
    rows = from_rows(chdb_client, read_db, keys)
    made = {k: from_document(k, docs[k][0][1]) for k in keys}
    assert made == rows
    assert [rows[k]["name"] for k in keys] == ["p2", "q"]
    assert [rows[k]["lifecycle_stage"] for k in keys] == ["active", "deleted"]
    metrics = {m["key"]: m for m in rows[keys[0]]["metrics"]}
    assert [metrics["zero"][f] for f in ("last", "min", "avg")] == ["-0.0", "-0.0", "0.0"]
    assert [metrics["inf"][f] for f in ("min", "max", "avg")] == ["-inf", "inf", "nan"]
    # ClickHouse's own document of the same run (the processors' refresh) reads the same
    proc.sink.refresh_pages(keys)
    refreshed = documents(chdb_client, read_db)
    for k in keys:
        (ours, _), (theirs, doc) = sorted(refreshed[k])[-2:]
        assert ours == theirs == 1
        assert from_document(k, doc) == made[k]
    # a merge of the lone row changes nothing either
    proc.sink.compact_search()
    assert from_rows(chdb_client, read_db, keys) == rows


def test_a_run_with_rows_before_the_batch_gets_no_document_from_it(
    chdb_client: Any, read_db: str
) -> None:
    """The batch's row is not the run's whole row then: the run is left to the refresh."""
    w = Writer()
    log = source(
        [
            ("RunCreated", w.record("RunCreated", "r", name="r")),
            ("MetricsLogged", _points(w, "r", "loss", [1.0])),
            ("RunRenamed", w.record("RunRenamed", "r", name="r2")),
            ("MetricsLogged", _points(w, "r", "loss", [0.5])),
        ],
        start=10,
    )
    proc = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    _commit(proc, log[:2])
    assert not proc.stale_pages
    assert [t for t, _ in documents(chdb_client, read_db)[("proj", "exp-1", "r")]] == [1]
    _commit(proc, log[2:])
    assert list(proc.stale_pages) == [("proj", "exp-1", "r")]
    assert [t for t, _ in documents(chdb_client, read_db)[("proj", "exp-1", "r")]] == [1]
    restarted = BatchProcessor(ClickHouseSink(chdb_client, read_db))  # no cache: a lookup
    _commit(restarted, source([("RunNoteSet", w.record("RunNoteSet", "r", notes="n"))], start=14))
    assert [t for t, _ in documents(chdb_client, read_db)[("proj", "exp-1", "r")]] == [1]


def test_a_search_right_after_a_load_reads_documents_only(
    chdb_client: Any, read_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New runs are searched from their documents at once, byte for byte what their rows
    give (documents removed: every run read from `run_search`)."""
    from query_api.repository.runs import RunRepository

    w = Writer(project="default")  # the project an open API serves
    items = _edge_log(w)
    for i in range(30):
        run = f"n{i:02d}"
        items.append(("RunCreated", w.record("RunCreated", run, name=run, params={"i": str(i)})))
        items.append(("MetricsLogged", _points(w, run, "loss", [-0.0, 1.0 / (i + 1)], split="")))
    proc = BatchProcessor(ClickHouseSink(chdb_client, read_db))
    _commit(proc, source(items))
    stale: list[str] = []
    real = RunRepository._rows

    def spy(self: RunRepository, keys: Any, db: str) -> Any:
        stale.extend(k[2] for k in keys)
        return real(self, keys, db)

    monkeypatch.setattr(RunRepository, "_rows", spy)
    settings = Settings(database=read_db, search_cache_bytes=0)
    bodies = [
        {"experiment_ids": ["exp-1"]},
        {"experiment_ids": ["exp-1"], "order_by": ["metrics.loss"], "run_view_type": "ALL"},
        {"filter": "metrics.loss < 0.2", "order_by": ["params.i DESC"]},
    ]
    with TestClient(create_app(settings, lambda: chdb_client)) as api:
        from_docs = [api.post(SEARCH, json=b) for b in bodies]
        assert stale == []
        chdb_client.command(f"TRUNCATE TABLE {read_db}.run_page")
        from_rows = [api.post(SEARCH, json=b) for b in bodies]
    assert len(set(stale)) == 32
    assert [r.status_code for r in from_docs] == [200] * 3
    assert [len(r.json()["runs"]) for r in from_docs] == [31, 32, 25]
    assert [r.content for r in from_docs] == [r.content for r in from_rows]
