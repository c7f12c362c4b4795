"""Run behaviour without a broker (offline mode writes the spool only): steps, validation at
the call site, conflicts, batching order, statuses, roles, background-error surfacing,
bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import producers
from producers.engine import EngineOptions
from producers.errors import (
    BackgroundError,
    InvalidKey,
    InvalidType,
    NoActiveRun,
    ParamConflict,
    RunStateError,
)
from producers.spool import SpoolReader
from schemas import codec
from tests.producers.helpers import points


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    runs: list[producers.Run] = []

    def _start(**kw: Any) -> producers.Run:
        kw.setdefault("capture_code", False)
        kw.setdefault("capture_environment", False)
        run = producers.start_run(
            kw.pop("experiment", "offline"), mode="offline", spool_dir=str(tmp_path), **kw
        )
        runs.append(run)
        return run

    yield _start
    for r in runs:
        r.end()
    producers.shutdown(timeout=1.0)


def spooled(run: producers.Run) -> list[Any]:
    run.end()
    return [codec.decode(r.payload) for r in SpoolReader(run.engine.spool_dir).read(1 << 40)]


def names(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_steps_auto_increment_per_key_and_split(start: Any) -> None:
    run = start()
    for _ in range(3):
        run.log_metric("loss", 1.0)
    run.log_metric("loss", 1.0, step=10)
    run.log_metric("loss", 1.0)
    run.log_metric("loss", 1.0, split="val")
    run.log_metrics({"loss": 2.0, "acc": 0.5})
    got = sorted((k, sp, s) for (k, sp, s, _v) in points(spooled(run)).values())
    assert got == [
        ("acc", "", 0),
        ("loss", "", 0),
        ("loss", "", 1),
        ("loss", "", 2),
        ("loss", "", 10),
        ("loss", "", 11),
        ("loss", "", 12),
        ("loss", "val", 0),
    ]


def test_bad_input_raises_at_call_site_and_records_nothing(start: Any) -> None:
    run = start()
    with pytest.raises(InvalidKey, match="^key: "):
        run.log_metric("bad key!", 1.0)
    with pytest.raises(InvalidType, match="^value: "):
        run.log_metric("loss", "0.5")
    with pytest.raises(InvalidType, match="^step: "):
        run.log_metric("loss", 0.5, step=1.5)
    with pytest.raises(InvalidKey, match="^split: "):
        run.log_metric("loss", 0.5, split="val?")
    run.log_metric("loss", float("nan"))
    pts = points(spooled(run))
    assert len(pts) == 1


def test_log_metrics_is_all_or_nothing(start: Any) -> None:
    """A bad key or value anywhere in the mapping raises, naming it, and logs none of it."""
    run = start()
    with pytest.raises(InvalidKey, match=r"^metrics key 'bad key!': "):
        run.log_metrics({"loss": 0.5, "bad key!": 1.0})
    with pytest.raises(InvalidType, match=r"^metrics\['acc'\]: "):
        run.log_metrics({"loss": 0.5, "acc": "0.9"})
    with pytest.raises(InvalidType, match="^step: "):
        run.log_metrics({"loss": 0.5}, step=1.5)
    run.log_metrics({"loss": 0.25, "acc": 0.75})
    got = sorted((k, s, val) for (k, _sp, s, val) in points(spooled(run)).values())
    assert got == [("acc", 0, 0.75), ("loss", 0, 0.25)]


def test_param_conflict_detected_locally(start: Any) -> None:
    run = start(params={"lr": 0.1})
    run.log_param("lr", 0.1)  # same value: nothing new
    with pytest.raises(ParamConflict, match=r"params\['lr'\]"):
        run.log_param("lr", 0.2)
    run.log_params({"bs": 32})
    events = spooled(run)
    assert names(events).count("ParamsLogged") == 1
    assert next(e for e in events if names([e]) == ["RunCreated"]).params == {"lr": "0.1"}


def test_batches_keep_call_order_with_other_events(start: Any) -> None:
    run = start(options=EngineOptions(max_points_per_event=100, linger_s=60))
    for i in range(250):
        run.log_metric("loss", float(i))
    run.set_tag("phase", "eval")
    run.log_metric("acc", 1.0)
    events = spooled(run)
    tail = names(events)[names(events).index("RunStatusChanged") + 1 :]
    assert tail[:6] == ["MetricsLogged"] * 3 + ["TagsSet", "MetricsLogged", "ProducerExited"]
    assert [e.count for e in events if names([e]) == ["MetricsLogged"]] == [100, 100, 50, 1]
    seqs = [e.envelope.seq for e in events]
    assert seqs == list(range(len(seqs)))


@pytest.mark.parametrize(
    ("exc", "status"),
    [(None, "FINISHED"), (ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_context_manager_status(start: Any, exc: BaseException | None, status: str) -> None:
    run = start()
    try:
        with run:
            run.log_metric("loss", 1.0)
            if exc is not None:
                raise exc
    except (ValueError, KeyboardInterrupt):
        pass
    assert run.status == status
    events = spooled(run)
    changed = [e for e in events if names([e]) == ["RunStatusChanged"]]
    assert [e.status.value for e in changed] == ["RUNNING", status]
    exited = next(e for e in events if names([e]) == ["ProducerExited"])
    assert exited.status.value == status
    if status == "FAILED":
        assert exited.reason == "ValueError: boom"
    with pytest.raises(RunStateError):
        run.log_metric("loss", 1.0)
    assert run.end() is True  # second end is a no-op


def test_joining_rank_neither_creates_nor_owns(start: Any) -> None:
    run = start(run_id="shared-run", rank=1, world_size=4)
    assert not run.owner
    events = spooled(run)
    assert "RunCreated" not in names(events)
    assert "RunStatusChanged" not in names(events)
    joined = next(e for e in events if names([e]) == ["ProducerJoined"])
    assert (joined.rank, joined.world_size) == (1, 4)


def test_resume_owns_status_without_creating(start: Any) -> None:
    run = start(run_id="old-run", resume=True)
    events = spooled(run)
    assert "RunCreated" not in names(events)
    assert [e.reason for e in events if names([e]) == ["RunStatusChanged"]][0] == "resumed"


def test_env_rank_and_run_id_are_picked_up(start: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTREAM_RUN_ID", "from-env")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "8")
    run = start()
    assert (run.id, run.rank, run.world_size, run.owner) == ("from-env", 2, 8, False)
    monkeypatch.delenv("RANK")
    assert not start().owner, "an inherited run id without a rank joins"


def test_background_failure_surfaces_on_next_call(start: Any) -> None:
    run = start()

    class Broken:
        def encode(self) -> tuple[bytes, bytes]:
            raise RuntimeError("encoder exploded")

    with run.engine.lock:
        run.engine.add_pending(Broken())
    run.engine.seal()
    with pytest.raises(BackgroundError, match="encoder exploded") as info:
        run.log_metric("loss", 1.0)
    assert isinstance(info.value.__cause__, RuntimeError)
    run.log_metric("loss", 1.0)  # raised once, then logging goes on


def test_memory_stays_bounded_by_spilling(start: Any) -> None:
    run = start(
        options=EngineOptions(max_points_per_event=1000, max_buffer_points=5000, linger_s=60)
    )
    peak = 0
    for i in range(50_000):
        run.log_metric("loss", float(i))
        if i % 500 == 0:
            peak = max(peak, run.engine.pending_points)
    assert peak <= 5000
    assert len(points(spooled(run))) == 50_000


def test_fork_from_and_clone(start: Any) -> None:
    src = start(params={"lr": 0.1}, tags=["baseline"], notes="n")
    forked = start(fork_from=(src.id, 100))
    clone = src.clone(name="copy")
    created = {e.envelope.run_id: e for e in spooled(clone) if names([e]) == ["RunCreated"]}
    assert (created[forked.id].parent_run_id, created[forked.id].fork_step) == (src.id, 100)
    c = created[clone.id]
    assert (c.cloned_from_run_id, c.params, c.tags, c.description) == (
        src.id,
        {"lr": "0.1"},
        {"baseline": ""},
        "n",
    )


def test_module_helpers_act_on_active_run(start: Any) -> None:
    with pytest.raises(NoActiveRun):
        producers.log_metric("loss", 1.0)
    run = start()
    producers.log_metric("loss", 1.0)
    producers.log_params({"a": 1})
    producers.set_tag("t")
    producers.log_input("mnist", "v1", "sha256:abc")
    assert producers.active_run() is run
    events = spooled(run)
    assert producers.active_run() is None
    assert {"ParamsLogged", "TagsSet", "DatasetLinked"} <= set(names(events))


def test_console_capture(start: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run = start(capture_console=True)
    print("hello from training")  # noqa: T201
    events = spooled(run)
    console = [e for e in events if names([e]) == ["ConsoleLogged"]]
    assert any("hello from training" in e.text for e in console)
    assert console[0].stream.value == "STDOUT"
    assert console[0].offset == 0
    assert "hello from training" in capsys.readouterr().out


def test_public_api_is_pinned() -> None:
    assert set(producers.__all__) >= {
        "init",
        "start_run",
        "Run",
        "log_metric",
        "log_metrics",
        "log_param",
        "log_params",
        "log_attribute",
        "log_attributes",
        "set_tag",
        "set_tags",
        "remove_tag",
        "log_artifact",
        "log_image",
        "log_table",
        "log_input",
        "log_output",
        "alert_on",
        "flush",
        "end",
        "finish",
        "active_run",
        "ClientConfig",
        "EngineOptions",
    }
    for name in producers.__all__:
        assert hasattr(producers, name), name


def test_async_variant(tmp_path: Path) -> None:
    import asyncio

    from producers import aio

    async def main() -> list[Any]:
        async with await aio.start_run(
            "a",
            mode="offline",
            spool_dir=str(tmp_path),
            capture_code=False,
            capture_environment=False,
        ) as run:
            run.log_metric("loss", 1.0)
            assert await run.flush()
        return [codec.decode(r.payload) for r in SpoolReader(run.engine.spool_dir).read(1 << 40)]

    events = asyncio.run(main())
    assert names(events)[-1] == "RunStatusChanged"
    assert events[-1].status.value == "FINISHED"


def test_classification_metrics_validated(start: Any) -> None:
    run = start()
    with pytest.raises(producers.InvalidArgument, match="matrix"):
        run.log_classification_metrics(["a", "b"], [[1, 2]])
    with pytest.raises(producers.InvalidArgument, match="fpr"):
        run.log_classification_metrics(["a", "b"], [[1, 2], [3, 4]], [0.1], [0.2, 0.3])
    run.log_classification_metrics(
        ["cat", "dog"],
        [[9, 1], [1, 9]],
        [0.1, 0.5, 0.9],
        [0.1, 0.7, 0.9],
        [0.9, 0.5, 0.1],
        key="val/clf",
        step=3,
    )
    e = next(e for e in spooled(run) if names([e]) == ["ClassificationMetricsLogged"])
    assert (e.key, e.labels, e.confusion_matrix, e.step) == (
        "val/clf",
        ["cat", "dog"],
        [[9, 1], [1, 9]],
        3,
    )


def test_system_metrics_sampler(start: Any) -> None:
    import time

    run = start(system_metrics=0.1)
    time.sleep(0.45)
    got = points(spooled(run))
    system = {k for (k, sp, _s, _v) in got.values() if sp == "system"}
    assert {"cpu_percent", "memory_percent", "process_rss_mb"} <= system


def test_oversized_event_refused_at_call_site(start: Any) -> None:
    run = start()
    with pytest.raises(producers.ValueTooLong, match="AttributesLogged"):
        run.log_attributes({f"k{i}": "x" * 60_000 for i in range(20)})
    run.log_metric("loss", 1.0)
    events = spooled(run)
    seqs = [e.envelope.seq for e in events]
    assert seqs == list(range(len(seqs))), "the refused event left no seq gap"


def test_non_owner_can_end_the_run_explicitly(start: Any) -> None:
    run = start(run_id="shared-2", rank=3, world_size=4)
    run.end("FAILED", reason="rank 3 saw NaNs", run_status=True)
    changed = [e for e in spooled(run) if names([e]) == ["RunStatusChanged"]]
    assert [(e.status.value, e.reason) for e in changed] == [("FAILED", "rank 3 saw NaNs")]


def test_engine_close_from_many_threads_closes_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Threads ending at once (atexit, a signal handler, the main thread): one closes, the
    others wait for it and get its result; every point is in the spool exactly once."""
    import threading
    import time

    run = producers.start_run(
        "offline",
        mode="offline",
        spool_dir=str(tmp_path),
        capture_code=False,
        capture_environment=False,
    )
    for i in range(1000):
        run.log_metric("loss", float(i))
    engine = run.engine
    closes: list[int] = []
    writer_close = engine._writer.close

    def counted_close() -> None:
        closes.append(1)
        time.sleep(0.05)  # a slow close: the others arrive meanwhile
        writer_close()

    engine._writer.close = counted_close  # type: ignore[method-assign]
    results: list[bool] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(8)

    def close() -> None:
        gate.wait()
        try:
            results.append(engine.close(timeout=5))
        except BaseException as exc:  # noqa: BLE001 - the test reports any
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(closes) == 1  # the spool writer was closed once
    assert len(results) == 8
    assert len(set(results)) == 1
    got = points([codec.decode(r.payload) for r in SpoolReader(engine.spool_dir).read(1 << 40)])
    assert sorted(s for (_k, _sp, s, _v) in got.values()) == list(range(1000))
    capsys.readouterr()
    producers.shutdown(timeout=1.0)  # the run's engine is gone: reported once, then forgotten
    assert capsys.readouterr().err.count(f"ending run {run.id} failed") == 1
    assert producers.active_run() is None
    producers.shutdown(timeout=1.0)  # as atexit would: nothing left to end
    assert capsys.readouterr().err == ""
