"""The experiment checks of MLflow writes, held for a while (`writer.CheckedExperiments`):
the hold's rules with a stand-in clock, then a live API (Kafka, the projection worker, chDB)
where this process's own writes end a hold at once and another writer's within the TTL."""

from __future__ import annotations

import asyncio
import functools
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from query_api.errors import QueryApiError
from query_api.eventlog import KafkaEventLog
from query_api.settings import Settings
from query_api.writer import CheckedExperiments
from schemas import Envelope, ExperimentDeleted, encode, new_event_id, partition_key
from tests.query_api.live import live_api

EXP = {"experiment_id": "e1", "lifecycle_stage": "active"}


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_check_is_held_for_its_ttl_with_the_marks_it_was_read_with() -> None:
    clock = _Clock()
    held = CheckedExperiments(2.0, clock=clock)
    assert held.get("k", {}) is None
    held.put("k", {0: 5}, EXP)
    got = held.get("k", {0: 5})
    assert got == EXP
    got["lifecycle_stage"] = "deleted"  # a copy: the caller cannot change what is held
    clock.now += 1.9
    assert held.get("k", {0: 5}) == EXP
    clock.now += 0.1
    assert held.get("k", {0: 5}) is None  # expired, and dropped
    assert len(held) == 0


def test_a_write_of_this_process_since_the_read_ends_the_hold() -> None:
    held = CheckedExperiments(60.0, clock=_Clock())
    held.put("k", {}, EXP)
    assert held.get("k", {3: 7}) is None
    assert held.get("k", {}) is None  # dropped on the mismatch
    held.put("k", {3: 7}, EXP)
    assert held.get("k", {3: 8}) is None


def test_ttl_zero_holds_nothing_and_the_oldest_entry_leaves_first() -> None:
    off = CheckedExperiments(0.0, clock=_Clock())
    off.put("k", {}, EXP)
    assert off.get("k", {}) is None
    lru = CheckedExperiments(60.0, capacity=2, clock=_Clock())
    lru.put("a", {}, EXP)
    lru.put("b", {}, EXP)
    assert lru.get("a", {}) == EXP  # "a" used: "b" is now the oldest
    lru.put("c", {}, EXP)
    assert lru.get("b", {}) is None
    assert lru.get("a", {}) == EXP
    assert lru.get("c", {}) == EXP


@pytest.mark.parametrize("ttl", [-1.0, math.nan])
def test_a_bad_ttl_is_refused(ttl: float) -> None:
    with pytest.raises(QueryApiError, match="experiment_check_ttl_s"):
        Settings(experiment_check_ttl_s=ttl)


TTL_S = 5.0


@pytest.fixture
def live(
    connection: Any,
    chdb_client: Any,
    ch_database: str,
    kafka_topic: str,
    chdb_writers: tuple[Any, ...],
) -> Callable[..., Any]:
    """`live_api` over this test's database and topic; API settings as keywords."""
    return functools.partial(
        live_api, connection, chdb_client, ch_database, kafka_topic, chdb_writers
    )


@pytest.mark.stack
def test_run_creates_check_the_experiment_through_the_hold(
    live: Callable[..., Any], connection: Any, kafka_topic: str
) -> None:
    with (
        live(settings={"experiment_check_ttl_s": TTL_S}) as app,
        httpx.Client(base_url=f"{app.url}/api/2.0/mlflow", timeout=60) as api,
    ):
        held = app.app.state.shared.checked_experiments
        eid = api.post("/experiments/create", json={"name": "held"}).json()["experiment_id"]

        def create_run(name: str) -> httpx.Response:
            return api.post("/runs/create", json={"experiment_id": eid, "run_name": name})

        assert create_run("r0").status_code == 200
        assert len(held) == 1
        # this process deletes the experiment: the next create waits for it and refuses
        assert api.post("/experiments/delete", json={"experiment_id": eid}).status_code == 200
        refused = create_run("r1")
        assert refused.status_code == 400
        assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "active" in refused.json()["message"]
        assert api.post("/experiments/restore", json={"experiment_id": eid}).status_code == 200
        assert create_run("r2").status_code == 200
        read_at = time.monotonic()  # the check of r2 read the restored experiment

        # another writer deletes it (straight to Kafka: no mark of this process moves)
        env = Envelope(
            event_id=new_event_id(),
            experiment_id=eid,
            producer_id=f"other-{uuid.uuid4().hex[:6]}",
            seq=0,
            occurred_at=int(time.time() * 1000),
            project="default",
        )
        asyncio.run(
            _produce(connection.kafka_bootstrap, kafka_topic, ExperimentDeleted(envelope=env))
        )
        deadline = time.monotonic() + 30
        while (
            api.get("/experiments/get", params={"experiment_id": eid}).json()["experiment"][
                "lifecycle_stage"
            ]
            != "deleted"
        ):
            assert time.monotonic() < deadline, "the other writer's delete was not projected"
            time.sleep(0.05)
        assert time.monotonic() - read_at < TTL_S, "projection slower than the hold"
        # within the hold the checks still see it active (at most TTL_S behind the read model)
        assert create_run("r3").status_code == 200
        time.sleep(max(0.0, read_at + TTL_S - time.monotonic()))
        late = create_run("r4")
        assert late.status_code == 400
        assert late.json()["error_code"] == "INVALID_PARAMETER_VALUE"


@pytest.mark.stack
def test_update_answers_a_run_created_here_with_the_changes_written_here(
    live: Callable[..., Any],
) -> None:
    with (
        live() as app,
        httpx.Client(base_url=f"{app.url}/api/2.0/mlflow", timeout=60) as api,
    ):
        eid = api.post("/experiments/create", json={"name": "upd"}).json()["experiment_id"]
        run = api.post("/runs/create", json={"experiment_id": eid, "run_name": "first"}).json()
        rid = run["run"]["info"]["run_id"]
        renamed = api.post("/runs/update", json={"run_id": rid, "run_name": "second"}).json()
        assert renamed["run_info"]["run_name"] == "second"
        assert renamed["run_info"]["status"] == "RUNNING"
        done = api.post(
            "/runs/update", json={"run_id": rid, "status": "FINISHED", "end_time": 1234}
        ).json()["run_info"]
        assert (done["run_name"], done["status"], done["end_time"]) == ("second", "FINISHED", 1234)
        assert done["experiment_id"] == eid
        # and the read model agrees once projected
        got = api.get("/runs/get", params={"run_id": rid}).json()["run"]["info"]
        assert (got["run_name"], got["status"], got["end_time"]) == ("second", "FINISHED", 1234)


async def _produce(bootstrap: str, topic: str, event: Any) -> None:
    log = KafkaEventLog(bootstrap, topic)
    try:
        await log.send([(partition_key(event), encode(event))])
    finally:
        await log.close()


@pytest.mark.stack
def test_experiment_writes_name_their_experiment_and_check_the_name_they_write(
    live: Callable[..., Any], connection: Any, kafka_topic: str
) -> None:
    """An experiment write without an experiment id is a 400 (it acted on the Default
    experiment); a rename is checked as it is written: stripped, unique, at most 250
    characters (a padded copy of a taken name was accepted, then dropped by the processors)."""
    with (
        live() as app,
        httpx.Client(base_url=f"{app.url}/api/2.0/mlflow", timeout=60) as api,
    ):
        taken = api.post("/experiments/create", json={"name": "taken"}).json()["experiment_id"]
        eid = api.post("/experiments/create", json={"name": "mine"}).json()["experiment_id"]
        assert taken != eid
        for path, body in (
            ("/experiments/delete", {}),
            ("/experiments/restore", {"experiment_id": ""}),
            ("/experiments/update", {"new_name": "x"}),
            ("/experiments/set-experiment-tag", {"key": "k", "value": "v"}),
        ):
            r = api.post(path, json=body)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
            assert "experiment_id" in r.json()["message"]
        clash = api.post("/experiments/update", json={"experiment_id": eid, "new_name": " taken "})
        assert clash.status_code == 400, clash.text
        assert clash.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
        long = api.post("/experiments/update", json={"experiment_id": eid, "new_name": "n" * 251})
        assert long.status_code == 400, long.text
        ok = api.post("/experiments/update", json={"experiment_id": eid, "new_name": " renamed "})
        assert ok.status_code == 200, ok.text
        got = api.get("/experiments/get", params={"experiment_id": eid}).json()["experiment"]
        assert got["name"] == "renamed"
        assert (
            api.get("/experiments/get", params={"experiment_id": taken}).json()["experiment"][
                "lifecycle_stage"
            ]
            == "active"
        )
