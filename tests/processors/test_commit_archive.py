"""A batch's commit writes the read models and the archive's segment side by side, and is
done only once both are: a failure of either leaves the batch undone (its intent pending),
and the retried commit writes it exactly once.

Real chDB through `BatchProcessor`; the archive is a recording stand-in (this is the
commit's orchestration; `test_worker_stack` archives to the real S3).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

import schemas
from processors.digest import digest
from processors.errors import ArchiveWriteFailed
from processors.migrate import migrate
from processors.model import SourceEvent
from processors.pipeline import BatchProcessor
from processors.sink import ClickHouseSink, Resume
from tests.processors.conftest import new_db_name
from tests.processors.factory import Writer, source

pytestmark = pytest.mark.stack


class Archive:
    """Records the segments put; `fail` raises in `put` that many times; `wait_for`: an
    event `put` waits on (at most 5 s), `delay`: seconds it takes, before it stores."""

    def __init__(
        self, fail: int = 0, wait_for: threading.Event | None = None, delay: float = 0.0
    ) -> None:
        self.fail = fail
        self.delay = delay
        self.wait_for = wait_for
        self.waited: bool | None = None
        self.segments: list[tuple[int, int, int]] = []

    def put(self, topic: str, partition: int, records: Sequence[SourceEvent]) -> str:
        if self.wait_for is not None:
            self.waited = self.wait_for.wait(5.0)
        time.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise ArchiveWriteFailed("s3://bucket/segment: refused")
        self.segments.append((partition, records[0].offset, records[-1].offset))
        return f"{topic}/{partition}/{records[0].offset}-{records[-1].offset}"


class Sink(ClickHouseSink):
    """A sink whose `write` signals when it starts and takes at least `delay` s."""

    def __init__(self, *args: Any, delay: float = 0.0) -> None:
        super().__init__(*args)
        self.delay = delay
        self.started = threading.Event()
        self.finished = threading.Event()

    def write(self, *args: Any, **kwargs: Any) -> float:
        self.started.set()
        time.sleep(self.delay)
        try:
            return super().write(*args, **kwargs)
        finally:
            self.finished.set()


def _log() -> list[SourceEvent]:
    w = Writer()
    points = schemas.pack_points(
        "loss",
        np.linspace(1.0, 0.1, 50),
        np.arange(50, dtype=np.int64),
        timestamps=w.clock,
    )
    return source(
        [
            ("RunCreated", w.record("RunCreated", "r1", name="r1", params={"lr": "0.1"})),
            ("MetricsLogged", w.record("MetricsLogged", "r1", **points)),
            ("RunStatusChanged", w.record("RunStatusChanged", "r1", status="FINISHED")),
        ]
    ) + [SourceEvent("t", 0, 3, 1_700_000_000_003, b"r1", b"not an event")]  # poison


def test_the_archive_segment_is_written_beside_the_read_models(
    chdb_client: Any, read_db: str
) -> None:
    sink = Sink(chdb_client, read_db)
    archive = Archive(wait_for=sink.started)  # stores only once the inserts have started
    proc = BatchProcessor(sink, archive=archive)  # type: ignore[arg-type]
    log = _log()
    batch = proc.prepare("t", 0, log)
    assert batch is not None
    asyncio.run(proc.commit(batch))
    assert archive.waited is True  # one after the other, `put` would have waited in vain
    assert archive.segments == [(0, log[0].offset, log[-1].offset)]
    assert sink.positions("t") == {0: Resume(log[-1].offset + 1)}


@pytest.mark.parametrize("failing", ["archive", "sink", "both"])
def test_a_failed_half_leaves_the_batch_undone_and_the_retry_writes_it_once(
    chdb_client: Any, read_db: str, scratch_dbs: list[str], failing: str
) -> None:
    log = _log()
    reference = new_db_name("ref")
    scratch_dbs.append(reference)
    migrate(chdb_client, reference)
    once = BatchProcessor(ClickHouseSink(chdb_client, reference), archive=Archive())  # type: ignore[arg-type]
    batch = once.prepare("t", 0, log)
    assert batch is not None
    asyncio.run(once.commit(batch))

    # the archive fails at once while the inserts are slow, the inserts fail at once while
    # the archive is slow, or both fail
    sink = Sink(chdb_client, read_db, delay=0.3 if failing == "archive" else 0.0)
    archive = Archive(delay=0.3) if failing == "sink" else Archive(fail=1)
    sent: list[int] = []

    async def dlq(poison: Sequence[Any]) -> None:
        sent.append(len(poison))

    proc = BatchProcessor(sink, archive=archive, dlq=dlq)  # type: ignore[arg-type]
    batch = proc.prepare("t", 0, log)
    assert batch is not None
    if failing != "archive":
        broken = sink.write

        def refuse(*args: Any, **kwargs: Any) -> float:
            sink.write = broken  # type: ignore[method-assign]
            raise RuntimeError("ClickHouse refused the insert")

        sink.write = refuse  # type: ignore[method-assign]
    expected = ArchiveWriteFailed if failing == "archive" else RuntimeError  # the sink's first

    async def attempt() -> bool:
        with pytest.raises(expected):
            await proc.commit(batch)
        # at once, before the event loop shuts down (and waits for its threads)
        if failing == "archive":
            return sink.finished.is_set()
        return len(archive.segments) == (1 if failing == "sink" else 0)

    # the commit raised only after the other half was over: a retry never runs beside it
    assert asyncio.run(attempt()) is True
    assert sink.positions("t") == {0: Resume(log[0].offset, log[-1].offset)}  # intent only
    assert proc.done[0] == log[0].offset  # not advanced
    assert sent == []  # the poison goes to the DLQ once the batch is written

    asyncio.run(proc.commit(batch))  # the retry
    assert sink.positions("t") == {0: Resume(log[-1].offset + 1)}
    assert sent == [1]
    assert archive.segments[-1] == (0, log[0].offset, log[-1].offset)
    assert digest(chdb_client, read_db) == digest(chdb_client, reference)
