"""POST /api/v1/analytics/{aggregate,parallel-coordinates}: numbers on a small hand-made
dataset, Arrow output, and the safe query model (bad bodies and injection attempts -> 400)."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pytest

from tests.query_api.readmodels import ReadModels
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack

ARROW = "application/vnd.apache.arrow.stream"
NAN = float("nan")


@pytest.fixture
def data(models: ReadModels) -> ReadModels:
    """val_loss@val of runs in experiment 1 (e: deleted; f: experiment 2)."""
    runs: dict[str, tuple[str, dict[str, str], list[float]]] = {
        "a": ("1", {"model": "cnn"}, [1.0, 0.8, 0.6]),
        "b": ("1", {"model": "mlp"}, [0.9, 0.7, 0.5]),
        "c": ("1", {"model": "cnn"}, [2.0, 1.0, 0.3]),
        "d": ("1", {}, [1.5, 1.2, 1.1]),
        "e": ("1", {"model": "cnn"}, [0.0, 0.0, 0.0]),
        "f": ("2", {"model": "cnn"}, [5.0, 5.0, 5.0]),
        "h": ("1", {"model": "mlp"}, [NAN, NAN, NAN]),
    }
    lrs = {"a": "0.1", "b": "0.1", "c": "0.01", "d": "0.01", "e": "0.1", "f": "0.1", "h": "0.1"}
    for run_id, (exp, tags, values) in runs.items():
        models.run(run_id, exp, name=f"run-{run_id}", deleted=int(run_id == "e"))
        models.params(run_id, {"lr": lrs[run_id]}, exp)
        models.tags(run_id, tags, exp)
        models.points(run_id, "val_loss", values, split="val", experiment_id=exp)
        models.points(run_id, "val_loss", [9.0], split="", experiment_id=exp)  # other split
    # a second rank of run a logs step 1 too: two points at one step
    models.points("a", "val_loss", [0.4], steps=[1], split="val", producer="p2")
    return models


def _agg(api: TestClient, **body: Any) -> list[dict[str, Any]]:
    body = {"experiment_ids": ["1"], "metric": "val_loss", "split": "val", **body}
    resp = api.post("/api/v1/analytics/aggregate", json=body)
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()["rows"]
    return rows


def test_at_step_averages_ranks_and_groups(api: TestClient, data: ReadModels) -> None:
    rows = _agg(
        api,
        at={"step": 1},
        group_by=["params.lr"],
        aggregates=["mean", "p50", "p90", "min", "max", "count"],
    )
    assert [r["group"] for r in rows] == [{"params.lr": "0.01"}, {"params.lr": "0.1"}]
    low, high = rows
    # lr=0.01: c=1.0, d=1.2
    assert low["count"] == 2
    assert low["mean"] == pytest.approx(1.1)
    assert (low["min"], low["max"]) == (1.0, 1.2)
    # lr=0.1: a = mean(0.8, 0.4) = 0.6 (two ranks), b = 0.7; h is NaN, e deleted, f elsewhere
    assert high["count"] == 2
    assert high["mean"] == pytest.approx(0.65)
    assert high["p50"] == pytest.approx(0.65)
    assert high["p90"] == pytest.approx(0.69)
    assert (high["min"], high["max"]) == pytest.approx((0.6, 0.7))


def test_last_by_two_keys_with_null_group(api: TestClient, data: ReadModels) -> None:
    rows = _agg(api, group_by=["params.lr", "tags.model"], aggregates=["mean", "count"])
    got = {(r["group"]["params.lr"], r["group"]["tags.model"]): r for r in rows}
    assert list(got) == [("0.01", "cnn"), ("0.01", None), ("0.1", "cnn"), ("0.1", "mlp")]
    assert got["0.01", "cnn"]["mean"] == pytest.approx(0.3)
    assert got["0.01", None]["mean"] == pytest.approx(1.1)
    assert got["0.1", "cnn"]["mean"] == pytest.approx(0.6)
    assert got["0.1", "mlp"] == {
        "group": {"params.lr": "0.1", "tags.model": "mlp"},
        "mean": 0.5,
        "count": 1,
    }


def test_min_max_epoch_and_filters(api: TestClient, data: ReadModels) -> None:
    [row] = _agg(api, at="min", filter="params.lr = '0.1'", aggregates=["mean", "count", "std"])
    assert row["group"] == {}
    assert (row["count"], row["mean"]) == (2, pytest.approx(0.45))  # a: 0.4, b: 0.5
    assert row["std"] == pytest.approx(math.sqrt(0.005))
    [row] = _agg(api, at="max", aggregates=["max", "sum"])
    assert (row["max"], row["sum"]) == (2.0, pytest.approx(1.0 + 0.9 + 2.0 + 1.5))
    # metric filter (latest value): b (0.5) and c (0.3)
    rows = _agg(api, filter="metrics.val_loss@val < 0.55", group_by=["run_name"])
    assert [(r["group"]["run_name"], r["mean"]) for r in rows] == [("run-b", 0.5), ("run-c", 0.3)]
    # the points of epoch 0 end at step 2
    by_epoch = _agg(api, at={"epoch": 0}, group_by=["params.lr"], aggregates=["mean"])
    by_step = _agg(api, at={"step": 2}, group_by=["params.lr"], aggregates=["mean"])
    assert by_epoch == by_step
    assert _agg(api, at={"epoch": 7}) == []
    assert _agg(api, metric="nope") == []
    every = _agg(api, experiment_ids=[], group_by=["experiment_id"], aggregates=["count"])
    assert [(r["group"]["experiment_id"], r["count"]) for r in every] == [("1", 4), ("2", 1)]


def test_aggregate_as_arrow(api: TestClient, data: ReadModels) -> None:
    body = {
        "experiment_ids": ["1"],
        "metric": "val_loss",
        "split": "val",
        "at": {"step": 1},
        "group_by": ["params.lr"],
        "aggregates": ["mean", "count"],
    }
    resp = api.post("/api/v1/analytics/aggregate", json=body, headers={"Accept": ARROW})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == ARROW
    table = pa.ipc.open_stream(resp.content).read_all()
    assert table.column_names == ["params.lr", "mean", "count"]
    assert table.column("params.lr").to_pylist() == ["0.01", "0.1"]
    assert table.column("mean").to_pylist() == pytest.approx([1.1, 0.65])
    assert table.column("count").to_pylist() == [2, 2]


def test_parallel_coordinates(api: TestClient, data: ReadModels) -> None:
    body: dict[str, Any] = {
        "experiment_ids": ["1"],
        "params": ["lr", "missing"],
        "metrics": [
            {"key": "val_loss", "split": "val", "agg": "last"},
            {"key": "val_loss", "split": "val", "agg": "min"},
            {"key": "val_loss"},
        ],
    }
    resp = api.post("/api/v1/analytics/parallel-coordinates", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["columns"] == [
        "run_id",
        "run_name",
        "params.lr",
        "params.missing",
        "metrics.val_loss@val.last",
        "metrics.val_loss@val.min",
        "metrics.val_loss.last",
    ]
    assert out["truncated"] is False
    rows = {r["run_id"]: r for r in out["rows"]}
    assert list(rows) == ["a", "b", "c", "d", "h"]
    assert rows["a"] == {
        "run_id": "a",
        "run_name": "run-a",
        "params.lr": "0.1",
        "params.missing": None,
        "metrics.val_loss@val.last": 0.6,
        "metrics.val_loss@val.min": 0.4,
        "metrics.val_loss.last": 9.0,
    }
    assert rows["h"]["metrics.val_loss@val.last"] == "NaN"
    arrow = api.post(
        "/api/v1/analytics/parallel-coordinates",
        json={**body, "max_runs": 2, "filter": "params.lr = '0.1'"},
        headers={"Accept": ARROW},
    )
    assert arrow.headers["x-runstream-truncated"] == "true"
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.column_names == out["columns"]
    assert table.column("run_id").to_pylist() == ["a", "b"]
    assert table.column("metrics.val_loss@val.min").to_pylist() == [0.4, 0.5]


INJECTIONS = [
    "params.lr') OR 1=1 --",
    "tags.model; DROP TABLE runs",
    "params.lr` FROM system.tables --",
    'tags."x"',
    "toString(1)",
    "metrics.val_loss",
    "params.",
    "params.lr\n",
    "status, name",
    "1",
]


@pytest.mark.parametrize("key", INJECTIONS)
def test_group_by_injection_is_400(api: TestClient, data: ReadModels, key: str) -> None:
    body = {"metric": "val_loss", "split": "val", "group_by": [key]}
    resp = api.post("/api/v1/analytics/aggregate", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert _agg(api, aggregates=["count"])[0]["count"] == 4  # nothing was touched


BAD_BODIES: list[Any] = [
    None,
    [],
    {},
    {"metric": ""},
    {"metric": "m", "at": "median"},
    {"metric": "m", "at": {"step": "x"}},
    {"metric": "m", "at": {"steps": 1}},
    {"metric": "m", "at": {"step": 1, "epoch": 1}},
    {"metric": "m", "at": {"step": 2**70}},
    {"metric": "m", "aggregates": ["avg"]},
    {"metric": "m", "aggregates": []},
    {"metric": "m", "aggregates": "mean"},
    {"metric": "m", "group_by": ["params.a", "params.a"]},
    {"metric": "m", "group_by": [f"params.k{i}" for i in range(9)]},
    {"metric": "m", "filter": "metrics.a >"},
    {"metric": "m", "filter": "params.lr = 1; DROP TABLE runs"},
    {"metric": "m", "sql": "SELECT 1"},
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_aggregate_bodies_are_400(api: TestClient, data: ReadModels, body: Any) -> None:
    resp = api.post("/api/v1/analytics/aggregate", json=body)
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"error_code", "message"}


@pytest.mark.parametrize(
    "body",
    [
        {"params": ["lr') --"]},
        {"params": ["lr", "lr"]},
        {"metrics": [{"key": "m", "agg": "avg"}]},
        {"metrics": [{"key": "m"}, {"key": "m"}]},
        {"max_runs": 0},
        {"filter": "nope = 1"},
    ],
)
def test_bad_parallel_coordinates_bodies_are_400(
    api: TestClient, data: ReadModels, body: Any
) -> None:
    resp = api.post("/api/v1/analytics/parallel-coordinates", json=body)
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"error_code", "message"}
