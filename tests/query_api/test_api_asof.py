"""GET /api/v1/runs/{run_id}/as-of: the run's state at an event time or a log position,
over hand-written history rows (`run_versions`, `events`, `params`, `metric_points`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.query_api.readmodels import T0, ReadModels, ts
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack

PARTITION = 2


def _insert(models: ReadModels, table: str, row: dict[str, Any]) -> None:
    models.client.insert(f"{models.db}.{table}", [list(row.values())], column_names=list(row))


def _version(models: ReadModels, offset: int, at: int, **state: Any) -> None:
    row = {
        "project": "default",
        "experiment_id": "1",
        "run_id": "r",
        "name": state.get("name", "first"),
        "notes": state.get("notes", ""),
        "status": state.get("status", "RUNNING"),
        "status_reason": "",
        "start_time": ts(T0),
        "end_time": None if state.get("end") is None else ts(state["end"]),
        "deleted": state.get("deleted", 0),
        "parent_run_id": None,
        "fork_step": None,
        "cloned_from_run_id": None,
        "created_at": ts(T0),
        "updated_at": ts(at),
        "created_event_id": "ev-10",
        "event_id": f"ev-{offset}",
        "version": offset,
    }
    _insert(models, "run_versions", row)


def _event(
    models: ReadModels,
    offset: int,
    at: int,
    event_type: str,
    payload: dict[str, Any],
    *,
    producer: str = "p1",
    seq: int = 0,
) -> None:
    row = {
        "project": "default",
        "experiment_id": "1",
        "run_id": "r",
        "event_id": f"ev-{offset}",
        "event_type": event_type,
        "producer_id": producer,
        "seq": seq,
        "occurred_at": ts(at),
        "log_partition": PARTITION,
        "log_offset": offset,
        "log_time": ts(at),
        "payload": json.dumps(payload),
    }
    _insert(models, "events", row)


def _points(
    models: ReadModels, producer: str, seq: int, points: list[tuple[int, float]], key: str = "loss"
) -> None:
    for idx, (step, value) in enumerate(points):
        row = {
            "run_id": "r",
            "key": key,
            "split": "",
            "step": step,
            "epoch": -1,
            "timestamp": ts(T0 + 1000 * step),
            "value": value,
            "producer_id": producer,
            "seq": seq,
            "idx": idx,
        }
        _insert(models, "metric_points", row)


def _param(models: ReadModels, key: str, value: str, offset: int, at: int) -> None:
    row = {
        "project": "default",
        "experiment_id": "1",
        "run_id": "r",
        "key": key,
        "value": value,
        "occurred_at": ts(at),
        "event_id": f"ev-{offset}",
        "log_offset": offset,
    }
    _insert(models, "params", row)


@pytest.fixture
def history(models: ReadModels) -> ReadModels:
    """Run `r` (partition 2), offsets 10..20, times T0 .. T0+6000."""
    models.run("r", name="final", status="FINISHED", end=T0 + 6000)  # current state
    _version(models, 10, T0, name="first", notes="hello")
    _event(models, 10, T0, "RunCreated", {"tags": {"team": "a", "old": "x"}, "params": {}})
    _param(models, "lr", "0.1", 10, T0)
    _version(models, 11, T0 + 1000, name="second", notes="hello")
    _event(models, 11, T0 + 1000, "RunRenamed", {"name": "second"})
    _event(models, 12, T0 + 1500, "MetricsLogged", {"count": 2}, seq=1)
    _points(models, "p1", 1, [(0, 1.0), (1, 0.5)])
    _event(models, 13, T0 + 2000, "TagsSet", {"tags": {"team": "b"}})
    _event(models, 14, T0 + 3000, "TagsRemoved", {"keys": ["old"]})
    _event(models, 15, T0 + 3000, "AttributesLogged", {"attributes": {"gpu": '"a100"'}})
    # two ranks log step 2: the later log offset is the last value
    _event(models, 16, T0 + 4000, "MetricsLogged", {"count": 2}, seq=2)
    _points(models, "p1", 2, [(2, 0.25), (3, float("nan"))])
    _event(models, 17, T0 + 4000, "MetricsLogged", {"count": 1}, producer="p2", seq=1)
    _points(models, "p2", 1, [(2, 0.75)])
    _param(models, "bs", "64", 18, T0 + 4500)
    _version(models, 20, T0 + 6000, name="final", notes="hello", status="FINISHED", end=T0 + 6000)
    _event(models, 20, T0 + 6000, "RunStatusChanged", {"status": "FINISHED"})
    return models


def _as_of(api: TestClient, **params: Any) -> Any:
    resp = api.get("/api/v1/runs/r/as-of", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["run"]


def test_state_at_creation(api: TestClient, history: ReadModels) -> None:
    run = _as_of(api, time=T0)
    assert (run["name"], run["status"], run["notes"]) == ("first", "RUNNING", "hello")
    assert run["lifecycle_stage"] == "active"
    assert run["end_time"] is None
    assert run["params"] == {"lr": "0.1"}
    assert run["tags"] == {"old": "x", "team": "a"}
    assert run["attributes"] == {}
    assert run["metrics"] == []
    assert run["as_of"] == {"time": T0, "version": 10, "updated_at": T0}


def test_state_mid_run_by_time(api: TestClient, history: ReadModels) -> None:
    run = _as_of(api, time=T0 + 2500)
    assert run["name"] == "second"
    assert run["tags"] == {"old": "x", "team": "b"}
    assert run["attributes"] == {}
    [loss] = run["metrics"]
    assert (loss["key"], loss["count"], loss["last"], loss["last_step"]) == ("loss", 2, 0.5, 1)
    assert (loss["min"], loss["max"], loss["avg"]) == (0.5, 1.0, 0.75)


def test_state_after_every_event(api: TestClient, history: ReadModels) -> None:
    run = _as_of(api, time=T0 + 4000)
    assert run["status"] == "RUNNING"
    assert run["tags"] == {"team": "b"}
    assert run["attributes"] == {"gpu": "a100"}
    assert run["params"] == {"lr": "0.1"}
    [loss] = run["metrics"]
    assert loss["count"] == 5  # NaN counted, ignored by min / max / sum
    assert (loss["min"], loss["max"]) == (0.25, 1.0)
    assert loss["avg"] == pytest.approx((1.0 + 0.5 + 0.25 + 0.75) / 5)
    assert (loss["last_step"], loss["max_step"]) == (3, 3)
    assert loss["last"] == "NaN"
    final = _as_of(api, time=T0 + 7000)
    assert (final["status"], final["end_time"]) == ("FINISHED", T0 + 6000)
    assert final["params"] == {"bs": "64", "lr": "0.1"}


def test_iso_times(api: TestClient, history: ReadModels) -> None:
    iso = dt.datetime.fromtimestamp((T0 + 1000) / 1000, dt.timezone.utc)
    assert _as_of(api, time=iso.isoformat())["name"] == "second"
    naive = iso.replace(tzinfo=None).isoformat()  # no offset: UTC
    assert _as_of(api, time=naive)["name"] == "second"
    zulu = iso.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert _as_of(api, time=zulu)["as_of"]["time"] == T0 + 1000


def test_state_by_offset(api: TestClient, history: ReadModels) -> None:
    run = _as_of(api, offset=f"{PARTITION}:16")
    assert run["name"] == "second"
    assert run["as_of"]["version"] == 11
    [loss] = run["metrics"]
    assert loss["count"] == 4
    assert (loss["last"], loss["last_step"]) == ("NaN", 3)
    # at 17 the second rank's point at step 2 is in too
    assert _as_of(api, offset="17")["metrics"][0]["count"] == 5
    before_attr = _as_of(api, offset="14")
    assert before_attr["tags"] == {"team": "b"}
    assert before_attr["attributes"] == {}


def test_two_ranks_at_the_last_step(api: TestClient, history: ReadModels) -> None:
    # only step 2 of both ranks: equal step and timestamp, the later log offset wins
    _event(history, 21, T0 + 7000, "MetricsLogged", {"count": 1}, producer="p1", seq=3)
    _points(history, "p1", 3, [(2, 0.4)], key="acc")
    _event(history, 22, T0 + 7000, "MetricsLogged", {"count": 1}, producer="p2", seq=2)
    _points(history, "p2", 2, [(2, 0.6)], key="acc")
    acc = {m["key"]: m for m in _as_of(api, offset="22")["metrics"]}["acc"]
    assert (acc["count"], acc["last"]) == (2, 0.6)
    acc = {m["key"]: m for m in _as_of(api, offset="21")["metrics"]}["acc"]
    assert (acc["count"], acc["last"]) == (1, 0.4)


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"time": "yesterday"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"time": "2026-13-01"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"time": "99999999999999999999"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"offset": "a:b"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"offset": "-1"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"offset": "1:15"}, 400, "INVALID_PARAMETER_VALUE"),  # the run is in partition 2
        ({}, 400, "INVALID_PARAMETER_VALUE"),
        ({"time": str(T0), "offset": "15"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"time": str(T0 - 1)}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ({"offset": "9"}, 404, "RESOURCE_DOES_NOT_EXIST"),
    ],
)
def test_errors(
    api: TestClient, history: ReadModels, params: dict[str, str], status: int, code: str
) -> None:
    resp = api.get("/api/v1/runs/r/as-of", params=params)
    assert resp.status_code == status, resp.text
    assert resp.json()["error_code"] == code
    assert resp.json()["message"]


def test_unknown_run(api: TestClient, history: ReadModels) -> None:
    resp = api.get("/api/v1/runs/nope/as-of", params={"time": T0 + 10_000})
    assert resp.status_code == 404
    assert resp.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "Run with id=nope not found",
    }
    before = api.get("/api/v1/runs/r/as-of", params={"time": T0 - 1}).json()
    assert "did not exist" in before["message"]
